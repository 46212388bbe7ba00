"""``jointsbsm``: joint occlusion by the discrete mixed derivative (second-order SBSM, methods.md 6.7, 3.2).

Black-box (no features needed). Occlude window a in the query x and window b in the neighbour y (keep-masks of
XAITK's centred sliding window, :func:`simx.explain.masks.sliding_window_masks`, as ``sbsm`` uses, 3.2) and take
the discrete mixed derivative at the full coalition (6.7):

    J[a, b] = s(x, y) - s(x - a, y) - s(x, y - b) + s(x - a, y - b)          ("- a" = window a occluded)

i.e. how much of the similarity needs window a of x *and* window b of y together. For the pairwise game of 6.6
(s a sum of cross-pair terms) it returns K[a, b] exactly. All (windows_x + 1)(windows_y + 1) similarities come from
one matrix product of the cached unmasked embedding plus the windows_x masked query embeddings with the unmasked
plus windows_y masked neighbour embeddings: windows_x + windows_y + 2 forward passes per pair (the two unmasked ones
are the engine's cached embeddings), and the masked query embeddings are shared by all K neighbours.

Spreading to cells (6.7: "through the window indicators with coverage normalisation as in 3.2"): at pixel pairs,
J(u, v) = sum_ab J[a, b] o_a(u) o_b(v) / (sum_a o_a(u) sum_b o_b(v)) with o = 1 - m the occlusion indicator
(pixels no window covers get 0), then averaged over the pixels of each cell pair. The product is separable, so the
cell matrix is C_x^T J C_y with C[a, U] = mean_{u in U} o_a(u) / sum_a' o_a'(u): two small matrix products. With
non-overlapping windows equal to the cells, C is the identity and the cell matrix is J itself.

Defaults: XAITK's window 50 and stride 20 at 224 px scaled to the input size (``sbsm.default_window``: 12 x 12 = 144
windows at 224 px); ``baseline="black"`` (XAITK ``fill=None``); cells = the model's feature grid when it exposes
one (7 x 7 for the default model, so the matrix is comparable with jointcam), else ``grid = size // 16`` per side.

Marginals: ``query_maps`` / ``neighbour_maps`` are the signed first-order occlusion maps from the same passes,
delta_a = s(x, y) - s(x - a, y) spread with the same coverage normalisation (3.2 without clipping or max-abs
scaling). ``extras``: the window boxes (y0, x0, y1, x1), the window-level matrices ``window_joint`` (K, N, N)
and the first-order window scores delta ``query_window_scores`` / ``neighbour_window_scores`` (K, N); clipped at
0 they are ``sbsm``'s window scores (cosine and ip metrics, same windows and fill).
"""

from __future__ import annotations

import numpy as np
import torch

from ..base import MethodOutput, register
from ..engine import PairContext
from ..masks import sliding_window_masks, window_boxes
from .sbsm import default_window, n_windows
from ..cells import cell_index_map, grid_cells


def mixed_derivative(sims: torch.Tensor) -> torch.Tensor:
    """(A + 1, B + 1) similarities, row/column 0 unmasked -> (A, B) J[a, b] = s00 - s_a0 - s_0b + s_ab (6.7)."""
    return sims[0, 0] - sims[1:, :1] - sims[:1, 1:] + sims[1:, 1:]


def spread_matrix(occluded: torch.Tensor, cell_ids: np.ndarray, n_cells: int) -> torch.Tensor:
    """(N, H, W) occlusion indicators -> (N, n_cells) C[a, U] = mean_{u in U} o_a(u) / sum_a' o_a'(u) (3.2)."""
    n = occluded.shape[0]
    occ = occluded.reshape(n, -1).double()
    cover = occ.sum(0)
    norm = occ / torch.where(cover > 0, cover, torch.ones_like(cover))  # 0 where nothing covers
    ids = torch.as_tensor(cell_ids.reshape(-1), dtype=torch.long, device=occ.device)
    sums = torch.zeros(n, n_cells, dtype=occ.dtype, device=occ.device).index_add_(1, ids, norm)
    counts = torch.bincount(ids, minlength=n_cells).clamp_min(1).to(occ)
    return sums / counts


def first_order(deltas: torch.Tensor, occluded: torch.Tensor) -> torch.Tensor:
    """(K, N) window scores -> (K, H, W) coverage-normalised maps (signed, unscaled)."""
    n, h, w = occluded.shape
    occ = occluded.reshape(n, h * w).to(deltas)
    cover = occ.sum(0)
    return (deltas @ occ / torch.where(cover > 0, cover, torch.ones_like(cover))).reshape(-1, h, w)


@register("jointsbsm", "Joint occlusion: discrete mixed derivative over window pairs of both images, spread to "
          "cells with coverage normalisation (6.7, 3.2); black-box", kind="joint", needs_features=False,
          passes=lambda k, side, size, params: ((1 + k) * n_windows(size, params), 0))
def attribute(ctx: PairContext, side: str = "both", window: int | tuple[int, int] | None = None,
              stride: int | tuple[int, int] | None = None, baseline: str | float | torch.Tensor = "black",
              grid: int | tuple[int, int] | None = None) -> MethodOutput:
    h, w = ctx.size
    dw, ds = default_window(max(h, w))
    window = window if window is not None else dw
    stride = stride if stride is not None else ds
    if grid is None:
        grid = tuple(ctx.query_features.shape[-2:]) if ctx.model.has_features else (max(1, h // 16), max(1, w // 16))
    grid = (int(grid), int(grid)) if isinstance(grid, (int, np.integer)) else (int(grid[0]), int(grid[1]))
    keep = torch.from_numpy(sliding_window_masks((h, w), window, stride)).to(ctx.device)
    occluded = 1.0 - keep
    n = int(keep.shape[0])
    cells = grid_cells(grid, (h, w))
    spread = spread_matrix(occluded, cell_index_map(cells), grid[0] * grid[1])  # (N, cells)

    ex = torch.cat([ctx.query_embedding, ctx.embed_masked(ctx.query, keep, baseline)])  # (N + 1, D)
    joints, windows, qdelta, ndelta = [], [], [], []
    for k in range(ctx.k):
        ey = torch.cat([ctx.neighbour_embeddings[k : k + 1], ctx.embed_masked(ctx.neighbours[k], keep, baseline)])
        sims = ctx.model.similarity(ex, ey).double()  # (N + 1, N + 1): every combination, one product
        jw = mixed_derivative(sims)
        windows.append(jw)
        joints.append(spread.T @ jw @ spread)
        qdelta.append(sims[0, 0] - sims[1:, 0])
        ndelta.append(sims[0, 0] - sims[0, 1:])

    out = MethodOutput(params={"window": window, "stride": stride, "grid": grid, "n_windows": n,
                               "baseline": baseline if not isinstance(baseline, torch.Tensor) else "tensor"})
    out.joint = torch.stack(joints).float().cpu().numpy()
    out.query_cells = cells
    out.neighbour_cells = cells
    if side in ("query", "both"):
        out.query_maps = first_order(torch.stack(qdelta), occluded).float().cpu().numpy()
    if side in ("neighbour", "both"):
        out.neighbour_maps = first_order(torch.stack(ndelta), occluded).float().cpu().numpy()
    out.extras = {"windows": window_boxes((h, w), window, stride),
                  "window_joint": torch.stack(windows).float().cpu().numpy(),
                  "query_window_scores": torch.stack(qdelta).float().cpu().numpy(),
                  "neighbour_window_scores": torch.stack(ndelta).float().cpu().numpy()}
    return out
