""""Why not the right one?": the contrast view of a retrieval failure, as plain functions over an index.

* :func:`failing_pair` / :func:`propose_right`: where "wrong" and "right" come from without typing. With a label
  store, a neighbour labelled ``good`` is right and one labelled ``bad`` is wrong; otherwise an item is right
  when it carries the query's label. The wrong neighbour is the best-ranked one that is not right, when it ranks
  above the best-ranked right one.
* :func:`why_not`: the contrastive explanation (:func:`simx.explain.explain` with ``versus``), the faithfulness
  estimate of its pair maps (the cheap estimate every map is shown with), the counterfactual regions on the query
  and on the wrong neighbour (:mod:`simx.explain.counterfactual`), the global-colour check, a one-line reading and
  the label reason it suggests; :func:`estimate_why_not` says what all of that costs before it runs.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ExplainError
from ..models import SimModel
from .base import ContrastExplanation
from .counterfactual import GRID, MAX_AREA, Counterfactual, cell_order, counterfactual, grey_check
from .engine import PairContext, estimate, explain
from .metrics import ESTIMATE_STEPS, faithfulness
from .progress import CostEstimate
from .scored import _rescored_inputs, scoring_passes

#: How deep :func:`propose_right` looks for an item with the query's label.
SEARCH_DEPTH = 100


def _verdicts(labels: Any, index_name: str, query_id: str, user: str | None) -> dict[str, str]:
    """neighbour id -> verdict of the query's labelled pairs (the most recent label wins)."""
    if labels is None:
        return {}
    out: dict[str, str] = {}
    for lab in labels.list(index=index_name, query_id=query_id, user=user):  # newest first
        out.setdefault(lab.neighbour_id, lab.verdict)
    return out


def _is_right(hit: Any, query_item: Any, verdicts: dict[str, str], index: Any) -> bool | None:
    """True / False for a right / wrong neighbour, None when nothing says: the label store's verdict, else whether
    the neighbour shares a label with the query (:func:`simx.relevance.shares_label`, multi-label aware)."""
    from ..relevance import shares_label

    verdict = verdicts.get(hit.id)
    if verdict is not None:
        return verdict == "good"
    return shares_label(query_item, index.item(hit.id))


def _right_position(hits: list[Any], query_item: Any, verdicts: dict[str, str], index: Any,
                    exclude: str | None = None) -> int | None:
    """Position in ``hits`` of the right neighbour: the best-ranked one labelled good, else the best-ranked one
    sharing the query's label (and no bad verdict); None when there is none."""
    candidates = [h for h in hits if h.id != exclude]
    for rule in (lambda h: verdicts.get(h.id) == "good",
                 lambda h: _is_right(h, query_item, verdicts, index) is True):
        for hit in candidates:
            if rule(hit):
                return hits.index(hit)
    return None


def failing_pair(index: Any, query_id: str, labels: Any = None, user: str | None = None, k: int = SEARCH_DEPTH
                 ) -> tuple[Any, Any] | None:
    """(wrong, right) :class:`~simx.index.search.Hit` of a failing query: right as in :func:`propose_right`,
    wrong the best-ranked neighbour above it that is not right (labelled bad, or of another label); None when
    the query does not fail or has no right neighbour within ``k``."""
    query_item = index.item(query_id)
    verdicts = _verdicts(labels, index.name, query_id, user)
    hits = index.search_id(query_id, k=k)
    pos = _right_position(hits, query_item, verdicts, index)
    if pos is None:
        return None
    wrong = next((h for h in hits[:pos] if _is_right(h, query_item, verdicts, index) is False), None)
    return (wrong, hits[pos]) if wrong is not None else None


def propose_right(index: Any, query_id: str, labels: Any = None, user: str | None = None, k: int = SEARCH_DEPTH,
                  exclude: str | None = None) -> Any:
    """The neighbour that should have ranked first: the best-ranked one labelled ``good`` in ``labels``, else the
    best-ranked item sharing a label with the query (within ``k``), skipping ``exclude``; None when there is none."""
    hits = index.search_id(query_id, k=k)
    pos = _right_position(hits, index.item(query_id), _verdicts(labels, index.name, query_id, user), index, exclude)
    return None if pos is None else hits[pos]


