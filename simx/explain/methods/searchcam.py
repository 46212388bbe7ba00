"""``searchcam``: the closed-form first-order search CAM for pooled-embedding models (methods.md 2.2).

For e(x) = W p(x) + b with GAP pooling p(x) = (1/n) sum_i F(x)[:, i], the map on y is

    M_y(j) = < e(x), W F(y)[:, j] > / n_y            (inner product)
    M_y(j) = < e(x), W F(y)[:, j] > / (n_y ||e(x)|| ||e(y)||)   (cosine, norms held at their unmasked values)

and sum_j M_y(j) = s(x, y) - <e(x), b> / (norms): the map is the exact Shapley value of position j in the
feature-level game "remove position j's feature vector" (methods.md 2.2/6.6). The query-side map swaps roles.
No backward pass: one forward per image, one einsum for all K neighbours. The ``l2`` metric
(s = -||e(x) - e(y)||^2) is not bilinear in the pooled features, so it has no such exact decomposition:
``searchcam`` refuses it with an error naming the methods that handle it (``sfam``, ``gradcam``).
"""

from __future__ import annotations

import torch

from ...errors import ExplainError
from ..base import MethodOutput, register
from ..engine import PairContext


def _project(ctx: PairContext, feats: torch.Tensor) -> torch.Tensor:
    """W F[:, j] for every position: (B, C, h, w) -> (B, D, h, w)."""
    head = ctx.model.linear_head()
    if head is None or head.pool != "avg":
        raise ExplainError(f"searchcam needs a GAP (+ linear) head; model {ctx.model.spec!r} has another head. "
                           "Use gradcam, simcam or a perturbation method.")
    if head.weight is None:
        return feats
    return torch.einsum("dc,bchw->bdhw", head.weight.to(feats), feats)


@register("searchcam", "Closed-form first-order search CAM of a pooled-embedding model (2.2); no backward pass",
          kind="closed-form", needs_features=True, contrast={})
def attribute(ctx: PairContext, side: str) -> MethodOutput:
    if ctx.model.metric == "l2":
        raise ExplainError("searchcam is defined for inner-product and cosine similarity; for l2 use sfam or gradcam")
    eq, en = ctx.query_embedding, ctx.neighbour_embeddings  # (1, D), (K, D)
    scale = torch.ones(ctx.k, device=eq.device)
    if ctx.model.metric == "cosine":
        scale = 1.0 / (eq.norm(dim=1) * en.norm(dim=1))  # (K,)
    out = MethodOutput(params={"metric": ctx.model.metric})
    if side == "query":
        pq = _project(ctx, ctx.query_features)[0]  # (D, h, w)
        n = pq.shape[-1] * pq.shape[-2]
        out.query_feature_maps = (torch.einsum("kd,dhw->khw", en, pq) / n * scale.view(-1, 1, 1)).cpu().numpy()
    if side == "neighbour":
        pn = _project(ctx, ctx.neighbour_features)  # (K, D, h, w)
        n = pn.shape[-1] * pn.shape[-2]
        out.neighbour_feature_maps = (torch.einsum("d,kdhw->khw", eq[0], pn) / n * scale.view(-1, 1, 1)).cpu().numpy()
    return out
