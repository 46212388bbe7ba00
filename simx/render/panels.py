"""What every view draws for one pair: the map panels of an explanation, their shared scale and their notes.

The dashboard, the PNG figure, the HTML report and the CLI all go through :func:`pair_panels`, so the same
explanation gives the same overlay pixels, the same scale and the same sentences everywhere. A panel's notes
carry the faithfulness numbers with their direction, and the warnings: a map no better than a random map, a map
whose mass sits on the letterbox padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .colours import ALPHA, legend, map_limit, overlay, scale_note, shared_limit

SIDES = ("query", "neighbour")


@dataclass
class Note:
    """One line under a map; ``warning`` lines are drawn in red / as warnings."""

    text: str
    warning: bool = False


@dataclass
class MapPanel:
    """One map of one pair, ready to draw: the picture, the map, its baseline and the scale it is drawn at."""

    method: str
    side: str
    k: int
    image: np.ndarray
    heat: np.ndarray | None
    baseline: float
    limit: float
    per_map: bool
    similarity: float
    notes: list[Note] = field(default_factory=list)

    @property
    def title(self) -> str:
        other = "neighbour" if self.side == "query" else "query"
        who = "query" if self.side == "query" else f"neighbour {self.k}"
        return f"{self.method}: {who}" + (f" (w.r.t. the {other})" if self.heat is not None else " (no map)")

    def picture(self, alpha: float = ALPHA, outline: bool = True) -> np.ndarray:
        """The overlay every view shows for this panel (uint8 (H, W, 3))."""
        return overlay(self.image, self.heat, limit=self.limit, baseline=self.baseline, alpha=alpha,
                       outline=outline)

    def legend(self, width: int = 320) -> np.ndarray:
        """This panel's colour bar with its real values."""
        return legend(self.limit, self.baseline, width=width, per_map=self.per_map)

    @property
    def scale(self) -> str:
        return scale_note(self.limit, self.baseline, self.per_map)


def faithfulness_of(explanation: Any) -> dict[str, Any] | None:
    """The faithfulness result kept with an explanation: the full curve when computed, else the estimate."""
    scores = getattr(explanation, "scores", None) or {}
    return scores.get("faithfulness") or scores.get("faithfulness_estimate")


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.1f}"


def faithfulness_notes(explanation: Any, side: str, k: int) -> list[Note]:
    """Faithfulness lines of one map: the two AUCs with their direction, and the random-map flag."""
    f = faithfulness_of(explanation)
    if not f or side not in f:
        return []
    s = f[side]
    kind = f"estimate, {f['steps']} steps" if f.get("estimate") else f"{f['steps']} steps"
    notes = [Note(f"insertion {_fmt(s['insertion'][k])} (higher is better) · deletion {_fmt(s['deletion'][k])} "
                  f"(lower is better) · {kind}, fill {f.get('background')}")]
    if "better_than_random" in s and not s["better_than_random"][k]:
        notes.append(Note(f"no better than a random map: insertion - deletion = {_fmt(s['margin'][k])} "
                          f"(a random map scores 0 in expectation; needs > {_fmt(f.get('random_margin'))})",
                          warning=True))
    return notes


def padding_note(explanation: Any, side: str, k: int, heat: np.ndarray, baseline: float) -> list[Note]:
    """A warning when most of the map's positive mass lies on the letterbox padding."""
    from .reading import PADDING_WARNING, padding_share

    f = faithfulness_of(explanation)
    share = None
    if f and side in f and "padding_share" in f[side]:
        share = f[side]["padding_share"][k]
    elif hasattr(explanation, "box"):
        share = padding_share(heat, explanation.box(side, k), baseline)
    if share is not None and share > PADDING_WARNING:
        return [Note(f"{share:.0%} of this map's positive mass is on the padding around the image, not on the "
                     "image", warning=True)]
    return []


def explanation_limit(explanation: Any, per_map: bool = False, k: int | None = None) -> float | None:
    """The shared scale of every map of an explanation (both sides, all K pairs); None with ``per_map``."""
    if per_map:
        return None
    maps, bases = [], []
    for side in SIDES:
        m = explanation.maps(side)
        if m is None:
            continue
        for i in range(len(m)) if k is None else [k]:
            maps.append(m[i])
            bases.append(explanation.baseline(side, i))
    return shared_limit(maps, bases)


def pair_panels(explanation: Any, k: int = 0, per_map: bool = False, limit: float | None = None,
                notes: bool = True) -> list[MapPanel]:
    """The query and neighbour panels of pair ``k``: drawn at one scale shared by every map of the explanation
    (or ``limit``, a scale shared with other explanations of the same comparison), or each at its own scale
    with ``per_map``; with ``notes`` the faithfulness lines and warnings of each map."""
    if not 0 <= k < explanation.k:
        raise IndexError(f"pair {k} out of range: the explanation has {explanation.k} neighbour(s)")
    if explanation.query_image is None or explanation.neighbour_images is None:
        raise ValueError("this explanation carries no images to draw on")
    shared = limit if limit is not None or per_map else explanation_limit(explanation)
    panels = []
    for side in SIDES:
        maps = explanation.maps(side)
        heat = None if maps is None else np.asarray(maps[k], dtype=np.float32)
        base = explanation.baseline(side, k) if heat is not None else 0.0
        lim = map_limit(heat, base) if (per_map and heat is not None) else (shared or 1.0)
        panel = MapPanel(explanation.method, side, k, explanation.image(side, k), heat, base, lim, per_map,
                         float(np.asarray(explanation.similarities)[k]))
        if notes and heat is not None:
            panel.notes = faithfulness_notes(explanation, side, k) + padding_note(explanation, side, k, heat, base)
        panels.append(panel)
    return panels


def rows_of(explanations: Sequence[Any], k: int = 0, per_map: bool = False) -> list[list[MapPanel]]:
    """One row of panels per explanation (one method each), each row at its own shared scale: methods measure
    in different units (a gradient, a similarity change, a Shapley value), so one scale across methods would
    hide all but the largest; within a method the maps compared share one."""
    return [pair_panels(e, k, per_map=per_map) for e in explanations]


__all__ = ["Note", "MapPanel", "SIDES", "pair_panels", "rows_of", "explanation_limit", "faithfulness_of",
           "faithfulness_notes", "padding_note"]
