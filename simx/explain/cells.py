"""Cell geometry of joint (second-order) explanations: which input pixels form each cell, and back (methods.md 6.8).

A joint method (``jointcam``, ``jointhessian``, ``jointsbsm``, ``shapleytaylor``) returns its matrix over cells and
describes the cells of each side as a small dict:

* ``{"kind": "grid", "shape": (h, w), "size": (H, W)}``: an h x w grid over the H x W model input; cell index
  i = r * w + c; the cell containing pixel (x, y) is (floor(y h / H), floor(x w / W));
* ``{"kind": "segments", "segments": int array}``: superpixels; ``segments`` is (H, W) (one geometry for all pairs)
  or (K, H, W) (one per neighbour); the cell of a pixel is its segment label (0 .. n - 1).

All coordinates are model-input pixels (x right, y down). This module is geometry only: the methods build their
cells with it, :mod:`simx.explain.views` projects through the matrix, and drawing lives with the renderer.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def grid_cells(shape: Sequence[int], size: Sequence[int]) -> dict[str, Any]:
    """Geometry of an h x w cell grid over an H x W input."""
    return {"kind": "grid", "shape": (int(shape[0]), int(shape[1])), "size": (int(size[0]), int(size[1]))}


def segment_cells(segments: np.ndarray) -> dict[str, Any]:
    """Geometry of superpixels: ``segments`` (H, W) or (K, H, W) integer labels 0 .. n - 1."""
    seg = np.asarray(segments).astype(np.int32)
    counts = [int(s.max()) + 1 for s in (seg if seg.ndim == 3 else seg[None])]
    return {"kind": "segments", "segments": seg, "n": counts if seg.ndim == 3 else counts[0],
            "size": tuple(int(v) for v in seg.shape[-2:])}


def cells_for(cells: dict[str, Any], k: int = 0) -> dict[str, Any]:
    """The geometry of pair ``k`` (per-neighbour superpixels are (K, H, W))."""
    if cells["kind"] == "segments" and np.asarray(cells["segments"]).ndim == 3:
        seg = np.asarray(cells["segments"])[k]
        return {"kind": "segments", "segments": seg, "n": int(seg.max()) + 1, "size": tuple(seg.shape)}
    return cells


def cell_size(cells: dict[str, Any]) -> tuple[int, int]:
    """(H, W) of the input the cells live on."""
    if cells["kind"] == "grid":
        return tuple(cells["size"])  # type: ignore[return-value]
    return tuple(np.asarray(cells["segments"]).shape[-2:])  # type: ignore[return-value]


def n_cells(cells: dict[str, Any], k: int = 0) -> int:
    c = cells_for(cells, k)
    if c["kind"] == "grid":
        return int(c["shape"][0] * c["shape"][1])
    return int(np.asarray(c["segments"]).max()) + 1


def cell_index_map(cells: dict[str, Any], k: int = 0) -> np.ndarray:
    """(H, W) int array: the cell of every input pixel (grid: floor(pixel * h / H), 6.8)."""
    c = cells_for(cells, k)
    if c["kind"] == "segments":
        return np.asarray(c["segments"]).astype(np.int64)
    (h, w), (hh, ww) = c["shape"], c["size"]
    rows = np.minimum(np.arange(hh) * h // hh, h - 1)
    cols = np.minimum(np.arange(ww) * w // ww, w - 1)
    return rows[:, None] * w + cols[None, :]


def cell_centres(cells: dict[str, Any], k: int = 0) -> np.ndarray:
    """(N, 2) centres (x, y) in input pixels: ((c + 0.5) W / w, (r + 0.5) H / h) for grids (6.8), the pixel
    centroid for segments."""
    c = cells_for(cells, k)
    if c["kind"] == "grid":
        (h, w), (hh, ww) = c["shape"], c["size"]
        r, col = np.divmod(np.arange(h * w), w)
        return np.stack([(col + 0.5) * ww / w, (r + 0.5) * hh / h], axis=1)
    ids = cell_index_map(c)
    n = int(ids.max()) + 1
    ys, xs = np.indices(ids.shape)
    cnt = np.maximum(np.bincount(ids.ravel(), minlength=n), 1)
    # + 0.5: the centre of pixel (x, y) is at x + 0.5 in continuous coordinates
    return np.stack([np.bincount(ids.ravel(), xs.ravel() + 0.5, n) / cnt,
                     np.bincount(ids.ravel(), ys.ravel() + 0.5, n) / cnt], axis=1)


def cell_of_point(cells: dict[str, Any], point: Sequence[float], k: int = 0) -> int:
    """Index of the cell containing the input pixel ``point`` = (x, y)."""
    ids = cell_index_map(cells, k)
    hh, ww = ids.shape
    x = int(np.clip(np.floor(point[0]), 0, ww - 1))
    y = int(np.clip(np.floor(point[1]), 0, hh - 1))
    return int(ids[y, x])


def point_weights(cells: dict[str, Any], point: Sequence[float], k: int = 0, interpolate: bool = True) -> np.ndarray:
    """(N,) weights of the cells for a point: one-hot on the containing cell, or (grids, ``interpolate``) the
    bilinear weights of the four nearest cell centres, edge-padded (6.8, Zhu et al.). They sum to 1."""
    c = cells_for(cells, k)
    n = n_cells(c)
    a = np.zeros(n, dtype=np.float64)
    if c["kind"] != "grid" or not interpolate:
        a[cell_of_point(c, point)] = 1.0
        return a
    (h, w), (hh, ww) = c["shape"], c["size"]
    u = float(np.clip(point[0] * w / ww - 0.5, 0, w - 1))  # continuous column, 0 at the first cell centre
    v = float(np.clip(point[1] * h / hh - 0.5, 0, h - 1))
    c0, r0 = int(np.floor(u)), int(np.floor(v))
    c1, r1 = min(c0 + 1, w - 1), min(r0 + 1, h - 1)
    fu, fv = u - c0, v - r0
    for r, col, wt in ((r0, c0, (1 - fu) * (1 - fv)), (r0, c1, fu * (1 - fv)), (r1, c0, (1 - fu) * fv),
                       (r1, c1, fu * fv)):
        a[r * w + col] += wt
    return a


def box_mask(box: Sequence[float], size: Sequence[int]) -> np.ndarray:
    """(H, W) float mask of a box (x0, y0, x1, y1) in input pixels (x1, y1 exclusive; fractional edges count
    the covered fraction of the border pixels)."""
    hh, ww = int(size[0]), int(size[1])
    x0, y0, x1, y1 = (float(v) for v in box)
    xs, ys = np.arange(ww), np.arange(hh)
    fx = np.clip(np.minimum(xs + 1, x1) - np.maximum(xs, x0), 0, 1)
    fy = np.clip(np.minimum(ys + 1, y1) - np.maximum(ys, y0), 0, 1)
    return (fy[:, None] * fx[None, :]).astype(np.float64)


def region_weights(cells: dict[str, Any], region: np.ndarray | Sequence[float], k: int = 0) -> np.ndarray:
    """(N,) a_i = fraction of cell i covered by the region (6.8): a (H, W) mask in [0, 1] or a box
    (x0, y0, x1, y1). For grids this is average-pooling the mask to h x w; for superpixels, a selected superpixel
    gets 1. Linear in the mask."""
    ids = cell_index_map(cells, k)
    mask = np.asarray(region, dtype=np.float64)
    if mask.ndim == 1:
        mask = box_mask(mask, ids.shape)
    if mask.shape != ids.shape:
        raise ValueError(f"region mask is {mask.shape} but the cells live on {ids.shape}")
    n = n_cells(cells, k)
    return np.bincount(ids.ravel(), mask.ravel(), n) / np.maximum(np.bincount(ids.ravel(), minlength=n), 1)


def paint(cells: dict[str, Any], values: np.ndarray, k: int = 0, smooth: bool = True) -> np.ndarray:
    """Cell values (N,) -> (H, W) float32 map: grids are upsampled bilinearly (align_corners=False, as the engine
    does; ``smooth=False``: nearest), superpixels painted with their value."""
    c = cells_for(cells, k)
    values = np.asarray(values, dtype=np.float32)
    if c["kind"] == "grid" and smooth:
        (h, w), (hh, ww) = c["shape"], c["size"]
        t = torch.from_numpy(values[: h * w].reshape(1, 1, h, w).copy())
        return F.interpolate(t, size=(hh, ww), mode="bilinear", align_corners=False)[0, 0].numpy()
    ids = cell_index_map(c)
    return values[ids].astype(np.float32)
