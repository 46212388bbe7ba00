"""Indexes: embed a gallery, store it with FAISS and its metadata, search it and measure retrieval quality.

Public API (used by the CLI and the dashboard)::

    build_index(source, name, model=..., factory="Flat", update=False, root=None) -> BuildResult
    open_index(name, root=None, model=None) -> Index      # .search / .search_id / .search_image / .item / .meta
    list_indexes(root=None) -> list[dict]
    evaluate(index, k=10, level="full") -> EvalResult     # .overall / .per_label / .per_query
    embed_batch(model_spec, paths, model_kwargs) -> (vectors, skip reasons)   # the distributable unit of work

The on-disk format is described in ``docs/index-format.md`` and :mod:`simx.index.layout`.
"""

from .build import DEFAULT_FACTORY, BuildResult, build_index
from .embed import DEFAULT_BATCH_SIZE, embed_batch, embed_paths, model_kwargs
from .evaluation import EvalResult, evaluate
from .layout import FORMAT_VERSION, ROOT_ENV, index_root
from .search import Hit, Index, list_indexes, model_differences, open_index

__all__ = [
    "build_index", "BuildResult", "DEFAULT_FACTORY", "DEFAULT_BATCH_SIZE",
    "open_index", "list_indexes", "Index", "Hit", "model_differences",
    "evaluate", "EvalResult",
    "embed_batch", "embed_paths", "model_kwargs",
    "FORMAT_VERSION", "ROOT_ENV", "index_root",
]
