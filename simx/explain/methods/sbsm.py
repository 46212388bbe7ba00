"""``sbsm``: similarity-based saliency maps by sliding-window occlusion (Dong et al. 2019; methods.md 3.2, 3.1).

As implemented by XAITK (``SBSMStack`` = ``SlidingWindow`` + ``SimilarityScoring``), for an explained image r and
the other image q:

* windows m_i (1 = keep, 0 = occluded): XAITK's sliding window -- origins 0, stride, 2 stride, ... < side, then
  centred (:func:`simx.explain.masks.sliding_window_masks`). Defaults are XAITK's 50 x 50 window and 20 x 20
  stride *at 224 px*, scaled to the model's input size: window = round(50 S / 224), stride = round(20 S / 224)
  (12 x 12 = 144 windows at 224 px; 11 x 11 = 121 at 64 px);
* delta_i = max(0, d(e(q), e(r (.) m_i)) - d(e(q), e(r)))   (the increase in distance caused by occluding window i);
* S(u) = sum_i delta_i (1 - m_i(u)) / sum_i (1 - m_i(u))    (per-pixel occlusion-coverage normalisation; pixels
  no window covers get 0);
* final map S / max_u |S(u)| (XAITK's max-abs scaling), in [0, 1] since delta >= 0 (all zeros stays zeros).

Distance d: ``distance="auto"`` (default) takes the distance that matches the model's metric, so SBSM ranks
exactly what the search engine ranks: cosine -> d = 1 - cos(a, b) (scipy's "cosine"), l2 -> d = ||a - b||
(Euclidean, XAITK's default "euclidean"; monotone in the model's -||a - b||^2), ip -> d = -<a, b>. These are
computed from the similarity matrix of ``ctx.query_mask_scores`` / ``ctx.neighbour_mask_scores``. An explicit
``distance`` ("cosine", "euclidean", "sqeuclidean", "ip") is computed from the masked embeddings instead.

Fill (``baseline``): ``"black"`` by default = XAITK ``fill=None`` (occluded pixels are raw 0, passed through the
model's normalisation); every engine baseline works. Cost: one forward per window per explained image; the query
side's masked embeddings are computed once for all K neighbours (methods.md 1, rule 3). ``extras`` hold the window
boxes (y0, x0, y1, x1) and the window scores delta (K, N) per side.

``signed=True`` scores each window by the drop of the model's own similarity, delta_i = s(q, r) - s(q, r (.) m_i),
neither clamped at 0 nor max-abs scaled: a signed map in similarity units that is linear in the similarity, the
form the contrastive maps take (the map of a margin s(q, a) - s(q, b) is then the difference of the two maps).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import ExplainError
from ..base import MethodOutput, register
from ..engine import PairContext
from ..masks import sliding_window_masks, window_boxes

DISTANCES = ("auto", "cosine", "euclidean", "sqeuclidean", "ip")


def default_window(size: int) -> tuple[int, int]:
    """XAITK's (window, stride) = (50, 20) at 224 px, scaled proportionally to ``size``."""
    return max(1, round(50 * size / 224)), max(1, round(20 * size / 224))


def similarity_to_distance(s: torch.Tensor, metric: str) -> torch.Tensor:
    """The distance matching a model metric, from its similarity: 1 - cos, sqrt(-s) = ||a - b||, or -<a, b>."""
    if metric == "cosine":
        return 1.0 - s
    if metric == "l2":
        return (-s).clamp_min(0).sqrt()
    return -s


def embedding_distance(a: torch.Tensor, b: torch.Tensor, distance: str) -> torch.Tensor:
    """(N, D) x (K, D) -> (N, K) distances."""
    a, b = a.double(), b.double()
    if distance == "cosine":
        return 1.0 - F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    if distance == "euclidean":
        return torch.cdist(a, b)
    if distance == "sqeuclidean":
        return torch.cdist(a, b).pow(2)
    if distance == "ip":
        return -(a @ b.T)
    raise ExplainError(f"unknown distance {distance!r}; choose one of {', '.join(DISTANCES)}")


def saliency(deltas: torch.Tensor, occluded: torch.Tensor, scale: bool = True) -> torch.Tensor:
    """(K, N) window scores, (N, H, W) occlusion indicators 1 - m_i -> (K, H, W) coverage-normalised, max-abs
    scaled maps (one matrix product); ``scale=False`` keeps the coverage-normalised scores as they are."""
    n, h, w = occluded.shape
    occ = occluded.reshape(n, h * w).to(deltas)
    sal = deltas @ occ
    cover = occ.sum(0)
    sal = sal / torch.where(cover > 0, cover, torch.ones_like(cover))
    if not scale:
        return sal.reshape(-1, h, w)
    peak = sal.abs().amax(dim=1, keepdim=True)
    sal = sal / torch.where(peak > 0, peak, torch.ones_like(peak))
    return sal.clamp(-1, 1).reshape(-1, h, w)


