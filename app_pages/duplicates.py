"""Duplicates: near-identical groups in the index, or its items leaked into another index (simx.index.duplicates)."""

from __future__ import annotations

import streamlit as st

from app_pages import _common as ui
from simx.errors import SimxError

GROUPS_PER_PAGE = 10
THUMBS_PER_GROUP = 8


@st.cache_data(show_spinner="Range search over the embeddings...", max_entries=16)
def _duplicates(root: str, name: str, stamp: str, threshold: float | None, other: str | None, other_stamp: str):
    from simx.index import open_index
    from simx.index.duplicates import find_duplicates, save

    index = open_index(name, root=root)
    other_index = open_index(other, root=root) if other else None
    result = find_duplicates(index, threshold=threshold, other=other_index)
    save(result, index, other_index)
    return result.to_dict()


def _thumbs(index, ids: list[str], captions: list[str] | None = None) -> None:
    cols = st.columns(THUMBS_PER_GROUP)
    for j, (col, item_id) in enumerate(zip(cols, ids[:THUMBS_PER_GROUP])):
        with col:
            t = ui.thumb(index.item(item_id).path)
            if t is not None:
                st.image(t, width="stretch")
            st.caption(ui.plain(captions[j] if captions else item_id))
            st.page_link("app_pages/explore.py", label="Query", icon=":material/search:", help=item_id,
                         query_params=ui.carry_params(query=item_id, neighbour=None, mode=None))


st.title("Duplicates")
name, index = ui.current_index()  # opened by app.py
cosine = index.metric == "cosine"
threshold = st.sidebar.number_input(
    "Threshold (score at or above: near-duplicate)", value=0.95 if cosine else 0.0, step=0.01, format="%.4f",
    key="dup_threshold", help="In the index's score units, higher = more similar (cosine for cosine indexes).")
others = ["(none: within this index)"] + [e["name"] for e in ui.list_indexes() if e.get("ok", True)
                                          and e["name"] != name and e.get("model") == index.meta["model"]["spec"]]
across = st.sidebar.selectbox("Leaks into another index", others, key="dup_across",
                              help="Items of this index with a near-duplicate in the other (e.g. test vs train).")
other = None if across == others[0] else across
st.caption("FAISS range search over the stored embeddings (exact up to 50k items; above, an IVF search on a 64-d "
           "PCA projection, which never lengthens a distance, with exact re-scoring): no all-pairs matrix, so it runs on millions of images. `simx duplicates` does the same from "
           "the command line.")
try:
    res = _duplicates(str(ui.index_root()), name, ui.index_stamp(name), float(threshold), other,
                      ui.index_stamp(other) if other else "")
except SimxError as exc:
    ui.show_error(exc, "Cannot search for duplicates")
    st.stop()

s = res["stats"]
if other is None:
    c = st.columns(4)
    c[0].metric("near-duplicate pairs", s["pairs"])
    c[1].metric("groups", s["groups"])
    c[2].metric("items in groups", s["in_groups"])
    c[3].metric("seconds", f"{s['seconds']:.1f}")
    groups = res["groups"]
    if not groups:
        st.info(f"No two items score {threshold:g} or more.", icon=":material/info:")
        st.stop()
    pages = max(1, -(-len(groups) // GROUPS_PER_PAGE))
    page = st.number_input(f"Page (of {pages}; largest groups first)", 1, pages, 1, key="dup_page") if pages > 1 else 1
    for g in groups[(page - 1) * GROUPS_PER_PAGE : page * GROUPS_PER_PAGE]:
        st.subheader(f"{g['size']} items, scores {g['min_score']:.4f} to {g['max_score']:.4f}", divider="gray")
        _thumbs(index, g["ids"])
        if g["size"] > THUMBS_PER_GROUP:
            st.caption(f"... and {g['size'] - THUMBS_PER_GROUP} more: "
                       + ui.plain(", ".join(g["ids"][THUMBS_PER_GROUP:])))
else:
    other_index = ui.get_index(other)
    c = st.columns(3)
    c[0].metric(f"leaked items (of {s['n_items']})", s["leaked"])
    c[1].metric("pairs", s["pairs"])
    c[2].metric("seconds", f"{s['seconds']:.1f}")
    pairs = res["pairs"]
    if not pairs:
        st.info(f"No item of {ui.plain(name)} has a near-duplicate in {ui.plain(other)} at {threshold:g}.",
                icon=":material/info:")
        st.stop()
    st.dataframe([{"item": p["a"], f"near-duplicate in {other}": p["b"], "score": round(p["score"], 4)}
                  for p in pairs], hide_index=True)
    st.subheader("First leaks", divider="gray")
    for p in pairs[:GROUPS_PER_PAGE]:
        left, right = st.columns(2)
        for col, idx, item_id, where in ((left, index, p["a"], name), (right, other_index, p["b"], other)):
            with col:
                t = ui.thumb(idx.item(item_id).path)
                if t is not None:
                    st.image(t, width=128)
                st.caption(f"{ui.plain(where)}: {ui.plain(item_id)} (score {p['score']:.4f})")
