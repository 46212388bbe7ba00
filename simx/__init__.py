"""simx: a visual-search debugger.

Layers, left to right (each imports only those to its left):
``simx.data`` (safe image loading, galleries) -> ``simx.models`` (model plug-ins) ->
``simx.index`` (embedding, FAISS, metadata, search, evaluation) -> ``simx.explain``.
Nothing in this package imports Streamlit.
"""

__version__ = "0.1.0"
