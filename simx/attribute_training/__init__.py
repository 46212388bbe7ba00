"""Training SANE's attribute predictor on an index (methods.md 4.2, 4.3, 7.3): features once, saliency maps from
the first-order engine (:func:`simx.explain.explain`), the attribute head with and without L_heat.

>>> from simx.attribute_training import train_for_index, compare_heat
>>> from simx.index import open_index
>>> result = train_for_index(open_index("scenes"))   # INDEX/attributes/predictor/ (with L_heat, 4.3)

It sits above both :mod:`simx.attributes` (the predictor it trains) and :mod:`simx.explain` (the saliency it
learns from), so neither of those imports the other. ``simx attributes train|eval`` is :mod:`.cli`.
"""

from __future__ import annotations

from .train import (TrainConfig, TrainResult, average_precision, compare_heat, compute_features, compute_saliency,
                    heat_loss, mean_average_precision, nearest_references, split_items, train_for_index,
                    train_predictor)

__all__ = ["TrainConfig", "TrainResult", "average_precision", "compare_heat", "compute_features", "compute_saliency",
           "heat_loss", "mean_average_precision", "nearest_references", "split_items", "train_for_index",
           "train_predictor"]
