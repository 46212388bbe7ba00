"""Embedding map: the index's embeddings in 2-D; lasso shows thumbnails, a click makes a point the query."""

from __future__ import annotations

import streamlit as st

from app_pages import _common as ui
from simx.embedding_map import map_figure
from simx.errors import SimxError

st.title("Embedding map")
name, index = ui.current_index()  # opened by app.py
try:
    df, method = ui.get_projection(name)
except Exception as exc:  # noqa: BLE001
    ui.show_error(exc, f"Cannot map index '{name}'")
    st.stop()

colour_by = st.segmented_control("Colour by", ["label", "correctness"], default="label", key="map_colour") or "label"
per_query = None
if colour_by == "correctness":
    try:
        overall, _, per_query = ui.get_evaluation(name, ui.qp_int("k", 10, 1, 50))
    except SimxError as exc:
        st.info(f"Correctness needs labelled items: {ui.plain(exc)}")
    else:
        st.caption(f"Green: the first neighbour is right (relevant = {overall['relevance']}); red: it is wrong; "
                   "grey: not a query.")

n_total = int(df.attrs.get("n_total", len(df)))
shown = (f"{len(df)} images" if n_total == len(df)
         else f"a sample of {len(df):,} of the {n_total:,} images, stratified by label,")
st.caption(f"{shown} {method.upper()} projection (computed once, stored beside the index). Click a point "
           "to make it the query; pick the lasso or box tool in the chart's toolbar to see thumbnails.")
fig = map_figure(df, colour_by, per_query, item_labels={it.id: it.labels for it in index.items})
event = st.plotly_chart(fig, key="embedding_map", on_select="rerun", selection_mode=("points", "box", "lasso"))

sel = event.selection if event is not None else None
points = list(sel.points) if sel is not None else []
area = bool(sel is not None and (sel.box or sel.lasso))
ids = [p["customdata"][0] for p in points if p.get("customdata")]
if ids and not area and len(ids) == 1:
    # a click on one point: open it as the query
    st.switch_page("app_pages/explore.py", query_params=ui.carry_params(query=ids[0], neighbour=None, mode=None))
if ids:
    st.subheader(f"{len(ids)} selected")
    shown = ids[:40]
    per_row = 8
    for row in range(0, len(shown), per_row):
        cols = st.columns(per_row)
        for col, item_id in zip(cols, shown[row : row + per_row]):
            it = index.item(item_id)
            with col:
                t = ui.thumb(it.path)
                if t is not None:
                    st.image(t, width="stretch")
                st.caption(ui.plain(it.label or ""))
                st.page_link("app_pages/explore.py", label="Query", icon=":material/search:", help=item_id,
                             query_params=ui.carry_params(query=item_id, neighbour=None, mode=None))
    if len(ids) > len(shown):
        st.caption(f"... and {len(ids) - len(shown)} more")