_POSITIONS = (("top left", "top", "top right"), ("left", "centre", "right"),
              ("bottom left", "bottom", "bottom right"))


def colour_name(rgb: np.ndarray) -> str:
    """A plain colour word for a mean RGB (0-255): grey levels by value, hues by angle."""
    r, g, b = (float(v) / 255 for v in rgb)
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    if v < 0.2:
        return "black"
    if s < 0.2:
        return "white" if v > 0.85 else "grey"
    hue = h * 360
    if 15 <= hue < 45 and v < 0.6:
        return "brown"
    for bound, name in ((15, "red"), (45, "orange"), (70, "yellow"), (170, "green"), (200, "cyan"), (255, "blue"),
                        (290, "purple"), (335, "pink"), (360, "red")):
        if hue < bound:
            return name
    return "red"


def describe_region(image: np.ndarray, mask: np.ndarray) -> str:
    """"the red region at the top left": mean colour and centroid of ``mask`` (H, W) on ``image`` (H, W, 3)."""
    if not mask.any():
        return "no region"
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    row = min(2, int(3 * ys.mean() / h))
    col = min(2, int(3 * xs.mean() / w))
    colour = colour_name(np.asarray(image, np.float64)[mask].mean(axis=0))
    return f"the {colour} region at the {_POSITIONS[row][col]}"


@dataclass
class WhyNot:
    """Everything the "Why not the right one?" view shows for one (query, wrong, right) triple."""

    contrast: ContrastExplanation
    query_region: Counterfactual
    wrong_region: Counterfactual | None
    grey: dict[str, Any]
    reading: str
    reason: str | None
    faithfulness: dict[str, Any] | None = None

    @property
    def margin(self) -> float:
        return float(self.contrast.margins.max())

    def to_dict(self, with_masks: bool = False) -> dict[str, Any]:
        return {"method": self.contrast.method, "margins": [float(m) for m in self.contrast.margins],
                "similarities": [float(s) for s in self.contrast.similarities],
                "query_region": self.query_region.to_dict(with_masks),
                "wrong_region": None if self.wrong_region is None else self.wrong_region.to_dict(with_masks),
                "grey": self.grey, "reading": self.reading, "reason": self.reason,
                "cost": self.contrast.cost.to_dict(), "faithfulness": self.faithfulness}


def _num(v: float, sign: str = "") -> str:
    """A margin for a sentence: 3 decimals, or 2 significant digits when it is smaller than 0.001."""
    return f"{v:{sign}.3f}" if abs(v) >= 1e-3 or v == 0 else f"{v:{sign}.2g}"


def reading(contrast: ContrastExplanation, query_region: Counterfactual, grey: dict[str, Any]) -> str:
    """One line saying why the wrong neighbour won, from the verified counterfactual (margins are measured)."""
    margin = query_region.margin_before
    if margin <= 0:
        return f"the right neighbour already ranks first (margin {_num(margin, '+')})"
    if query_region.found:
        what = describe_region(contrast.query_image, query_region.mask)
        drop = margin - query_region.margin_after
        return (f"{what} ({query_region.area:.0%} of the query) favours the wrong one by {_num(drop)} of the "
                f"{_num(margin)} margin: without it the right one ranks first")
    worst_grey = max(grey["grey_margin"])
    verdict = "colour decides" if grey["colour_decides"] else "not colour alone"
    return (f"no region up to {query_region.area:.0%} of the query flips the {_num(margin)} margin: the cause is "
            f"global (colour, style); with the images in grey the margin is {_num(worst_grey, '+')} ({verdict})")


def suggest_reason(query_region: Counterfactual, grey: dict[str, Any], boxes: np.ndarray | None = None) -> str | None:
    """The label reason the contrast view suggests: ``colour_over_shape`` when the cause is global and grey
    images reverse the order, ``background_shortcut`` when the flipping region lies mostly outside the query's
    object boxes (``boxes``: (H, W) bool mask of the objects, when known), ``partial_match`` for any other local
    region (the wrong neighbour shares a part of the query), None when nothing is clear."""
    if query_region.margin_before <= 0:
        return None
    if not query_region.found:
        return "colour_over_shape" if grey["colour_decides"] else None
    if boxes is not None and boxes.shape == query_region.mask.shape and query_region.mask.any():
        inside = float((boxes & query_region.mask).sum()) / float(query_region.mask.sum())
        if inside < 0.5:
            return "background_shortcut"
    return "partial_match"


