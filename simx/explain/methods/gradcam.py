"""``gradcam``: Grad-CAM with the model's similarity as the target (methods.md 2.1).

For the map on y (neighbour side; the query side swaps the roles of x and y), with F = F(y) in R^{C x n}:

    a_k    = (1/n) sum_i  d s(x, y) / d F(y)[k, i]          (spatial mean of the gradient)
    G_y(i) = ReLU( sum_k a_k F(y)[k, i] )                    (``relu=False`` keeps the signed map)

s is the model's own similarity (``model.similarity``: cosine, inner product or -||.||^2), differentiated through
``model.head`` from the cached features of the explained layer (``ctx.head_with_grad``): at the last spatial layer
that is only the pooling and head, no backward pass through the backbone; at an earlier layer ``model.head`` runs the
rest of the network, so the gradient is still exact.

Batching (methods.md 2.1, "Cost"):

* neighbour side: e(x) is detached and s_sum = sum_k s(x, y_k); since s_k depends only on F(y_k), ONE backward pass
  of s_sum gives the gradients of all K neighbour maps;
* query side: F(x) is replicated K times as one (K, C, h, w) leaf X, row k is paired with y_k (detached) and
  s_sum = sum_k s(X_k, y_k); row k of the gradient is d s_k / d F(x), so again ONE backward pass gives all K maps.

Each side therefore costs one backward pass (``cost.backward``) on top of the K + 1 cached forwards. For a
GAP + linear head and the inner product the map equals ReLU of ``searchcam`` (2.2) up to the positive factor n;
with cosine the gradient also holds the norm term -s e(y)/||e(y)||^2 (see 2.1 "Pitfalls").
"""

from __future__ import annotations

import torch

from ..base import MethodOutput, register
from ..engine import PairContext


def row_similarity(model, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """s(a_k, b_k) for every row k, (K,), from the model's own ``similarity`` (so custom metrics are honoured).

    ``b`` may have one row (broadcast to every row of ``a``). Uses the diagonal of the (K, K) similarity matrix,
    which is negligible work for the K of a result page and keeps gradients finite for l2 at zero distance.
    """
    if b.shape[0] == 1 and a.shape[0] != 1:
        return model.similarity(a, b)[:, 0]
    return model.similarity(a, b).diagonal()


def grad_cam_maps(feats: torch.Tensor, grads: torch.Tensor, relu: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(maps (K, h, w), channel weights (K, C)) from features and gradients (K, C, h, w)."""
    weights = grads.float().mean(dim=(2, 3))
    maps = torch.einsum("kc,kchw->khw", weights, feats.float())
    return (maps.clamp_min(0) if relu else maps), weights


def side_gradients(ctx: PairContext, which: str, score) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (K, C, h, w) of the explained side and the gradient of ``sum_k score(e_k, other_k)`` w.r.t. them,
    in one counted backward pass. ``score(e, other)`` -> (K,) gets the explained side's embeddings (with grad)
    and the other side's (detached) embeddings, row k paired with row k."""
    if which == "neighbour":
        feats = ctx.neighbour_features
        other = ctx.query_embedding.detach().expand(ctx.k, -1)
    else:
        feats = ctx.query_features.expand(ctx.k, -1, -1, -1)  # replicated: row k explains the pair (x, y_k)
        other = ctx.neighbour_embeddings.detach()
    leaf, emb = ctx.head_with_grad(feats)
    with torch.enable_grad():
        total = score(emb.float(), other.float()).sum()
    (grad,) = ctx.backward(total, [leaf])
    return leaf.detach(), grad.detach()


def passes(k: int, side: str, size: tuple[int, int], params: dict) -> tuple[int, int]:
    """One backward pass per side for all K pairs (through the head only for a pooled model)."""
    return 0, 1


@register("gradcam", "Grad-CAM with the similarity as target (2.1); one backward pass per side for all K pairs",
          kind="gradient", needs_features=True, contrast={"relu": False}, passes=passes)
def attribute(ctx: PairContext, side: str, relu: bool = True) -> MethodOutput:
    relu = bool(relu)
    out = MethodOutput(params={"relu": relu, "layer": ctx.model.layer, "metric": ctx.model.metric})
    sim = lambda e, other: row_similarity(ctx.model, e, other)  # noqa: E731
    feats, grads = side_gradients(ctx, side, sim)
    maps, w = grad_cam_maps(feats, grads, relu)
    setattr(out, f"{side}_feature_maps", maps.cpu().numpy())
    out.extras[f"{side}_channel_weights"] = w.cpu().numpy()
    return out
