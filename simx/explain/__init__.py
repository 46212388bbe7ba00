"""Explanations of (query, neighbour) matches: one method per module, all behind one protocol.

>>> from simx.models import load_model
>>> from simx.explain import explain, METHODS
>>> from simx.explain.metrics import faithfulness
>>> model = load_model("default")
>>> exp = explain(model, query_img, [nb1, nb2], method="gradcam")   # a plain, picklable value
>>> exp.query_maps.shape, exp.similarities, faithfulness(exp, model)

Methods live in :mod:`simx.explain.methods` (one module each, adding a method is adding one file there); the shared
machinery (engine, protocol, metrics, masks, superpixels, cell geometry) lives beside that package. Importing
this package imports every method; ``METHODS`` maps each name to its one-line description.
"""

from __future__ import annotations

from .base import REGISTRY, ContrastExplanation, Cost, Explanation, MethodOutput, register
from .engine import FEATURE_CACHE, PairContext, explain
from . import methods  # noqa: F401,E402  (imports every method module, filling the registry)

#: name -> one-line description of every registered method.
METHODS: dict[str, str] = {name: spec.description for name, spec in sorted(REGISTRY.items())}

__all__ = ["explain", "METHODS", "REGISTRY", "Explanation", "ContrastExplanation", "MethodOutput", "Cost",
           "PairContext", "register", "FEATURE_CACHE"]
