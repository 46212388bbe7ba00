"""The PNG figure of a pair view (the dashboard's download, ``simx explain --out``, notebooks).

One row per method: the query, its map, the neighbour's map, the neighbour. The map panels are exactly the
overlays the dashboard shows (:meth:`MapPanel.picture`, drawn pixel for pixel with nearest-neighbour
sampling), each with its colour bar in real values and its faithfulness line and warnings under it. Everything
draws on a fresh :class:`matplotlib.figure.Figure` with the Agg canvas: no pyplot, so no global figure state
leaks between calls, threads or a Streamlit session.
"""

from __future__ import annotations

import io
import os
from typing import Any, Mapping, Sequence

import numpy as np

from .colours import ALPHA, CMAP, format_value
from .panels import MapPanel, rows_of

#: Width of one picture column, inches.
COLUMN_IN = 2.9


def _colour_bar(fig, ax, panel: MapPanel) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    lo, hi = panel.baseline - panel.limit, panel.baseline + panel.limit
    bar = fig.colorbar(ScalarMappable(Normalize(lo, hi), CMAP), ax=ax, orientation="horizontal", fraction=0.06,
                       pad=0.03, aspect=30)
    bar.set_ticks([lo, panel.baseline, hi], labels=[format_value(v) for v in (lo, panel.baseline, hi)])
    bar.ax.tick_params(labelsize=7)
    lines = [("scaled per map" if panel.per_map else "one scale for the maps compared"), *(n.text for n in
                                                                                              panel.notes)]
    warn = any(n.warning for n in panel.notes)
    bar.set_label("\n".join(_wrap(t) for t in lines), fontsize=6.5, color="#b2182b" if warn else "#333333")


def _wrap(text: str, width: int = 58) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def _bare(ax, image: np.ndarray, title: str) -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def pair_figure(explanations: Sequence[Any], k: int = 0, per_map: bool = False, title: str = "",
                label: Mapping[str, Any] | None = None, alpha: float = ALPHA, dpi: int = 100):
    """A :class:`matplotlib.figure.Figure` of pair ``k`` of one or more explanations (one row each).

    Each row's maps share one scale (both sides; all neighbours of the explanation) unless ``per_map``; the
    colour bars give the real values at both ends and at the baseline. ``label`` (the human verdict) and
    ``title`` go into the heading.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = rows_of(explanations, k, per_map=per_map)
    if not rows:
        raise ValueError("pair_figure needs at least one explanation")
    fig = Figure(figsize=(4 * COLUMN_IN, 3.9 * len(rows) + 0.5), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(len(rows), 4, squeeze=False))
    for r, (explanation, (q, n)) in enumerate(zip(explanations, rows)):
        _bare(axes[r, 0], q.image, "query")
        _bare(axes[r, 3], n.image, f"neighbour {k}")
        for ax, panel in ((axes[r, 1], q), (axes[r, 2], n)):
            _bare(ax, panel.picture(alpha), panel.title)
            if panel.heat is not None:
                _colour_bar(fig, ax, panel)
        cost = explanation.cost
        axes[r, 0].set_ylabel(f"{explanation.method}\ns = {q.similarity:.4f}\n{cost.forward} fwd, "
                              f"{cost.backward} bwd, {cost.seconds:.2f} s", fontsize=8)
    head = title or "pair view"
    if label:
        head += f"  |  label: {label.get('verdict', '')}" + (f" ({label['reason']})" if label.get("reason") else "")
    fig.suptitle(head + "\nred: for the match, blue: against it, white: the map's baseline", fontsize=9)
    return fig


def figure_png(fig, path: str | os.PathLike | None = None) -> bytes:
    """PNG bytes of a figure (saved to ``path`` too when given, written whole: a temporary file renamed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    if path is not None:
        write_atomic(path, data)
    return data


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``, so a reader
    (or a crash) never sees half a file."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def pair_png(explanations: Sequence[Any], k: int = 0, per_map: bool = False, title: str = "",
             label: Mapping[str, Any] | None = None, alpha: float = ALPHA,
             path: str | os.PathLike | None = None) -> bytes:
    """PNG bytes of :func:`pair_figure` (written to ``path`` too when given)."""
    return figure_png(pair_figure(explanations, k, per_map=per_map, title=title, label=label, alpha=alpha), path)


__all__ = ["pair_figure", "pair_png", "figure_png", "write_atomic"]
