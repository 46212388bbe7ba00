"""``sfam``: Similar Feature Activation Map, channel-importance (CIS) maps (methods.md 2.4; a reconstruction [D]).

The paper's exact CIS formulas could not be read (2.4), so this module implements the candidates of 2.4 and names
them. Notation for the map on x against y (the neighbour side swaps x and y): F(x) in R^{C x n}, pooled vector
p(x) = pool(F(x)) (GAP, or GMP where the model pools by max), embedding e = W p + b (W = identity, b = 0 when the
head is a bare pooling), g(y) = W^T e(y) in R^C, and N = ||e(x)|| ||e(y)|| for cosine, N = 1 for the inner product.

    map_x(u) = ReLU( sum_k CIS_k F(x)[k, u] )          (``relu`` defaults to True, except for ``variant="exact"``)

cosine / ip (``variant``):

* ``"share"`` (default): CIS_k = p_k(x) g_k(y) / N — the contribution of channel k pushed through W
  (sum_d W[d,k] p_k(x) e_d(y), 2.4); with an identity head CIS_k = f_k(x) f_k(y) / (||f(x)|| ||f(y)||), the per-channel
  share of the cosine. sum_k CIS_k = s(x, y) - <b, e(y)>/N (exactly s without a bias).
* ``"exact"``: w_k = g_k(y) / N, so with GAP (1/n) sum_u sum_k w_k F(x)[k, u] = s(x, y) - <b, e(y)>/N exactly: the
  map's mean is the similarity (the search CAM of 2.2 times n). No ReLU by default, so the sum can be checked.

l2 (s = -||e(x) - e(y)||^2; ``euclid_importance``): with Dp = p(x) - p(y), the per-channel squared gap
delta_k = Dp_k (W^T W Dp)_k (= (f_k(x) - f_k(y))^2 for an identity head; sum_k delta_k = d^2 exactly, the bias cancels):

* ``"gap"`` (default): CIS_k = (max_j delta_j - delta_k) / 2  (>= 0; largest for the best-agreeing channel);
* ``"exp"``: CIS_k = exp(-delta_k / tau); ``tau=None`` uses tau = mean_k |delta_k| of the pair (scale free).

CIS is computed per pair, so both sides give K maps. ``space="embedding"`` (default) needs a pooling (+ linear)
head (``model.linear_head()``); ``space="pooled"`` explains the similarity of the GAP-pooled explained layer itself
(f = p, the SFAM setting of a metric-learning CNN without head), usable with any model exposing features.
Cost: the K + 1 cached forwards, no backward pass (methods.md 8).
"""

from __future__ import annotations

import torch

from ...errors import ExplainError
from ..base import MethodOutput, register
from ..engine import PairContext

VARIANTS = ("share", "exact")
EUCLID = ("gap", "exp")
SPACES = ("embedding", "pooled")


def _pool(feats: torch.Tensor, pool: str) -> torch.Tensor:
    return feats.mean(dim=(2, 3)) if pool == "avg" else feats.amax(dim=(2, 3))