def n_windows(size: tuple[int, int], params: dict) -> int:
    """How many windows the sliding window of ``params`` (defaults: :func:`default_window`) places on ``size``."""
    dw, ds = default_window(max(size))
    window = params.get("window") if params.get("window") is not None else dw
    stride = params.get("stride") if params.get("stride") is not None else ds
    return len(window_boxes(size, window, stride))


def passes(k: int, side: str, size: tuple[int, int], params: dict) -> tuple[int, int]:
    """One forward per window per explained image; the query's are shared by all K neighbours."""
    n = n_windows(size, params)
    return (n if side == "query" else k * n), 0


@register("sbsm", "SBSM: sliding-window occlusion, increase in embedding distance per window (3.2, XAITK)",
          kind="perturbation", needs_features=False, contrast={"signed": True}, passes=passes)
def attribute(ctx: PairContext, side: str, window: int | tuple[int, int] | None = None,
              stride: int | tuple[int, int] | None = None, distance: str = "auto",
              baseline: str | float | torch.Tensor = "black", signed: bool = False) -> MethodOutput:
    if distance not in DISTANCES:
        raise ExplainError(f"unknown distance {distance!r}; choose one of {', '.join(DISTANCES)}")
    signed = bool(signed)
    if signed and distance != "auto":
        raise ExplainError("sbsm signed=True scores the drop of the model's own similarity; leave distance='auto'")
    h, w = ctx.size
    dw, ds = default_window(max(h, w))
    window = window if window is not None else dw
    stride = stride if stride is not None else ds
    keep = torch.from_numpy(sliding_window_masks((h, w), window, stride)).to(ctx.device)
    occluded = 1.0 - keep
    metric = ctx.model.metric
    out = MethodOutput(params={"window": window, "stride": stride, "baseline": baseline if not isinstance(
        baseline, torch.Tensor) else "tensor", "distance": distance if distance != "auto" else
        {"cosine": "cosine", "l2": "euclidean", "ip": "ip"}[metric], "n_windows": int(keep.shape[0]), "signed": signed})
    out.extras["windows"] = window_boxes((h, w), window, stride)
    eq, en = ctx.query_embedding, ctx.neighbour_embeddings
    if signed:  # the drop of the similarity itself, unclamped and unscaled: linear in the similarity
        if side == "query":
            deltas = (ctx.similarities().double()[None] - ctx.query_mask_scores(keep, baseline).double()).T  # (K, N)
            out.query_maps = saliency(deltas, occluded, scale=False).float().cpu().numpy()
            out.extras["query_window_scores"] = deltas.float().cpu().numpy()
        if side == "neighbour":
            deltas = ctx.similarities().double()[:, None] - ctx.neighbour_mask_scores(keep, baseline).double()
            out.neighbour_maps = saliency(deltas, occluded, scale=False).float().cpu().numpy()
            out.extras["neighbour_window_scores"] = deltas.float().cpu().numpy()
        return out
    if side == "query":
        if distance == "auto":
            d = similarity_to_distance(ctx.query_mask_scores(keep, baseline).double(), metric)  # (N, K)
            d0 = similarity_to_distance(ctx.similarities().double(), metric)  # (K,)
        else:
            d = embedding_distance(ctx.embed_masked(ctx.query, keep, baseline), en, distance)
            d0 = embedding_distance(eq, en, distance)[0]
        deltas = (d - d0[None]).clamp_min(0).T  # (K, N)
        out.query_maps = saliency(deltas, occluded).float().cpu().numpy()
        out.extras["query_window_scores"] = deltas.float().cpu().numpy()
    if side == "neighbour":
        if distance == "auto":
            d = similarity_to_distance(ctx.neighbour_mask_scores(keep, baseline).double(), metric)  # (K, N)
            d0 = similarity_to_distance(ctx.similarities().double(), metric)
        else:
            emb = ctx.embed_masked_each(ctx.neighbours, keep, baseline)  # (K, N, D), batched across neighbours
            d = embedding_distance(emb.reshape(-1, emb.shape[-1]), eq, distance)[:, 0].reshape(ctx.k, -1)
            d0 = embedding_distance(en, eq, distance)[:, 0]
        deltas = (d - d0[:, None]).clamp_min(0)  # (K, N)
        out.neighbour_maps = saliency(deltas, occluded).float().cpu().numpy()
        out.extras["neighbour_window_scores"] = deltas.float().cpu().numpy()
    return out