def counterfactual_steps(size: tuple[int, int], grid: int = GRID, max_area: float = MAX_AREA) -> int:
    """The most regions one counterfactual search tries (one forward each): grown cell by cell up to ``max_area``."""
    _, labels = cell_order(np.zeros(size), grid)
    areas = np.sort(np.bincount(labels.ravel(), minlength=grid * grid) / labels.size)
    return int(np.searchsorted(np.cumsum(areas), max_area + 1e-9, side="right"))


def estimate_why_not(model: SimModel, method: str, j: int = 1, pair: PairContext | None = None,
                     steps: int = ESTIMATE_STEPS, grid: int | None = None, wrong_side: bool = True,
                     **params: Any) -> CostEstimate:
    """What :func:`why_not` with ``j`` right neighbours will cost before it runs, every part counted: the
    contrastive explanation (both sides, :func:`~simx.explain.engine.estimate`), the faithfulness estimate of its
    1 + j query and 1 + j neighbour pair maps (2 x ``steps`` forwards each, ``faithfulness`` in the result), the
    counterfactual searches (at most one forward per grown region up to half the image, per side) and the grey
    check (the 2 + j images in grey). ``pair``: the prepared :class:`~simx.explain.engine.PairContext` of
    (query, [wrong, *rights]) makes the explanation's and the scoring's counts exact (cached images not counted).
    The figure is an upper bound: a counterfactual search stops at its first flip."""
    k = pair.k if pair is not None else 1 + int(j)
    own = estimate(model, method, k=k, side="both", pair=pair, **params)
    scoring = scoring_passes(k, ["query", "neighbour"], steps) if steps else 0
    if scoring and pair is not None:
        scoring += _rescored_inputs(pair)
    regions = counterfactual_steps(tuple(model.input_size), GRID if grid is None else grid)
    searches = regions * (2 if wrong_side else 1)
    grey = 1 + k
    forward = own.forward + scoring + searches + grey
    return CostEstimate(method=method, forward=forward, backward=own.backward,
                        seconds=(forward + 2 * own.backward) * own.seconds_per_pass,
                        seconds_per_pass=own.seconds_per_pass, faithfulness=scoring, upper_bound=True)


def why_not(model: SimModel, query: Any, wrong: Any, right: Any, method: str = "searchcam", seed: int = 0,
            grid: int | None = None, boxes: np.ndarray | None = None, wrong_side: bool = True,
            progress: Any = None, steps: int = ESTIMATE_STEPS, **params: Any) -> WhyNot:
    """The "Why not the right one?" analysis of one failure (see the module docstring). ``right`` may be a list
    (every right neighbour must win for a region to count). ``boxes``: the query's object mask (H, W) at model
    input resolution, when known, for the reason suggestion. ``progress``: the engine's progress of the contrastive
    explanation (:class:`simx.explain.progress.Progress` or a callback). ``steps``: insertion/deletion steps of the
    faithfulness estimate of the pair maps (0: none); :func:`estimate_why_not` counts every pass."""
    rights = list(right) if isinstance(right, (list, tuple)) else [right]
    if not rights:
        raise ExplainError("why_not needs at least one right neighbour")
    exp = explain(model, query, wrong, versus=rights, method=method, seed=seed, side="both", progress=progress,
                  **params)
    kw = {} if grid is None else {"grid": grid}
    # every right neighbour must win, so the hardest rival (the largest margin) decides: its map leads the search
    j = int(np.argmax(exp.margins))
    q_region = counterfactual(model, query, wrong, rights, exp.query_maps[j], side="query", **kw)
    w_region = None
    if wrong_side and exp.pair.neighbour_maps is not None:
        w_region = counterfactual(model, query, wrong, rights, exp.pair.neighbour_maps[0], side="wrong", **kw)
    grey = grey_check(model, query, wrong, rights)
    scores = faithfulness(exp.pair, model, steps=int(steps)) if steps else None
    return WhyNot(contrast=exp, query_region=q_region, wrong_region=w_region, grey=grey,
                  reading=reading(exp, q_region, grey), reason=suggest_reason(q_region, grey, boxes),
                  faithfulness=scores)