def channel_importance(metric: str, pa: torch.Tensor, pb: torch.Tensor | None, ea: torch.Tensor, eb: torch.Tensor,
                       weight: torch.Tensor | None, bias: torch.Tensor | None, variant: str = "share",
                       euclid_importance: str = "gap", tau: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CIS (K, C) for the map on side a (pooled pa, embeddings ea) against side b, row k with row k, and the
    bias term (K,) that the channel sum misses (zero for l2 and bias-free heads)."""
    K = pa.shape[0]
    if metric == "l2":
        dp = pa - pb
        delta = dp * (dp if weight is None else dp @ (weight.T @ weight))
        if euclid_importance == "gap":
            cis = (delta.amax(dim=1, keepdim=True) - delta) / 2
        else:
            t = delta.abs().mean(dim=1, keepdim=True).clamp_min(1e-12) if tau is None else torch.full(
                (K, 1), float(tau), dtype=delta.dtype, device=delta.device)
            cis = torch.exp(-delta / t)
        return cis, torch.zeros(K, dtype=pa.dtype, device=pa.device)
    norm = ea.norm(dim=1) * eb.norm(dim=1) if metric == "cosine" else torch.ones(K, dtype=pa.dtype, device=pa.device)
    g = eb if weight is None else eb @ weight  # (K, C): W^T e(b)
    cis = (pa * g if variant == "share" else g) / norm[:, None]
    bias_term = (eb @ bias) / norm if bias is not None else torch.zeros_like(norm)
    return cis, bias_term


@register("sfam", "SFAM channel-importance maps for cosine, inner product and Euclidean metrics (2.4); no backward",
          kind="closed-form", needs_features=True,
          contrast=lambda model: None if model.metric == "l2" else {"relu": False})
def attribute(ctx: PairContext, side: str, variant: str = "share", euclid_importance: str = "gap",
              tau: float | None = None, relu: bool | None = None, space: str = "embedding") -> MethodOutput:
    metric = ctx.model.metric
    if variant not in VARIANTS:
        raise ExplainError(f"sfam variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if euclid_importance not in EUCLID:
        raise ExplainError(f"sfam euclid_importance must be one of {', '.join(EUCLID)}, got {euclid_importance!r}")
    if space not in SPACES:
        raise ExplainError(f"sfam space must be one of {', '.join(SPACES)}, got {space!r}")
    if tau is not None and not float(tau) > 0:
        raise ExplainError(f"sfam tau must be positive, got {tau!r}")
    if space == "embedding":
        head = ctx.model.linear_head()
        if head is None:
            raise ExplainError(f"sfam needs a pooling (+ linear) head at the explained layer; model {ctx.model.spec!r} "
                               f"(layer {ctx.model.layer!r}) has another head. Use space='pooled', gradcam or simcam.")
        pool, weight, bias = head.pool, head.weight, head.bias
    else:
        pool, weight, bias = "avg", None, None
    if relu is None:
        relu = not (metric != "l2" and variant == "exact")
    relu = bool(relu)

    # the query side of cosine / ip in embedding space reads only the neighbours' embeddings, not their feature
    # maps (so it needs no forward of the neighbours when their embeddings are known, e.g. an index's)
    own_side_only = side == "query" and metric != "l2" and space == "embedding"
    fq = ctx.query_features.float()  # (1, C, h, w)
    fn = None if own_side_only else ctx.neighbour_features.float()  # (K, C, h, w)
    pq, pn = _pool(fq, pool), (None if fn is None else _pool(fn, pool))
    weight = None if weight is None else weight.to(pq)
    bias = None if bias is None else bias.to(pq)
    if space == "embedding":
        eq, en = ctx.query_embedding.float(), ctx.neighbour_embeddings.float()
    else:
        eq, en = pq, pn
    K = ctx.k
    pq_k, eq_k = pq.expand(K, -1), eq.expand(K, -1)

    params: dict = {"metric": metric, "space": space, "pool": pool, "relu": relu}
    if metric == "l2":
        params.update(euclid_importance=euclid_importance, tau="auto: mean |delta_k| per pair" if tau is None else tau)
    else:
        params["variant"] = variant
    out = MethodOutput(params=params)
    kw = dict(weight=weight, bias=bias, variant=variant, euclid_importance=euclid_importance, tau=tau)

    def maps(feats: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
        m = torch.einsum("kc,kchw->khw", cis, feats.expand(K, -1, -1, -1))
        return m.clamp_min(0) if relu else m

    if side == "query":
        cis, bterm = channel_importance(metric, pq_k, pn, eq_k, en, **kw)
        out.query_feature_maps = maps(fq, cis).cpu().numpy()
        out.extras["query_channel_weights"] = cis.cpu().numpy()
        out.extras["query_bias_term"] = bterm.cpu().numpy()
    if side == "neighbour":
        cis, bterm = channel_importance(metric, pn, pq_k, en, eq_k, **kw)
        out.neighbour_feature_maps = maps(fn, cis).cpu().numpy()
        out.extras["neighbour_channel_weights"] = cis.cpu().numpy()
        out.extras["neighbour_bias_term"] = bterm.cpu().numpy()
    if space == "pooled":  # the similarity these maps explain (not the model's embedding similarity)
        out.extras["pooled_similarities"] = ctx.model.similarity(pq, pn)[0].cpu().numpy()
    return out
