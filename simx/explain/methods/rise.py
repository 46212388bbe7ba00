"""``rise``: RISE adapted to similarity (Petsiuk et al. 2018, as used by SANE; methods.md 3.3).

* Masks M_i, i = 1..N: binary s x s grids with P(cell = 1) = p, upsampled bilinearly to
  ((s + 1) ceil(H / s)) x ((s + 1) ceil(W / s)), randomly shifted by [0, cell) and cropped to H x W
  (:class:`simx.explain.masks.RiseMasks`). They are drawn once per explanation from the seed
  (``ctx.generator``) and shared by the query side and every neighbour side (methods.md 10.3).
* Scores: sim_i = s(x, y (.) M_i + (1 - M_i) (.) b), s the model's similarity (cos / <.,.> / -||.||^2, so
  "higher = more similar" holds for the l2 metric too: methods.md 3.3 "for distances use -d"); x is the other
  image, unmasked (fixed reference).
* Saliency with SANE's empirical-coverage normalisation (methods.md 3.3 [C]):

      S(u) = sum_i sim_i M_i(u) / sum_i M_i(u)

  i.e. the mean similarity of the masks that kept pixel u (unlike the original 1 / (N p) scaling, a constant
  similarity gives exactly a constant map). Pixels no mask keeps (only possible for tiny N) get 0.
* Baseline of the map (``query_baseline`` / ``neighbour_baseline``): the mean masked score (1/N) sum_i sim_i, the
  value S(u) takes where a pixel makes no difference; S is a mean similarity (e.g. 0.51-0.53 everywhere), so the
  renderer draws S - baseline (issue 12 item 6) instead of a uniform wash.

Defaults (SANE, methods.md 3.3 / 8): ``n_samples = 2000`` masks, grid ``s = 8``, ``p = 0.5``;
``baseline = "mean"`` (masked pixels = 0 in normalised space, the dataset mean colour, as SANE). Smaller
``n_samples`` are allowed (maps get noisy below ~1000). Cost: N forwards for the query side (the masked-query
embeddings are shared by all K neighbours: one (N x D) (D x K) product per chunk, methods.md 1 rule 3) and K N for
the neighbour side. Masks are generated and consumed in chunks of whole batches, never all N at once.
``extras`` hold the N scores per pair and side and the mask parameters.
"""

from __future__ import annotations

import numpy as np
import torch

from ..base import MethodOutput, register
from ..engine import PairContext
from ..masks import RiseMasks, chunks
from ..superpixels import chunk_size


def passes(k: int, side: str, size: tuple[int, int], params: dict) -> tuple[int, int]:
    """N forwards on the query side (shared by all K neighbours), K N on the neighbour side."""
    n = int(params.get("n_samples", 2000))
    return (n if side == "query" else k * n), 0


@register("rise", "RISE: random smooth masks, coverage-normalised similarity-weighted sum (3.3)",
          kind="perturbation", needs_features=False, contrast={}, passes=passes)
def attribute(ctx: PairContext, side: str, n_samples: int = 2000, s: int = 8, p: float = 0.5,
              baseline: str | float | torch.Tensor = "mean") -> MethodOutput:
    h, w = ctx.size
    masks = RiseMasks(int(n_samples), (h, w), s=s, p=p, rng=ctx.generator(0), device=ctx.device)
    do_q, do_n = side == "query", side == "neighbour"  # the engine calls once per side
    k = ctx.k
    acc_q = torch.zeros(k, h * w, dtype=torch.float64, device=ctx.device)
    acc_n = torch.zeros(k, h * w, dtype=torch.float64, device=ctx.device)
    cover = torch.zeros(h * w, dtype=torch.float64, device=ctx.device)
    scores_q, scores_n = [], []
    for start, stop in chunks(len(masks), chunk_size(ctx)):
        m = masks.chunk(start, stop)
        flat = m.reshape(stop - start, h * w).double()
        cover += flat.sum(0)
        if do_q:
            sq = ctx.query_mask_scores(m, baseline).double().T  # (K, n)
            acc_q += sq @ flat
            scores_q.append(sq)
        if do_n:
            sn = ctx.neighbour_mask_scores(m, baseline).double()  # (K, n)
            acc_n += sn @ flat
            scores_n.append(sn)
    denom = torch.where(cover > 0, cover, torch.ones_like(cover))
    out = MethodOutput(params={"n_samples": int(n_samples), "s": int(s), "p": float(p),
                               "baseline": baseline if not isinstance(baseline, torch.Tensor) else "tensor",
                               "normalisation": "coverage", "score": f"similarity ({ctx.model.metric})"})
    out.extras["mask_coverage"] = (cover / len(masks)).reshape(h, w).float().cpu().numpy()
    if do_q:
        out.query_maps = (acc_q / denom).reshape(k, h, w).float().cpu().numpy()
        out.extras["query_scores"] = torch.cat(scores_q, 1).float().cpu().numpy()
        out.query_baseline = out.extras["query_scores"].mean(axis=1)  # the map's "no effect" level: mean score
    if do_n:
        out.neighbour_maps = (acc_n / denom).reshape(k, h, w).float().cpu().numpy()
        out.extras["neighbour_scores"] = torch.cat(scores_n, 1).float().cpu().numpy()
        out.neighbour_baseline = out.extras["neighbour_scores"].mean(axis=1)
    return out
