"""Where an index keeps its attribute predictors, and which one SANE should use for it.

``INDEX/attributes/`` holds the training caches and the predictors: ``predictor/`` trained with saliency
supervision (L_heat, methods.md 4.3), ``predictor-no-heat/`` without. :func:`index_attributes` picks the one that
fits the index's model (the dashboard's SANE panel asks it); training them is :mod:`simx.attribute_training`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .predictor import AttributePredictor
from .vocab import PredictorError

HEAT_DIR = "predictor"
NO_HEAT_DIR = "predictor-no-heat"


def attributes_dir(index: Any) -> Path:
    """``INDEX/attributes/``: the caches and the predictors of an index."""
    return Path(index.path) / "attributes"


def predictor_dir(index: Any, heat: bool = True) -> Path:
    return attributes_dir(index) / (HEAT_DIR if heat else NO_HEAT_DIR)


@dataclass(frozen=True)
class IndexAttributes:
    """What SANE should use for an index: ``params`` to pass to the ``sane`` method (``{"predictor": folder}``
    when a predictor trained for the index fits its model, else empty: the model's ImageNet classes) and
    ``note``, one sentence saying which vocabulary that is and why."""

    params: dict[str, Any]
    note: str
    predictor: "AttributePredictor | None" = None


def index_attributes(index: Any) -> IndexAttributes:
    """The attribute predictor trained for ``index`` (``INDEX/attributes/predictor/``, trained with saliency
    supervision, else ``predictor-no-heat/``) when one exists and was trained on the index's model; otherwise
    empty params (the ``sane`` method then falls back to the model's ImageNet classifier) and a note saying why
    (none trained, or the trained one unusable and for what reason)."""
    problems = []
    for heat in (True, False):
        folder = predictor_dir(index, heat)
        if not (folder / "predictor.json").is_file():
            continue
        try:
            pred = AttributePredictor.load(folder)
            pred.check_model(index.model)
        except PredictorError as exc:
            problems.append(f"{folder.name}/: {exc}")
            continue
        source = pred.vocabulary.description or f"{pred.vocabulary.source} vocabulary"
        return IndexAttributes({"predictor": str(folder)},
                               f"the attribute predictor trained for this index ({len(pred.vocabulary)} attributes; "
                               f"{source}) at `{folder}`", pred)
    if problems:
        return IndexAttributes({}, "the predictor trained for this index cannot be used (" + "; ".join(problems)
                               + "), so the model's ImageNet classes serve as the vocabulary")
    return IndexAttributes({}, "no attribute predictor is trained for this index (`simx attributes train "
                               f"{getattr(index, 'name', 'INDEX')}` trains one on its labels and attributes), so "
                               "the model's ImageNet classes serve as the vocabulary")
