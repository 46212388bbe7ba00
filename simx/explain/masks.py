"""Shared mask generation for the perturbation methods (methods.md 3.1, 3.2, 3.3, 3.5, 3.6).

Every mask here is a *keep* mask: 1 = the pixel is kept, 0 = it is replaced by the baseline, so a masked image is
``m * x + (1 - m) * b`` (methods.md 1, "Masking"), which is what :meth:`PairContext.embed_masked` composes.

* :func:`sliding_window_masks` -- XAITK ``SlidingWindow`` semantics (methods.md 3.2): window origins
  0, stride, 2 * stride, ... < side, then all shifted by ``(window - (side - last_origin)) // 2`` so the grid of
  windows is centred (border windows hang over the image edge and are clipped). N = n_rows * n_cols masks,
  row-major (the same order as XAITK); ``m_i = 0`` inside window i.
* :class:`RiseMasks` -- RISE masks (methods.md 3.3): N binary grids s x s with P(cell = 1) = p, each upsampled
  bilinearly to ``(s + 1) * ceil(H / s)`` x ``(s + 1) * ceil(W / s)``, shifted by a random (dy, dx) in [0, cell)
  and cropped to H x W. The upsampling is exactly skimage's ``resize(order=1, mode="reflect",
  anti_aliasing=False)`` used by XAITK and SANE: pixel-centre alignment (source coordinate
  x = (j + 1/2) s / U - 1/2) and mirror reflection beyond the outer cell centres, written as two (U, s)
  interpolation matrices so a chunk of masks is one batched matrix product ``R[dy + rows] G C[dx + cols]^T``.
  Grids and shifts come from one numpy ``Generator``, so a seed fixes every mask; masks are produced chunk by
  chunk (N full-resolution masks never need to exist at once) and identically on every call, which is how the
  query side and every neighbour side share them.
* :func:`coalition_masks` -- superpixel coalitions z in {0, 1}^M -> pixel masks ``m(u) = z[segments(u)]``
  (methods.md 3.5 / 3.6).
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from ..errors import ExplainError


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def window_origins(side: int, window: int, stride: int) -> np.ndarray:
    """Top (or left) coordinates of the sliding windows along one axis (XAITK ``SlidingWindow``): origins
    0, stride, ... < side, shifted by half the overhang of the last window so the grid is centred."""
    if window < 1 or stride < 1:
        raise ExplainError(f"window and stride must be positive, got window={window}, stride={stride}")
    origins = np.arange(0, side, stride)
    overhang = window - (side - origins[-1])
    return origins - overhang // 2


def window_boxes(size: int | tuple[int, int], window: int | tuple[int, int],
                 stride: int | tuple[int, int]) -> np.ndarray:
    """(N, 4) int boxes ``(y0, x0, y1, x1)`` of the occluded windows, clipped to the image, row-major."""
    (h, w), (wh, ww), (sh, sw) = _pair(size), _pair(window), _pair(stride)
    rows, cols = window_origins(h, wh, sh), window_origins(w, ww, sw)
    r, c = np.repeat(rows, len(cols)), np.tile(cols, len(rows))
    return np.stack([np.maximum(r, 0), np.maximum(c, 0), np.minimum(r + wh, h), np.minimum(c + ww, w)], 1)


def sliding_window_masks(size: int | tuple[int, int], window: int | tuple[int, int],
                         stride: int | tuple[int, int]) -> np.ndarray:
    """(N, H, W) float32 keep-masks of a centred sliding window (1 = keep, 0 = occluded window)."""
    (h, w), (wh, ww), (sh, sw) = _pair(size), _pair(window), _pair(stride)
    rows, cols = window_origins(h, wh, sh), window_origins(w, ww, sw)
    yy, xx = np.arange(h), np.arange(w)
    row_in = (yy[None] >= rows[:, None]) & (yy[None] < rows[:, None] + wh)  # (nr, H)
    col_in = (xx[None] >= cols[:, None]) & (xx[None] < cols[:, None] + ww)  # (nc, W)
    occluded = row_in[:, None, :, None] & col_in[None, :, None, :]  # (nr, nc, H, W)
    return (~occluded).reshape(len(rows) * len(cols), h, w).astype(np.float32)


def bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) matrix of 1-D linear interpolation with pixel-centre alignment and mirror reflection at the
    borders (skimage ``resize(order=1, mode="reflect")`` / ``scipy.ndimage.zoom(grid_mode=True, mode="mirror")``)."""
    x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    if n_in > 1:
        period = 2 * (n_in - 1)
        x = np.abs(x) % period
        x = np.where(x > n_in - 1, period - x, x)
    else:
        x = np.zeros_like(x)
    i0 = np.clip(np.floor(x).astype(np.int64), 0, n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    t = x - i0
    m = np.zeros((n_out, n_in), np.float64)
    np.add.at(m, (np.arange(n_out), i0), 1 - t)
    np.add.at(m, (np.arange(n_out), i1), t)
    return torch.from_numpy(m.astype(np.float32))


class RiseMasks:
    """N seeded RISE masks of size H x W, generated on demand in chunks (see the module docstring).

    ``grids`` (N, s, s) float32 in {0, 1} and ``shifts`` (N, 2) int (dy, dx) fully determine the masks;
    ``masks[i:j]`` (or :meth:`chunk`) returns the (j - i, H, W) float32 tensor on ``device``.
    """

    def __init__(self, n: int, size: int | tuple[int, int], s: int = 8, p: float = 0.5,
                 rng: np.random.Generator | int | None = None, device: str | torch.device = "cpu"):
        if not 0.0 <= p <= 1.0:
            raise ExplainError(f"RISE keep probability p must be in [0, 1], got {p}")
        if s < 1 or n < 1:
            raise ExplainError(f"RISE needs n_samples >= 1 masks and a grid s >= 1, got n_samples={n}, s={s}")
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        h, w = _pair(size)
        cell = (math.ceil(h / s), math.ceil(w / s))
        grids = (rng.random((n, s, s)) < p).astype(np.float32)
        shifts = np.stack([rng.integers(0, cell[0], n), rng.integers(0, cell[1], n)], 1)
        self._init(grids, shifts, (h, w), device)

    def _init(self, grids: np.ndarray, shifts: np.ndarray, size: tuple[int, int], device) -> None:
        self.grids = np.asarray(grids, dtype=np.float32)
        self.shifts = np.asarray(shifts, dtype=np.int64)
        self.size = size
        self.s = int(self.grids.shape[-1])
        self.device = torch.device(device)
        h, w = size
        self.up_size = ((self.s + 1) * math.ceil(h / self.s), (self.s + 1) * math.ceil(w / self.s))
        self._rows = bilinear_matrix(self.s, self.up_size[0]).to(self.device)
        self._cols = bilinear_matrix(self.s, self.up_size[1]).to(self.device)

    @classmethod
    def from_arrays(cls, grids: np.ndarray, shifts: np.ndarray, size: int | tuple[int, int],
                    device: str | torch.device = "cpu") -> "RiseMasks":
        """Masks from given grids (N, s, s) and shifts (N, 2) (e.g. to reproduce another implementation)."""
        self = cls.__new__(cls)
        self._init(grids, shifts, _pair(size), device)
        return self

    def __len__(self) -> int:
        return int(self.grids.shape[0])

    def chunk(self, start: int, stop: int) -> torch.Tensor:
        """Masks ``start:stop`` as an (n, H, W) float32 tensor (two batched matrix products, no loops)."""
        g = torch.from_numpy(self.grids[start:stop]).to(self.device)
        sh = torch.from_numpy(self.shifts[start:stop]).to(self.device)
        h, w = self.size
        rows = self._rows[sh[:, :1] + torch.arange(h, device=self.device)]  # (n, H, s)
        cols = self._cols[sh[:, 1:] + torch.arange(w, device=self.device)]  # (n, W, s)
        return torch.bmm(torch.bmm(rows, g), cols.transpose(1, 2)).clamp_(0, 1)

    def __getitem__(self, item: slice) -> torch.Tensor:
        if not isinstance(item, slice) or item.step not in (None, 1):
            raise TypeError("RiseMasks supports contiguous slices only")
        start, stop, _ = item.indices(len(self))
        return self.chunk(start, stop)

    def all(self) -> np.ndarray:
        """All N masks at once, (N, H, W) float32 numpy (small N or small images only)."""
        return self.chunk(0, len(self)).cpu().numpy()


def rise_masks(n: int, size: int | tuple[int, int], s: int = 8, p: float = 0.5,
               rng: np.random.Generator | int | None = None) -> np.ndarray:
    """(N, H, W) float32 RISE keep-masks in [0, 1] (methods.md 3.3), seeded by ``rng``."""
    return RiseMasks(n, size, s, p, rng).all()


def coalition_masks(segments: np.ndarray | torch.Tensor, coalitions: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Superpixel coalitions -> pixel keep-masks: ``segments`` (H, W) int labels 0..M-1, ``coalitions`` (N, M)
    in {0, 1} -> (N, H, W) float32 tensor (on the coalitions' device), ``mask[n, u] = coalitions[n, segments[u]]``."""
    z = torch.as_tensor(coalitions, dtype=torch.float32)
    seg = torch.as_tensor(np.asarray(segments) if not isinstance(segments, torch.Tensor) else segments,
                          dtype=torch.long, device=z.device)
    if z.dim() == 1:
        z = z.unsqueeze(0)
    if int(seg.max()) >= z.shape[1]:
        raise ValueError(f"segments have labels up to {int(seg.max())} but coalitions have {z.shape[1]} players")
    return z[:, seg]


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) pairs covering range(n) in steps of ``size``."""
    size = max(1, int(size))
    for start in range(0, n, size):
        yield start, min(n, start + size)
