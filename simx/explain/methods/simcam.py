"""``simcam``: gradient-based similarity attention of Zheng et al., pair form at test time (methods.md 2.3).

For a retrieved pair (query x, neighbour y) with L2-normalised embeddings f_x = e(x)/||e(x)||, f_y = e(y)/||e(y)||
(always normalised, whatever the model's metric, so that every component lies in [-1, 1]):

    w    = clamp( 1 - |f_x - f_y|, min=0 )      (element-wise; the similar-pair form of 2.3 step 1)
    s_i  = w^T f_i                               (i = x or y; 2.3 step 2)
    alpha^i_k = (1/n) sum_u d s_i / d A_i[k, u]  (A_i = F(i), the explained layer)
    M_i(u)    = ReLU( sum_k alpha^i_k A_i[k, u] )    (2.3 step 3; ``relu=False`` keeps the signed map)

Decisions recorded in ``params`` (2.3 asks to state them):

* clamp: 1 - |f_x - f_y| lies in [-1, 1] for unit vectors; it is clamped at 0 (dimensions that disagree by more
  than 1 get weight 0 instead of a negative weight). No rescaling to [0, 1].
* ``stop_gradient=True`` (default, the recommendation of 2.3): w is a constant computed from the cached
  embeddings, so s_i = w^T f_i is the only thing differentiated. ``stop_gradient=False`` follows the third-party
  code and differentiates through w too (w depends on f_i via |f_x - f_y|; the other image's f is still fixed).
* The min-max normalisation of the third-party code is left to display (methods.md 1, rule 5): maps keep their scale.

Batching is the one of ``gradcam``: the neighbour side differentiates sum_k s_{y_k} w.r.t. the K neighbour feature
maps, the query side replicates F(x) K times as one leaf and differentiates sum_k s_x^(k) (row k uses w of pair k);
in both choices each s_k depends only on its own row, so each side is ONE backward pass for all K maps.

For a GAP + identity head with stop_gradient=True the map has a closed form (checked in the tests):
alpha_k = (w_k - s f_k) / (n ||p||) with p the pooled vector and s = w^T f.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..base import MethodOutput, register
from ..engine import PairContext
from .gradcam import grad_cam_maps, passes, side_gradients


def pair_weights(fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    """w = clamp(1 - |f_a - f_b|, 0) for L2-normalised rows f_a, f_b (K, D) -> (K, D)."""
    return (1.0 - (fa - fb).abs()).clamp_min(0.0)


@register("simcam", "Zheng et al. gradient similarity attention, similar-pair weights w = clamp(1-|fx-fy|, 0) (2.3)",
          kind="gradient", needs_features=True, contrast={"relu": False}, passes=passes)
def attribute(ctx: PairContext, side: str, stop_gradient: bool = True, relu: bool = True) -> MethodOutput:
    stop_gradient, relu = bool(stop_gradient), bool(relu)
    out = MethodOutput(params={"stop_gradient": stop_gradient, "relu": relu, "clamp": "w = max(1 - |fx - fy|, 0)",
                               "normalise": "l2", "layer": ctx.model.layer})

    def score(e: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        f, g = F.normalize(e, dim=-1), F.normalize(other, dim=-1)
        w = pair_weights(f.detach() if stop_gradient else f, g)
        return (w * f).sum(dim=-1)

    fq = F.normalize(ctx.query_embedding.float(), dim=-1)
    fn = F.normalize(ctx.neighbour_embeddings.float(), dim=-1)
    w = pair_weights(fq, fn)  # (K, D), the constant weights of every pair
    out.extras["pair_weights"] = w.cpu().numpy()
    feats, grads = side_gradients(ctx, side, score)
    maps, alpha = grad_cam_maps(feats, grads, relu)
    setattr(out, f"{side}_feature_maps", maps.cpu().numpy())
    out.extras[f"{side}_channel_weights"] = alpha.cpu().numpy()
    out.extras[f"{side}_scores"] = (w * (fq if side == "query" else fn)).sum(-1).cpu().numpy()
    return out
