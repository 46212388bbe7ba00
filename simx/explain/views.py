"""Turning a joint (second-order) matrix into something a person can look at (methods.md 6.8).

Shared by the CLI (``simx explain`` with a joint method, ``--point X,Y`` / ``--box X0,Y0,X1,Y1``) and the dashboard;
not an explanation method. A joint explanation (``jointcam``, ``jointhessian``, ``jointsbsm``, ``shapleytaylor``)
holds ``joint`` (K, Nq, Nn): ``joint[k][i, j]`` is the interaction of query cell i with cell j of neighbour k, and
the geometry of the cells on each side (:mod:`simx.explain.cells`, geometry only, apart from the drawing here):

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

Display (6.8): heat maps are drawn by the one renderer (:mod:`simx.render`): a diverging colormap symmetric about zero, scaled by
the maximum absolute value of the map in that figure (stated in the figure); numbers returned by the functions
here are never normalised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

# -- cell geometry (simx.explain.cells; imported here for the projections and for callers of views) ----------

from .cells import (box_mask, cell_centres, cell_index_map, cell_of_point, cell_size, cells_for, grid_cells,  # noqa: E402,F401
                    n_cells, paint, point_weights, region_weights, segment_cells)

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
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        from ..render import CMAP, format_value, overlay, shared_limit

        lim = shared_limit([proj.map])  # the one colour rule (simx.render): diverging about 0, max |h|
        ax_n.imshow(overlay(nimg, proj.map, limit=lim), interpolation="nearest")
        bar = fig.colorbar(ScalarMappable(Normalize(-lim, lim), CMAP), ax=ax_n, fraction=0.046, pad=0.02)
        bar.set_ticks([-lim, 0.0, lim], labels=[format_value(v) for v in (-lim, 0.0, lim)])
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
