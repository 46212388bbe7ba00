"""The explanation methods: one module per method, each registering one function with
:func:`simx.explain.base.register`.

Importing this package imports every module in it, which fills :data:`simx.explain.base.REGISTRY`; adding a
method is adding one file here. Shared machinery (engine, protocol, metrics, masks, superpixels, cell geometry)
lives one level up in :mod:`simx.explain`.
"""

from __future__ import annotations

import importlib
import pkgutil

for _mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")
