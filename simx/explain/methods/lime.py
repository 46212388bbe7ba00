"""``lime``: LIME on superpixels, adapted to similarity (methods.md 3.5, 6.5).

Follows ``lime_image`` (marcotcr/lime) as methods.md 3.5 reads it, with the similarity as the target:

* features: superpixels of the display image (the model input through the *true* inverse of its normalisation,
  ``model.preprocessing.denormalise``), by default ``segmentation="quickshift:kernel_size=4,max_dist=200,ratio=0.2"``,
  seeded; ``"slic:n=50,compactness=20,sigma=1"`` is the alternative (:func:`simx.explain.superpixels.parse_segmentation`);
* samples: ``n_samples = 1000`` binary vectors z in {0, 1}^M, i.i.d. Bernoulli(1/2) per superpixel
  (``lime_image``'s ``randint(0, 2)``), the first one all ones (the unperturbed image; its value is the cached
  unperturbed similarity, so ``n_samples - 1`` forwards per explained image);
* target: f(z) = s(x, mask(y, z)), s the model's similarity (cos / <.,.> / -||.||^2), x the other image, unmasked;
* fill (``baseline``): ``"segment_mean"`` by default = lime's ``hide_color=None`` (each switched-off superpixel
  takes its own mean colour, averaged in raw RGB and normalised back); any engine baseline (``black``, ``grey``,
  ``mean`` = SANE's 0 in normalised space, ``blur``, a number, a tensor) works too;
* sample weights: pi(z) = sqrt( exp( -D(z, 1)^2 / w^2 ) ), D = cosine distance between z and the all-ones vector
  (1 - |z| / sqrt(|z| M), and 1 for z = 0), kernel width w = 0.25 (``kernel_width``);
* surrogate: weighted ridge regression with intercept, alpha = 1 (sklearn ``Ridge(alpha=1)`` with
  ``sample_weight``, in closed form): with weighted means zbar, fbar,
  beta = ((Z - zbar)^T W (Z - zbar) + alpha I)^{-1} (Z - zbar)^T W (f - fbar), intercept = fbar - zbar . beta.
  (lime's feature selection keeps every feature at its default ``num_features=100000``.)

beta_i is painted on superpixel i. The query side segments and samples the query once and fits all K targets
with one multi-right-hand-side solve over the same N forwards (methods.md 1, rule 3); the neighbour side does each
neighbour separately. ``extras`` hold the per-superpixel weights, intercepts, weighted R^2 (lime's ``score``) and
segments. LIME's kernel does not give Shapley values (methods.md 6.5); use ``kernelshap`` for those.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import ExplainError
from ..base import MethodOutput, register
from ..engine import PairContext
from ..superpixels import coalition_scores, image_segments, method_segmentation, paint


def lime_samples(m: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_samples, M) uint8: i.i.d. Bernoulli(1/2) rows, the first row all ones (``lime_image``)."""
    z = rng.integers(0, 2, size=(int(n_samples), m)).astype(np.uint8)
    z[0] = 1
    return z


def lime_weights(z: np.ndarray, kernel_width: float = 0.25) -> np.ndarray:
    """pi(z) = sqrt(exp(-D^2 / w^2)), D = cosine distance of z to the all-ones vector (1 for z = 0)."""
    z = np.asarray(z, np.float64)
    size = z.sum(1)
    cos = np.where(size > 0, size / np.sqrt(np.maximum(size, 1) * z.shape[1]), 0.0)
    d = 1.0 - cos
    return np.sqrt(np.exp(-(d**2) / kernel_width**2))


