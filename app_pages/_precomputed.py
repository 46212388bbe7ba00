"""Precomputed explanations in Explore: a pair that ``simx explain-batch`` stored opens at once from disk.

The stored run is read once per process (``st.cache_resource``: its pair table and decompressed maps) and each
pair becomes a plain :class:`simx.explain.Explanation` (``st.cache_data``), drawn by the same renderer as a live
one. The page says that the maps are precomputed, with which parameters and when, and offers the live computation.
"""

from __future__ import annotations

import streamlit as st

from app_pages import _common as ui


@st.cache_resource(show_spinner="Reading the precomputed explanations...", max_entries=4)
def _stored_run(folder: str, created_at: str):
    from simx.explain.batch import StoredRun

    return StoredRun(folder)


@st.cache_data(show_spinner=False, max_entries=128)
def _explanation(root: str, name: str, stamp: str, folder: str, created_at: str, query: str, neighbour: str):
    return _stored_run(folder, created_at).explanation(ui.get_index(name), query, neighbour)


def stored_explanation(name: str, index, query: str, neighbour: str, method: str):
    """The newest stored explanation of ``method`` for the pair, or None (an upload, or no run explained it)."""
    from simx.explain.batch import list_precomputed

    if query.startswith(ui.UPLOAD_PREFIX):
        return None
    for run in list_precomputed(index):
        if run["method"] != method:
            continue
        created = str(run.get("created_at", ""))
        if _stored_run(run["folder"], created).pair(query, neighbour) is not None:
            return _explanation(str(ui.index_root()), name, ui.index_stamp(name), run["folder"], created, query,
                                neighbour)
    return None


def live_key(query: str, neighbour: str, method: str) -> str:
    return f"live_{query}|{neighbour}_{method}"


def caption(exp, query: str, neighbour: str, method: str, present: bool) -> None:
    """Say where the maps come from and offer the live computation (full resolution, curves)."""
    from simx.explain.batch import describe_run

    st.caption(ui.plain(describe_run(exp.extras["precomputed"])))
    if not present:
        st.button("Compute live", key=f"btn_{live_key(query, neighbour, method)}", icon=":material/refresh:",
                  on_click=st.session_state.__setitem__, args=(live_key(query, neighbour, method), True),
                  help="Run the method now at the model's resolution, with its faithfulness curves")
