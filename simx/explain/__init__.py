"""Explanations of (query, neighbour) matches: one method per module, all behind one protocol.

>>> from simx.models import load_model
>>> from simx.explain import explain, METHODS
>>> exp = explain(load_model("default"), query_img, [nb1, nb2], method="gradcam")
>>> exp.query_maps.shape, exp.similarities, exp.faithfulness()

Every module in this package that registers a method with :func:`simx.explain.base.register` is imported here
(adding a method is adding one file); ``METHODS`` maps each name to its one-line description.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import REGISTRY, Cost, Explanation, MethodOutput, register
from .engine import FEATURE_CACHE, PairContext, explain

#: Modules of this package that are shared machinery, not methods.
_SHARED = {"base", "engine", "metrics", "views", "masks", "figures", "cli", "superpixels"}

for _mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _mod.name not in _SHARED and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

#: name -> one-line description of every registered method.
METHODS: dict[str, str] = {name: spec.description for name, spec in sorted(REGISTRY.items())}

__all__ = ["explain", "METHODS", "REGISTRY", "Explanation", "MethodOutput", "Cost", "PairContext", "register",
           "FEATURE_CACHE"]
