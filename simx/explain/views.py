"""Turning a joint (second-order) matrix into something a person can look at (methods.md 6.8).

Shared by the CLI (``simx explain`` with a joint method, ``--point X,Y`` / ``--box X0,Y0,X1,Y1``) and the dashboard;
not an explanation method. A joint explanation (``jointcam``, ``jointhessian``, ``jointsbsm``, ``shapleytaylor``)
holds ``joint`` (K, Nq, Nn): ``joint[k][i, j]`` is the interaction of query cell i with cell j of neighbour k, and
the geometry of the cells on each side:

* ``{"kind": "grid", "shape": (h, w), "size": (H, W)}``: an h x w grid over the H x W model input; cell index
  i = r * w + c; the cell containing pixel (x, y) is (floor(y h / H), floor(x w / W)) (6.8);
* ``{"kind": "segments", "segments": int array}``: superpixels; ``segments`` is (H, W) (one geometry for all pairs)
  or (K, H, W) (one per neighbour); the cell of a pixel is its segment label (0 .. n - 1). Joint matrices of
  pairs with fewer segments than the widest are zero-padded.

All coordinates are model-input pixels (x right, y down), the frame of ``Explanation.query_image``.

What is offered (6.8):

* :func:`project_point`: a query point -> heat map on the neighbour: the row of J of the cell containing the point,
  or (default for grids) the bilinear blend of the rows of the four nearest cell centres of an edge-padded J
  (Zhu et al.); painted on the neighbour by bilinear upsampling (grids) or per segment (superpixels);
* :func:`project_region`: a query region (binary mask or box) -> J^T a, a_i = fraction of cell i covered by the region;
* both with ``reverse=True`` for the neighbour -> query direction (J a, columns instead of rows);
* :func:`correspondences`: top-k lines between cell centres: mutual nearest neighbours (i = argmax_i' J[i', j*(i)],
  j*(i) = argmax_j J[i, j]) with J > 0, sorted by weight;
* :func:`marginals`: row sums (a first-order map on the query) and column sums (on the neighbour);
* :func:`draw_joint`: one matplotlib figure with both images and the lines, or the projected heat map.

Display normalisation (6.8 / rule 5): heat maps are drawn with a diverging colormap symmetric about zero, scaled by
the maximum absolute value of the map in that figure (stated in the figure); numbers returned by the functions
here are never normalised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# -- cell geometry ------------------------------------------------------------------------------------------------


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


# -- joint matrices --------------------------------------------------------------------------------------------------


def joint_of(explanation: Any, k: int = 0) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    """(J (Nq, Nn) of pair k, trimmed to the pair's real cells; query cells; neighbour cells of pair k)."""
    if getattr(explanation, "joint", None) is None:
        raise ValueError(f"explanation of method {getattr(explanation, 'method', '?')!r} has no joint matrix; use a "
                         "joint method (jointcam, jointhessian, jointsbsm, shapleytaylor)")
    j = np.asarray(explanation.joint)[k]
    qc, nc = cells_for(explanation.query_cells, 0), cells_for(explanation.neighbour_cells, k)
    return j[: n_cells(qc), : n_cells(nc)], qc, nc


@dataclass
class Projection:
    """A projection through J: ``values`` (N_target,) per target cell, ``map`` (H, W) painted on the target image,
    ``weights`` (N_source,) the source cell weights (a), ``target`` "neighbour" or "query"."""

    values: np.ndarray
    map: np.ndarray
    weights: np.ndarray
    target: str


def _project(explanation: Any, a_fn, k: int, reverse: bool, smooth: bool) -> Projection:
    j, qc, nc = joint_of(explanation, k)
    src, dst = (nc, qc) if reverse else (qc, nc)
    a = a_fn(src)
    values = j @ a if reverse else j.T @ a
    return Projection(values=values, map=paint(dst, values, smooth=smooth), weights=a,
                      target="query" if reverse else "neighbour")


def project_point(explanation: Any, point: Sequence[float], k: int = 0, reverse: bool = False,
                  interpolate: bool = True, smooth: bool = True) -> Projection:
    """A point (x, y) on the query -> heat map on neighbour k (``reverse``: a point on the neighbour -> heat map on
    the query). Without ``interpolate`` the values are exactly the row (column) of J of the containing cell."""
    return _project(explanation, lambda cells: point_weights(cells, point, interpolate=interpolate), k, reverse, smooth)


def project_region(explanation: Any, region: np.ndarray | Sequence[float], k: int = 0, reverse: bool = False,
                   smooth: bool = True) -> Projection:
    """A region of the query (an (H, W) mask or a box (x0, y0, x1, y1)) -> J^T a on neighbour k, a_i the covered
    fraction of cell i (6.8); ``reverse``: a region of the neighbour -> J a on the query."""
    return _project(explanation, lambda cells: region_weights(cells, region), k, reverse, smooth)


@dataclass
class Correspondence:
    """One line of the top-k view: query cell i <-> neighbour cell j with weight J[i, j] > 0, between centres."""

    query_cell: int
    neighbour_cell: int
    weight: float
    query_xy: tuple[float, float]
    neighbour_xy: tuple[float, float]


def mutual_matches(j: np.ndarray, top_k: int | None = 12) -> list[tuple[int, int, float]]:
    """(i, j, J[i, j]) for mutual nearest neighbours with J > 0, strongest first, at most ``top_k`` (6.8)."""
    j = np.asarray(j, dtype=np.float64)
    if j.size == 0:
        return []
    best_j = j.argmax(axis=1)
    best_i = j.argmax(axis=0)
    rows = np.arange(j.shape[0])
    keep = (best_i[best_j] == rows) & (j[rows, best_j] > 0)
    pairs = [(int(i), int(best_j[i]), float(j[i, best_j[i]])) for i in rows[keep]]
    pairs.sort(key=lambda t: -t[2])
    return pairs if top_k is None else pairs[:top_k]


def correspondences(explanation: Any, k: int = 0, top_k: int | None = 12) -> list[Correspondence]:
    """Top-k correspondence lines of pair k (6.8)."""
    j, qc, nc = joint_of(explanation, k)
    cq, cn = cell_centres(qc), cell_centres(nc)
    return [Correspondence(i, jj, w, (float(cq[i, 0]), float(cq[i, 1])), (float(cn[jj, 0]), float(cn[jj, 1])))
            for i, jj, w in mutual_matches(j, top_k)]


def marginals(explanation: Any, k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(row sums (Nq,), column sums (Nn,)) of J for pair k: first-order maps on the query and the neighbour
    (6.8; for jointcam they are searchcam's maps when the head has no bias, 6.6)."""
    j, _, _ = joint_of(explanation, k)
    return j.sum(axis=1), j.sum(axis=0)


def marginal_maps(explanation: Any, k: int = 0, smooth: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The marginals painted on the query and the neighbour, (H, W) each."""
    rows, cols = marginals(explanation, k)
    _, qc, nc = joint_of(explanation, k)
    return paint(qc, rows, smooth=smooth), paint(nc, cols, smooth=smooth)


# -- the figure ------------------------------------------------------------------------------------------------------


def _boundaries(ids: np.ndarray) -> np.ndarray:
    b = np.zeros(ids.shape, dtype=bool)
    b[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    b[1:, :] |= ids[1:, :] != ids[:-1, :]
    return b


def _show(ax, image: np.ndarray, cells: dict[str, Any]) -> None:
    ax.imshow(image)
    if cells.get("kind") == "segments":
        edge = _boundaries(cell_index_map(cells))
        overlay = np.zeros((*edge.shape, 4), dtype=np.float32)
        overlay[edge] = (1.0, 1.0, 0.2, 0.6)
        ax.imshow(overlay)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_joint(explanation: Any, k: int = 0, point: Sequence[float] | None = None,
               box: Sequence[float] | None = None, top_k: int = 12, path: str | Path | None = None):
    """Draw pair ``k`` of a joint explanation as a :class:`matplotlib.figure.Figure` (Agg, no pyplot).

    Without ``point``/``box``: the query and the neighbour side by side with the top-k mutual-nearest-neighbour
    correspondence lines (colour and width by weight, 6.8). With ``point=(x, y)`` or ``box=(x0, y0, x1, y1)`` in
    query input pixels: the marker / box on the query and the projected heat map (J row, or J^T a) on the
    neighbour, diverging colormap symmetric about 0, scaled by the map's max |value| (stated in the title).
    Saved to ``path`` when given (format from the suffix).
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import ConnectionPatch, Rectangle

    j, qc, nc = joint_of(explanation, k)
    qimg = np.asarray(explanation.query_image)
    nimg = np.asarray(explanation.neighbour_images)[k]
    fig = Figure(figsize=(10.5, 5.6), dpi=100)
    FigureCanvasAgg(fig)
    ax_q, ax_n = fig.subplots(1, 2)
    _show(ax_q, qimg, qc)
    _show(ax_n, nimg, nc)
    method = getattr(explanation, "method", "joint")
    sims = getattr(explanation, "similarities", None)
    sim_txt = f", s = {float(np.asarray(sims)[k]):.4f}" if sims is not None else ""
    fig.suptitle(f"{method}: query <-> neighbour {k}{sim_txt}  (J {j.shape[0]} x {j.shape[1]})", fontsize=11)
    ax_q.set_title("query")

    if point is not None or box is not None:
        if point is not None:
            proj = project_point(explanation, point, k)
            ax_q.plot([point[0]], [point[1]], marker="+", color="yellow", markersize=18, markeredgewidth=3)
            ax_q.plot([point[0]], [point[1]], marker="o", color="black", markersize=5)
            what = f"point ({point[0]:.0f}, {point[1]:.0f})"
        else:
            proj = project_region(explanation, box, k)
            x0, y0, x1, y1 = box
            ax_q.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="yellow", linewidth=2.5))
            what = f"box ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f})"
        lim = float(np.abs(proj.map).max()) or 1.0
        im = ax_n.imshow(proj.map, cmap="RdBu_r", vmin=-lim, vmax=lim, alpha=0.6)
        fig.colorbar(im, ax=ax_n, fraction=0.046, pad=0.02)
        ax_n.set_title(f"projection of the {what}\n(diverging, scaled by max |h| = {lim:.3g})", fontsize=9)
    else:
        lines = correspondences(explanation, k, top_k)
        ax_n.set_title(f"neighbour {k}: top-{len(lines)} mutual-NN correspondences (J > 0)", fontsize=9)
        if lines:
            wmax = max(c.weight for c in lines)
            cmap = colormaps["plasma"]
            for rank, c in enumerate(lines):
                t = c.weight / wmax
                col = cmap(0.15 + 0.8 * t)
                fig.add_artist(ConnectionPatch(xyA=c.query_xy, xyB=c.neighbour_xy, coordsA="data", coordsB="data",
                                               axesA=ax_q, axesB=ax_n, color=col, linewidth=0.8 + 2.7 * t, alpha=0.9))
                for ax, xy in ((ax_q, c.query_xy), (ax_n, c.neighbour_xy)):
                    ax.plot([xy[0]], [xy[1]], "o", color=col, markersize=4 + 3 * t, markeredgecolor="black")
                ax_q.annotate(str(rank + 1), c.query_xy, color="white", fontsize=7, xytext=(3, 3),
                              textcoords="offset points")
            fig.text(0.5, 0.02, f"line colour/width: J[i, j] / max = {wmax:.3g} (normalised per figure)",
                     ha="center", fontsize=8)
    if path is not None:
        fig.savefig(str(path), bbox_inches="tight")
    return fig


__all__ = ["grid_cells", "segment_cells", "cells_for", "cell_size", "n_cells", "cell_index_map", "cell_centres",
           "cell_of_point", "point_weights", "box_mask", "region_weights", "paint", "joint_of", "Projection",
           "project_point", "project_region", "Correspondence", "mutual_matches", "correspondences", "marginals",
           "marginal_maps", "draw_joint"]
