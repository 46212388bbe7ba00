"""Indexes: embed a gallery, store it with FAISS and its metadata, search it and measure retrieval quality.

Public API (used by the CLI and the dashboard)::

    build_index(source, name, model=..., factory="Flat", update=False, root=None) -> BuildResult
    open_index(name, root=None, model=None) -> Index      # .search / .search_id / .search_image / .item / .meta
    list_indexes(root=None) -> list[dict]
    evaluate(index, k=10, level="full") -> EvalResult     # .overall / .per_label / .per_query
    embed_batch(model_spec, paths, model_kwargs) -> (vectors, skip reasons)   # the distributable unit of work

The on-disk format is described in ``docs/index-format.md`` and :mod:`simx.index.layout`.
"""

from importlib import import_module
from typing import Any

#: public name -> submodule defining it. Imported on first use (PEP 562), so ``simx index list`` and other
#: commands that only read metadata start without importing torch (the embedding modules need it).
_EXPORTS = {
    "DEFAULT_FACTORY": "build", "BuildResult": "build", "build_index": "build",
    "DEFAULT_BATCH_SIZE": "embed", "embed_batch": "embed", "embed_paths": "embed", "model_kwargs": "embed",
    "EvalResult": "evaluation", "evaluate": "evaluation",
    "FORMAT_VERSION": "layout", "ROOT_ENV": "layout", "index_root": "layout",
    "Hit": "search", "Index": "search", "list_indexes": "search", "model_differences": "search",
    "open_index": "search",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "build_index", "BuildResult", "DEFAULT_FACTORY", "DEFAULT_BATCH_SIZE",
    "open_index", "list_indexes", "Index", "Hit", "model_differences",
    "evaluate", "EvalResult",
    "embed_batch", "embed_paths", "model_kwargs",
    "FORMAT_VERSION", "ROOT_ENV", "index_root",
]
