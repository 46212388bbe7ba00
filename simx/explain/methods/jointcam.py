"""``jointcam``: the closed-form second-order search activation map of a pooled-embedding model (methods.md 6.6).

Which part of the query matches which part of the neighbour. For a head e(x) = W p(x) + b with GAP pooling
p(x) = (1/n_x) sum_i F(x)[:, i] (methods.md 1), the joint matrix of pair (x, y) is (6.6, recipe 11.2 step 2)

    K[i, j] = < W F(x)[:, i], W F(y)[:, j] > / (n_x n_y)                        (inner product, ``ip``)
    K[i, j] = < W F(x)[:, i], W F(y)[:, j] > / (n_x n_y ||e(x)|| ||e(y)||)      (``cosine``; norms of the
                                                                                 unmasked embeddings, held fixed)

i.e. K = (W F(x))^T (W F(y)) / (n_x n_y), shape (h1 w1) x (h2 w2). It is the exact Shapley-Taylor interaction
index (6.1) of the *feature-level* game "a removed position contributes a zero feature vector, pooling
denominators and norms held fixed": that game v2(S) = sum_{i in S_x, j in S_y} K[i, j] (+ first-order bias terms)
is purely pairwise, so its only cross dividends are K and every discrete mixed derivative
v(N) - v(N - i) - v(N - j) + v(N - i - j) equals K[i, j] (6.6, 6.7).

Bias (6.6): with b != 0 the terms <W F(x)[:, i], b>/n_x, <b, W F(y)[:, j]>/n_y and <b, b> are first-order or
constant and do not enter K. They are reported in ``extras`` (divided by the same norms for cosine) so that, per
pair k (recipe 11.2 step 3),

    sum_ij joint[k] + extras["bias_terms"][k] == s(x, y_k)        (ip and cosine)

with ``bias_terms = query_bias.sum() + neighbour_bias.sum() + bias_constant``.

Marginals (6.6, 6.8): ``query_feature_maps[k]`` = row sums of K plus the query bias map, ``neighbour_feature_maps[k]``
= column sums plus the neighbour bias map. These equal ``searchcam`` (2.2) exactly (with b = 0 they are the plain
row/column sums); the Shapley value of a position in the *joint* game is half its row (column) sum.

GMP variant (6.6, Zhu et al.): for ``pool="max"`` models p(x)_c = max_i F(x)[c, i], so F(x) is replaced by F~(x),
which keeps per channel only the arg-max position (zero elsewhere, first arg-max on ties) and p = sum_i F~[:, i]:
K = (W F~(x))^T (W F~(y)) with no 1/n factors. ``sum(K) + bias_terms == s`` still holds exactly (ip), but the
feature-level removal game is no longer pairwise (removing an arg-max exposes the runner-up), so here K is a
decomposition of s, not an interaction index.

``l2`` (s = -||e(x) - e(y)||^2, an extension beyond 6.6, derived here): the feature-level game is an exact quadratic,
its cross dividends are 2 <W F(x)[:, i], W F(y)[:, j]> / (n_x n_y), so ``joint = 2 K_ip`` is again the exact
Shapley-Taylor cross block; the self terms -||e(x)||^2 - ||e(y)||^2 go into ``bias_terms`` (so the identity above
still holds) and the marginals are plain row/column sums.

Cost (8): no pass beyond the cached unperturbed features (one forward per image), no backward pass, one einsum
for all K neighbours: (D x n_x)^T (K x D x n_y). A few milliseconds per pair for the default model.
"""

from __future__ import annotations

import torch

from ...errors import ExplainError
from ..base import MethodOutput, register
from ..engine import PairContext
from ..cells import grid_cells


def pooled_positions(feats: torch.Tensor, pool: str) -> tuple[torch.Tensor, float]:
    """(B, C, h, w) -> (the per-position vectors whose sum is the pooled vector before dividing, divisor n).

    avg: (F, n = h w), since p = (1/n) sum_i F[:, i]; max: (F~, 1) with F~ = F kept only at each channel's first
    arg-max position (6.6, GMP variant), since p = sum_i F~[:, i].
    """
    b, c, h, w = feats.shape
    flat = feats.reshape(b, c, h * w)
    if pool == "avg":
        return flat, float(h * w)
    if pool == "max":
        idx = flat.argmax(dim=2, keepdim=True)
        return torch.zeros_like(flat).scatter_(2, idx, flat.gather(2, idx)), 1.0
    raise ExplainError(f"unknown pooling {pool!r} (expected 'avg' or 'max')")


