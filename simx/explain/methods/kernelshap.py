"""``kernelshap``: Kernel SHAP on superpixels, adapted to similarity (methods.md 3.6, 6.5; checks of 10.1).

Players are the M superpixels of the explained image (``segmentation="slic:n=50,compactness=20,sigma=1"`` on the
display image, see :mod:`simx.explain.superpixels`; ``"quickshift"`` optional).
For a coalition z in {0, 1}^M the explained image is ``mask(y, z) = m_z * y + (1 - m_z) * b`` with
``m_z(u) = z[segment(u)]``, and the value is Hamilton's first-order value function with the model's own
similarity (methods.md 6.1)::

    v(z) = s(x, mask(y, z))        (s = cos, <.,.> or -||.||^2, the model's metric; x is the other image, unmasked)

Kernel SHAP fits ``v(z) ~ phi_0 + sum_i phi_i z_i`` by weighted least squares with the Shapley kernel

    pi(z) = (M - 1) / ( C(M, |z|) |z| (M - |z|) ),   0 < |z| < M,

and the two infinite-weight rows enforced *exactly* (constrained least squares by eliminating the last player):
``phi_0 = v(0)``, ``sum_i phi_i = v(1) - v(0)`` (efficiency), so with u_i = z_i - z_M and
t = v(z) - v(0) - z_M (v(1) - v(0)) the fit is ``min sum_z pi(z) (t - sum_{i<M} phi_i u_i)^2`` and
``phi_M = v(1) - v(0) - sum_{i<M} phi_i``. With all 2^M - 2 coalitions this *is* the Shapley value.

Coalitions (the shap ``KernelExplainer`` scheme): sizes are enumerated completely from the outside in (1 and M - 1,
then 2 and M - 2, ...) while the budget covers a size pair at its expected share of the kernel mass, each
enumerated coalition weighted by its exact kernel weight; the remaining budget is drawn with size probability
proportional to the kernel mass ``(M - 1) / (s (M - s))`` of the remaining sizes, uniformly within a size, paired
with its complement (antithetic, ``paired=True``), each sampled row getting an equal share of the remaining mass.
When ``n_samples >= 2^M`` every coalition is enumerated.

Defaults: ``n_samples = 2M + 2048`` value evaluations per explained image (methods.md 3.6 / 8; shap's default),
counting the empty and the full coalition; v(1) is the cached unperturbed similarity, so an explained image costs
``n_samples - 1`` forwards. ``baseline="mean"`` (zero in normalised space = the dataset mean colour, the RISE/SANE
fill of methods.md 3.3; 3.6 names none). The query side segments the query once, evaluates its coalitions once and
solves the K regressions as one multi-right-hand-side least squares (methods.md 1, rule 3); the neighbour side
segments and samples each neighbour separately (its own players). Maps paint phi_i on superpixel i; ``extras``
hold the per-superpixel values, phi_0 = v(0), the segments and the evaluation counts.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from ...errors import ExplainError
from ..base import MethodOutput, register
from ..engine import PairContext
from ..superpixels import coalition_scores, image_segments, method_segmentation, paint, parse_segmentation


def size_mass(m: int) -> np.ndarray:
    """Kernel mass of each coalition size s = 1..M-1 (``C(M, s) pi(s) = (M - 1) / (s (M - s))``), normalised."""
    s = np.arange(1, m, dtype=np.float64)
    mass = (m - 1) / (s * (m - s))
    return mass / mass.sum()


def all_coalitions(m: int) -> np.ndarray:
    """Every coalition except the empty and the full one, (2^M - 2, M) uint8."""
    codes = np.arange(1, 2**m - 1, dtype=np.int64)
    return ((codes[:, None] >> np.arange(m)) & 1).astype(np.uint8)


def sample_coalitions(m: int, budget: int, rng: np.random.Generator,
                      paired: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``budget`` coalitions other than the empty and full ones with their kernel weights (summing to 1).

    Returns (Z (B, M) uint8, w (B,) float64). See the module docstring for the scheme."""
    if m < 2 or budget <= 0:
        return np.zeros((0, m), np.uint8), np.zeros(0)
    mass = size_mass(m)  # index s - 1
    if m <= 30 and budget >= 2**m - 2:
        z = all_coalitions(m)
        sizes = z.sum(1)
        return z, mass[sizes - 1] / np.array([math.comb(m, int(s)) for s in range(m + 1)])[sizes]
    rows: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    left = int(budget)
    remaining = list(range(1, m))
    for s in range(1, m // 2 + 1):
        pair = [s] if s == m - s else [s, m - s]
        count = sum(math.comb(m, t) for t in pair)
        rem_mass = sum(mass[t - 1] for t in remaining)
        share = left * sum(mass[t - 1] for t in pair) / rem_mass
        if count > left or share < count - 1e-8:
            break
        for t in pair:
            idx = np.array(list(itertools.combinations(range(m), t)), dtype=np.int64)
            z = np.zeros((len(idx), m), np.uint8)
            np.put_along_axis(z, idx, 1, axis=1)
            rows.append(z)
            weights.append(np.full(len(idx), mass[t - 1] / math.comb(m, t)))
            remaining.remove(t)
        left -= count
    if left > 0 and remaining:
        rem = np.array(remaining)
        p = mass[rem - 1] / mass[rem - 1].sum()
        n_draw = -(-left // 2) if paired else left
        sizes = rng.choice(rem, size=n_draw, p=p)
        ranks = np.argsort(np.argsort(rng.random((n_draw, m)), axis=1), axis=1)
        z = (ranks < sizes[:, None]).astype(np.uint8)
        if paired:
            z = np.stack([z, 1 - z], axis=1).reshape(-1, m)
        z = z[:left]
        rows.append(z)
        weights.append(np.full(len(z), mass[rem - 1].sum() / len(z)))
    return np.concatenate(rows), np.concatenate(weights)


def solve_shapley(z: np.ndarray, w: np.ndarray, values: np.ndarray, v_empty: np.ndarray,
                  v_full: np.ndarray) -> np.ndarray:
    """Constrained WLS of Kernel SHAP: z (B, M), w (B,), values (B, T), v_empty / v_full (T,) -> phi (M, T) with
    sum_i phi_i = v_full - v_empty exactly (last player eliminated)."""
    z = np.asarray(z, dtype=np.float64)
    v_empty = np.asarray(v_empty, np.float64).reshape(-1)
    total = np.asarray(v_full, np.float64).reshape(-1) - v_empty
    m = z.shape[1]
    if m == 1 or len(z) == 0:  # one player takes everything; no coalition row to fit (M = 1)
        return np.repeat(total[None, :], m, 0) / m
    values = np.asarray(values, dtype=np.float64).reshape(len(z), -1)
    t = values - v_empty[None] - z[:, -1:] * total[None]
    u = z[:, :-1] - z[:, -1:]
    sw = np.sqrt(np.asarray(w, np.float64))[:, None]
    head, *_ = np.linalg.lstsq(u * sw, t * sw, rcond=None)
    return np.concatenate([head, total[None] - head.sum(0, keepdims=True)])


def _explain_image(ctx: PairContext, which: int | None, segments: np.ndarray, n_samples: int | None, paired: bool,
                   baseline, offset: int) -> tuple[np.ndarray, np.ndarray, int]:
    """phi (M, T) and phi_0 (T,) for the query (which=None, T = K) or neighbour ``which`` (T = 1)."""
    m = int(segments.max()) + 1
    n = int(n_samples) if n_samples is not None else 2 * m + 2048
    if n < 3 and m > 1:
        raise ExplainError(f"kernelshap needs n_samples >= 3 (empty, full and one coalition), got {n}")
    z, w = sample_coalitions(m, n - 2, ctx.generator(offset), paired=paired)
    coalitions = np.concatenate([np.zeros((1, m), np.uint8), z])  # the empty coalition rides in the first batch
    scores = coalition_scores(ctx, which, segments, coalitions, baseline)
    scores = scores.reshape(len(coalitions), -1).double().cpu().numpy()
    sims = ctx.similarities().double().cpu().numpy()
    v_full = sims if which is None else sims[which : which + 1]
    phi = solve_shapley(z, w, scores[1:], scores[0], v_full)
    return phi, scores[0], len(coalitions) + 1


def image_passes(m: int, n_samples: int | None) -> int:
    """Forwards for one explained image of M superpixels: the empty coalition and the sampled ones
    (:func:`sample_coalitions`: at most the 2^M - 2 others), i.e. ``n_samples - 1`` unless 2^M is smaller; the full
    coalition is the cached unperturbed pass."""
    n = int(n_samples) if n_samples is not None else 2 * m + 2048
    if m < 2 or n - 2 <= 0:
        return 1
    return 1 + (min(n - 2, 2**m - 2) if m <= 30 else n - 2)


def passes(k: int, side: str, size: tuple[int, int], params: dict) -> tuple[int, int]:
    """``n_samples - 1`` forwards per explained image (:func:`image_passes`), M taken as the number of superpixels
    the segmentation asks for: an upper bound, :func:`pair_passes` counts the superpixels SLIC returns."""
    per_image = image_passes(parse_segmentation(params.get("segmentation", "slic")).n, params.get("n_samples"))
    return (per_image if side == "query" else k * per_image), 0


def pair_passes(ctx: PairContext, side: str, params: dict) -> tuple[int, int]:
    """The exact forwards for the pair: each explained image is segmented (as the run will) and counted with its
    own number of superpixels."""
    seg_spec = method_segmentation(params.get("segmentation", "slic"))
    images = [ctx.query[0]] if side == "query" else list(ctx.neighbours)
    return sum(image_passes(int(image_segments(ctx, image, seg_spec).max()) + 1, params.get("n_samples"))
               for image in images), 0


@register("kernelshap", "Kernel SHAP on SLIC superpixels with the similarity as value, exact efficiency (3.6)",
          kind="perturbation", needs_features=False, contrast={}, passes=passes, pair_passes=pair_passes)
def attribute(ctx: PairContext, side: str, n_samples: int | None = None, baseline: str | float | torch.Tensor = "mean",
              paired: bool = True, segmentation: str = "slic") -> MethodOutput:
    seg_spec = method_segmentation(segmentation)
    out = MethodOutput(params={"n_samples": n_samples if n_samples is not None else "2M+2048",
                               "baseline": baseline if not isinstance(baseline, torch.Tensor) else "tensor",
                               "paired": paired, "segmentation": str(seg_spec),
                               "value": f"similarity ({ctx.model.metric})"})
    if side == "query":
        seg = image_segments(ctx, ctx.query[0], seg_spec)
        phi, phi0, evals = _explain_image(ctx, None, seg, n_samples, paired, baseline, offset=0)
        out.query_maps = paint(phi.T, seg)
        out.extras.update(query_values=phi.T.astype(np.float32), query_phi0=phi0.astype(np.float32),
                          query_segments=seg.astype(np.int32), query_evaluations=evals)
    if side == "neighbour":
        maps, values, phi0s, segs, evals = [], [], [], [], []
        for k in range(ctx.k):
            seg = image_segments(ctx, ctx.neighbours[k], seg_spec)
            phi, phi0, ev = _explain_image(ctx, k, seg, n_samples, paired, baseline, offset=1 + k)
            maps.append(paint(phi[:, 0], seg))
            values.append(phi[:, 0].astype(np.float32))
            phi0s.append(float(phi0[0]))
            segs.append(seg.astype(np.int32))
            evals.append(ev)
        out.neighbour_maps = np.stack(maps)
        out.extras.update(neighbour_values=values, neighbour_phi0=np.array(phi0s, np.float32),
                          neighbour_segments=np.stack(segs), neighbour_evaluations=evals)
    return out