def weighted_ridge(z: np.ndarray, y: np.ndarray, w: np.ndarray,
                   alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sklearn ``Ridge(alpha, fit_intercept=True).fit(z, y, sample_weight=w)`` in closed form, for T targets at once.

    z (N, M), y (N, T), w (N,) -> (coef (M, T), intercept (T,), weighted R^2 (T,))."""
    z = np.asarray(z, np.float64)
    y = np.asarray(y, np.float64).reshape(len(z), -1)
    w = np.asarray(w, np.float64)
    ws = w.sum()
    zbar = (w[:, None] * z).sum(0) / ws
    ybar = (w[:, None] * y).sum(0) / ws
    zc, yc = z - zbar, y - ybar
    a = zc.T @ (w[:, None] * zc) + alpha * np.eye(z.shape[1])
    coef = np.linalg.solve(a, zc.T @ (w[:, None] * yc))
    intercept = ybar - zbar @ coef
    resid = yc - zc @ coef
    ss_res = (w[:, None] * resid**2).sum(0)
    ss_tot = (w[:, None] * yc**2).sum(0)
    r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), 0.0)
    return coef, intercept, r2


def _explain_image(ctx: PairContext, which: int | None, segments: np.ndarray, n_samples: int, kernel_width: float,
                   alpha: float, baseline, offset: int):
    m = int(segments.max()) + 1
    z = lime_samples(m, n_samples, ctx.generator(offset))
    sims = ctx.similarities().double().cpu().numpy()
    f_full = sims if which is None else sims[which : which + 1]
    scores = coalition_scores(ctx, which, segments, z[1:], baseline).reshape(len(z) - 1, -1)
    f = np.concatenate([f_full[None], scores.double().cpu().numpy()])
    return weighted_ridge(z, f, lime_weights(z, kernel_width), alpha)


def passes(k: int, side: str, size: tuple[int, int], params: dict) -> tuple[int, int]:
    """``n_samples - 1`` forwards per explained image (the all-ones sample is the cached unperturbed pass)."""
    n = int(params.get("n_samples", 1000)) - 1
    return (n if side == "query" else k * n), 0


@register("lime", "LIME on quickshift superpixels with the similarity as target, ridge surrogate (3.5)",
          kind="perturbation", needs_features=False, contrast={}, passes=passes)
def attribute(ctx: PairContext, side: str, n_samples: int = 1000, baseline: str | float | torch.Tensor = "segment_mean",
              kernel_width: float = 0.25, alpha: float = 1.0, segmentation: str = "quickshift") -> MethodOutput:
    if int(n_samples) < 2:
        raise ExplainError(f"lime needs n_samples >= 2, got {n_samples}")
    seg_spec = method_segmentation(segmentation)
    out = MethodOutput(params={"n_samples": int(n_samples),
                               "baseline": baseline if not isinstance(baseline, torch.Tensor) else "tensor",
                               "kernel_width": kernel_width, "alpha": alpha, "segmentation": str(seg_spec),
                               "target": f"similarity ({ctx.model.metric})"})
    if side == "query":
        seg = image_segments(ctx, ctx.query[0], seg_spec)
        coef, icpt, r2 = _explain_image(ctx, None, seg, n_samples, kernel_width, alpha, baseline, offset=0)
        out.query_maps = paint(coef.T, seg)
        out.extras.update(query_values=coef.T.astype(np.float32), query_intercept=icpt.astype(np.float32),
                          query_score=r2.astype(np.float32), query_segments=seg.astype(np.int32))
    if side == "neighbour":
        maps, values, icpts, r2s, segs = [], [], [], [], []
        for k in range(ctx.k):
            seg = image_segments(ctx, ctx.neighbours[k], seg_spec)
            coef, icpt, r2 = _explain_image(ctx, k, seg, n_samples, kernel_width, alpha, baseline, offset=1 + k)
            maps.append(paint(coef[:, 0], seg))
            values.append(coef[:, 0].astype(np.float32))
            icpts.append(float(icpt[0]))
            r2s.append(float(r2[0]))
            segs.append(seg.astype(np.int32))
        out.neighbour_maps = np.stack(maps)
        out.extras.update(neighbour_values=values, neighbour_intercept=np.array(icpts, np.float32),
                          neighbour_score=np.array(r2s, np.float32), neighbour_segments=np.stack(segs))
    return out
