"""Pictures and JSON summaries of explanations, for the CLI, reports and notebooks.

Everything here draws on a fresh :class:`matplotlib.figure.Figure` with the Agg canvas: no pyplot, so no global
figure state leaks between calls, threads or a Streamlit session. Maps are min-max normalised for display only
(methods.md 1, rule 5) and overlaid on the images exactly as the model saw them (``Explanation.query_image``,
``Explanation.neighbour_images``), so preprocessing (letterboxing, crops) never has to be guessed.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .base import Explanation
from .metrics import _jsonable

#: Colormap of map overlays.
CMAP = "turbo"
#: Opacity of map overlays.
ALPHA = 0.5


def display_map(m: np.ndarray) -> np.ndarray:
    """Per-map min-max to [0, 1] for display (a constant or empty map becomes all zeros; NaN -> 0)."""
    m = np.nan_to_num(np.asarray(m, dtype=np.float64))
    span = float(m.max() - m.min()) if m.size else 0.0
    return (m - m.min()) / span if span > 0 else np.zeros_like(m)


def faithfulness_scores(explanation: Explanation) -> dict[str, Any] | None:
    """The faithfulness result already computed for ``explanation`` (default parameters first), else None.
    Never computes it (that costs 202 forwards per map): call ``explanation.faithfulness()`` first."""
    if "faithfulness" in explanation.scores:
        return explanation.scores["faithfulness"]
    for key in sorted(explanation.scores):
        if key.startswith("faithfulness"):
            return explanation.scores[key]
    return None


def _side_scores(scores: dict[str, Any] | None, side: str, k: int) -> str:
    if not scores or side not in scores:
        return ""
    s = scores[side]
    ins, dele = s["insertion"][k], s["deletion"][k]
    fmt = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
    return f"insertion AUC {fmt(ins)} (higher better) / deletion AUC {fmt(dele)} (lower better)"


def pair_figure(explanation: Explanation, k: int = 0, path: str | os.PathLike | None = None,
                scores: bool = True, figsize: tuple[float, float] = (9.0, 5.2), dpi: int = 100) -> Figure:
    """The query and neighbour ``k`` side by side as the model saw them, each with its map overlaid (turbo,
    alpha 0.5, min-max scaled for display), titled with the method, the similarity and the cost; with
    ``scores`` the insertion/deletion AUC of each side when ``explanation.faithfulness()`` has run. A side
    without a map shows the bare image. Saves a PNG of ``figsize`` x ``dpi`` pixels when ``path`` is given.
    """
    if not 0 <= k < explanation.k:
        raise IndexError(f"pair {k} out of range: the explanation has {explanation.k} neighbour(s)")
    if explanation.query_image is None or explanation.neighbour_images is None:
        raise ValueError("this explanation carries no images to draw on")
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    fscores = faithfulness_scores(explanation) if scores else None
    panels = [
        ("query", explanation.query_image, explanation.query_maps, "query"),
        ("neighbour", explanation.neighbour_images[k], explanation.neighbour_maps, f"neighbour {k}"),
    ]
    axes = fig.subplots(1, 2)
    mappable = None
    for ax, (side, img, maps, label) in zip(axes, panels):
        ax.imshow(img, interpolation="nearest")
        if maps is not None:
            m = display_map(maps[k])
            h, w = img.shape[:2]
            mappable = ax.imshow(m, cmap=CMAP, alpha=ALPHA, vmin=0, vmax=1, interpolation="bilinear",
                                 extent=(-0.5, w - 0.5, h - 0.5, -0.5))
            title = f"{label}: map w.r.t. the {'neighbour' if side == 'query' else 'query'}"
        else:
            title = f"{label} (no map on this side)"
        ax.set_title(title, fontsize=9)
        line = _side_scores(fscores, side, k)
        if line:
            ax.set_xlabel(line, fontsize=7.5)
        ax.set_xticks([])
        ax.set_yticks([])
    if mappable is not None:
        cbar = fig.colorbar(mappable, ax=list(axes), fraction=0.025, pad=0.02)
        cbar.set_label("relevance (min-max per map)", fontsize=7.5)
        cbar.ax.tick_params(labelsize=7)
    cost = explanation.cost
    sim = float(explanation.similarities[k])
    fig.suptitle(
        f"{explanation.method}   similarity {sim:.4f}   cost: {cost.forward} forward, {cost.backward} backward, "
        f"{cost.seconds:.2f} s",
        fontsize=10,
    )
    if path is not None:
        fig.savefig(os.fspath(path), format="png", dpi=dpi)
    return fig


def _small(value: Any, limit: int = 1024) -> Any:
    """Arrays bigger than ``limit`` elements are summarised by shape and dtype instead of listed."""
    arr = np.asarray(value) if isinstance(value, np.ndarray) or hasattr(value, "shape") else None
    if arr is not None and arr.size > limit:
        return {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    if isinstance(value, dict):
        return {str(k): _small(v, limit) for k, v in value.items()}
    return value


def explanation_to_json(explanation: Explanation, k: int | None = None, maps: bool = False) -> dict[str, Any]:
    """A JSON-safe summary: method, similarities, effective parameters, cost, faithfulness scores (when
    computed), map shapes and extras (small ones as lists); with ``maps`` the (H, W) maps as nested lists.
    ``k`` restricts everything per-pair to neighbour ``k``. NaN becomes null."""
    pairs = range(explanation.k) if k is None else [k]
    if k is not None and not 0 <= k < explanation.k:
        raise IndexError(f"pair {k} out of range: the explanation has {explanation.k} neighbour(s)")
    out: dict[str, Any] = {
        "method": explanation.method,
        "k": explanation.k,
        "params": _jsonable(explanation.params),
        "cost": explanation.cost.to_dict(),
        "sides": [s for s, m in (("query", explanation.query_maps), ("neighbour", explanation.neighbour_maps))
                  if m is not None],
        "map_size": None,
        "pairs": [],
    }
    for m in (explanation.query_maps, explanation.neighbour_maps):
        if m is not None:
            out["map_size"] = list(np.asarray(m).shape[-2:])
            break
    fs = faithfulness_scores(explanation)
    for i in pairs:
        pair: dict[str, Any] = {"neighbour": int(i), "similarity": _jsonable(explanation.similarities[i])}
        for side in out["sides"]:
            if fs and side in fs:
                pair[f"{side}_insertion"] = fs[side]["insertion"][i]
                pair[f"{side}_deletion"] = fs[side]["deletion"][i]
            if maps:
                m = explanation.query_maps if side == "query" else explanation.neighbour_maps
                pair[f"{side}_map"] = _jsonable(np.asarray(m[i], dtype=np.float32))
        out["pairs"].append(pair)
    out["similarities"] = [p["similarity"] for p in out["pairs"]]
    if fs:
        summary = {"background": fs.get("background"), "steps": fs.get("steps")}
        for side in out["sides"]:
            if side in fs:
                summary[side] = {"insertion_mean": fs[side]["insertion_mean"],
                                 "deletion_mean": fs[side]["deletion_mean"]}
        out["faithfulness"] = summary
    other = {key: v for key, v in explanation.scores.items() if not key.startswith("faithfulness")}
    if other:
        out["scores"] = _jsonable(_small(other))
    if explanation.extras:
        out["extras"] = _jsonable(_small(explanation.extras))
    return out


__all__ = ["pair_figure", "explanation_to_json", "display_map", "faithfulness_scores"]