def project_positions(ctx: PairContext, feats: torch.Tensor, method: str = "jointcam") -> tuple[torch.Tensor, float]:
    """W F[:, i] for every position of a linear-head model: (B, C, h, w) -> ((B, D, n), divisor n)."""
    head = ctx.model.linear_head()
    if head is None:
        raise ExplainError(f"{method} needs a pooled (GAP/GMP) + linear head; model {ctx.model.spec!r} has another "
                           "head. Use jointhessian (any differentiable head) or shapleytaylor (any model).")
    pos, n = pooled_positions(feats, head.pool)
    if head.weight is not None:
        pos = torch.einsum("dc,bcn->bdn", head.weight.to(pos), pos)
    return pos, n


def bias_vector(ctx: PairContext, like: torch.Tensor) -> torch.Tensor | None:
    head = ctx.model.linear_head()
    return None if head is None or head.bias is None else head.bias.to(like)


@register("jointcam", "Closed-form joint (second-order) search CAM of a pooled + linear head (6.6): which query "
          "cell matches which neighbour cell; no extra pass", kind="joint", needs_features=True)
def attribute(ctx: PairContext, side: str = "both") -> MethodOutput:
    metric = ctx.model.metric
    px, nx = project_positions(ctx, ctx.query_features)  # (1, D, n_x)
    py, ny = project_positions(ctx, ctx.neighbour_features)  # (K, D, n_y)
    px = px[0]
    eq, en = ctx.query_embedding, ctx.neighbour_embeddings  # (1, D), (K, D)
    kk = int(py.shape[0])

    joint = torch.einsum("di,kdj->kij", px, py) / (nx * ny)  # K_ip, (K, n_x, n_y)
    b = bias_vector(ctx, px)
    if b is not None:
        qbias = (b @ px / nx).expand(kk, -1)  # <W F(x)_i, b> / n_x, (K, n_x)
        nbias = torch.einsum("d,kdj->kj", b, py) / ny  # <b, W F(y)_j> / n_y, (K, n_y)
        const = (b @ b).expand(kk)
    else:
        qbias = px.new_zeros(kk, px.shape[1])
        nbias = py.new_zeros(kk, py.shape[2])
        const = px.new_zeros(kk)
    if metric == "cosine":
        scale = 1.0 / (eq.norm(dim=1) * en.norm(dim=1))  # (K,)
        joint = joint * scale.view(-1, 1, 1)
        qbias, nbias, const = qbias * scale[:, None], nbias * scale[:, None], const * scale
    elif metric == "l2":
        # s = 2<u, v> - ||u||^2 - ||v||^2: cross block 2 K_ip; everything else is a first-order/self term.
        joint = 2.0 * joint
        s = ctx.similarities()
        rest = s - joint.sum(dim=(1, 2))
        qbias, nbias, const = qbias.new_zeros(qbias.shape), nbias.new_zeros(nbias.shape), rest
    elif metric != "ip":
        raise ExplainError(f"jointcam: unsupported metric {metric!r}")

    h1, w1 = ctx.query_features.shape[-2:]
    h2, w2 = ctx.neighbour_features.shape[-2:]
    out = MethodOutput(params={"metric": metric, "pool": ctx.model.linear_head().pool})
    out.joint = joint.cpu().numpy()
    out.query_cells = grid_cells((h1, w1), ctx.size)
    out.neighbour_cells = grid_cells((h2, w2), ctx.size)
    if side in ("query", "both"):
        out.query_feature_maps = (joint.sum(2) + qbias).reshape(kk, h1, w1).cpu().numpy()
    if side in ("neighbour", "both"):
        out.neighbour_feature_maps = (joint.sum(1) + nbias).reshape(kk, h2, w2).cpu().numpy()
    bias_terms = qbias.sum(1) + nbias.sum(1) + const
    out.extras = {
        "bias_terms": bias_terms.cpu().numpy(),
        "query_bias": qbias.reshape(kk, h1, w1).cpu().numpy(),
        "neighbour_bias": nbias.reshape(kk, h2, w2).cpu().numpy(),
        "bias_constant": const.cpu().numpy(),
    }
    return out
