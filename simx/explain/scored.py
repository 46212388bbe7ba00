"""An explanation with the faithfulness estimate of its maps, under one cost and one progress bar (issue 12 items
7 and 8).

Every map is shown with a cheap faithfulness estimate (:data:`~simx.explain.metrics.ESTIMATE_STEPS` insertion and
deletion steps, :func:`~simx.explain.metrics.faithfulness`): 2 x steps forwards per map, 44 for a pair explained
on both sides. Those passes are part of what a person waits for, so the cost said before a slow method starts
(:func:`estimate_scored`) and the progress bar's total while it runs (:func:`explain_scored`) count them with the
method's own passes: the announced figure is the number of passes the run makes.

The maps are scored on the pictures the model saw, rebuilt from the explanation; for images simx preprocessed
those are the very inputs of the run (bit for bit), whose unperturbed features the run left in the feature cache,
so scoring makes no other pass. :func:`estimate_scored` checks that on the pair when it has one.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..models import SimModel
from .base import Explanation
from .engine import FEATURE_CACHE, PairContext, estimate, explain
from .metrics import ESTIMATE_STEPS, faithfulness
from .progress import CancelToken, CostEstimate, Progress


def map_sides(side: str) -> list[str]:
    """The sides whose maps an explanation of ``side`` carries (every map-making method draws the sides asked for)."""
    return ["query", "neighbour"] if side == "both" else [side]


def scoring_passes(k: int, sides: Sequence[str], steps: int = ESTIMATE_STEPS) -> int:
    """Forwards of the faithfulness estimate of K maps per side: ``steps`` insertion and ``steps`` deletion images
    per map (:func:`~simx.explain.metrics.insertion_deletion`)."""
    return 2 * int(steps) * int(k) * len(sides)


def _rescored_inputs(pair: PairContext) -> int:
    """How many of the pair's K + 1 images the scoring context would embed again: those whose picture, rebuilt as
    :func:`~simx.explain.metrics.model_inputs` does, is not the run's input bit for bit (its features are then not
    the ones the run cached) and not already in the feature cache."""
    model = pair.model
    count = 0
    for x in torch.cat([pair.query, pair.neighbours]):
        picture = torch.from_numpy(pair.display_image(x)).float().div(255.0).permute(2, 0, 1).unsqueeze(0)
        rebuilt = model.preprocessing.normalise(picture.contiguous())[0]
        if not torch.equal(rebuilt, x.cpu()) and FEATURE_CACHE.get(FEATURE_CACHE.key(model, rebuilt)) is None:
            count += 1
    return count


def estimate_scored(model: SimModel, method: str, k: int = 1, side: str = "both", pair: PairContext | None = None,
                    steps: int = ESTIMATE_STEPS, **params: Any) -> CostEstimate:
    """:func:`~simx.explain.engine.estimate` of the method plus the passes of the faithfulness estimate of its maps
    (``faithfulness`` in the result): what :func:`explain_scored` will make. ``pair`` makes it exact (see
    :func:`~simx.explain.engine.estimate`); ``steps`` = 0 leaves the scoring out."""
    own = estimate(model, method, k=k, side=side, pair=pair, **params)
    k = pair.k if pair is not None else int(k)
    scoring = scoring_passes(k, map_sides(side), steps) if steps else 0
    if scoring and pair is not None:
        scoring += _rescored_inputs(pair)
    forward = own.forward + scoring
    return CostEstimate(method=method, forward=forward, backward=own.backward,
                        seconds=(forward + 2 * own.backward) * own.seconds_per_pass,
                        seconds_per_pass=own.seconds_per_pass, faithfulness=scoring, upper_bound=own.upper_bound)


def explain_scored(model: SimModel, query: Any, neighbours: Sequence[Any] | Any, method: str = "gradcam",
                   side: str = "both", seed: int = 0, steps: int = ESTIMATE_STEPS, batch_size: int | None = None,
                   progress: Progress | Callable[[Progress], None] | None = None,
                   cancel: CancelToken | None = None, **params: Any) -> Explanation:
    """:func:`simx.explain.explain` followed by the faithfulness estimate of its maps (kept in
    ``explanation.scores["faithfulness_estimate"]``), both under one ``progress`` whose total is
    :func:`estimate_scored`'s exact figure, and one ``cancel`` token that stops either part at its next batch."""
    tracker = progress if isinstance(progress, Progress) else Progress(callback=progress)
    if cancel is not None:
        tracker.token = cancel
    pair = PairContext(model, query, neighbours, seed=seed, batch_size=batch_size)
    tracker.start(estimate_scored(model, method, side=side, pair=pair, steps=steps, **params).passes)
    tracker.check()
    try:
        exp = explain(model, query, neighbours, method=method, side=side, seed=seed, batch_size=batch_size,
                      progress=tracker, **params)
        sides = [s for s in ("query", "neighbour") if exp.maps(s) is not None]
        if steps and sides:
            if sides != map_sides(side):  # a method that draws fewer sides than asked: the bar's total follows
                tracker.total -= scoring_passes(exp.k, map_sides(side), steps) - scoring_passes(exp.k, sides, steps)
            faithfulness(exp, model, steps=int(steps), batch_size=batch_size, progress=tracker)
        elif steps:
            tracker.total -= scoring_passes(exp.k, map_sides(side), steps)
    finally:
        tracker.finish()
    return exp


__all__ = ["estimate_scored", "explain_scored", "map_sides", "scoring_passes"]
