"""Embedding map: the index's embeddings in 2-D; lasso shows thumbnails, a click makes a point the query."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from app_pages import _common as ui
from simx.errors import SimxError

st.title("Embedding map")
name, index = ui.current_index()  # opened by app.py
try:
    df, method = ui.get_projection(name)
except Exception as exc:  # noqa: BLE001
    ui.show_error(exc, f"Cannot map index '{name}'")
    st.stop()

colour_by = st.segmented_control("Colour by", ["label", "correctness"], default="label", key="map_colour") or "label"
df = df.copy()
df["label"] = df["label"].fillna("(none)")
if colour_by == "correctness":
    try:
        _, _, per_query = ui.get_evaluation(name, ui.qp_int("k", 10, 1, 50))
    except SimxError as exc:
        st.info(f"Correctness needs labelled items: {exc}")
        df["group"] = "n/a"
    else:
        first = dict(zip(per_query["id"], per_query["p1"]))
        df["group"] = ["first neighbour correct" if first.get(i) == 1 else
                       "first neighbour wrong" if i in first else "not a query" for i in df["id"]]
else:
    df["group"] = df["label"]

st.caption(f"{len(df)} images, {method.upper()} projection (computed once, stored beside the index). Click a point "
           "to make it the query; pick the lasso or box tool in the chart's toolbar to see thumbnails.")
fig = go.Figure()
trace = go.Scatter if len(df) <= 5000 else go.Scattergl  # SVG points are crisp and clickable; WebGL for big maps
for group, part in df.groupby("group", sort=True):
    fig.add_trace(trace(x=part["x"], y=part["y"], mode="markers", name=str(group),
                               customdata=part[["id", "label"]].values, marker=dict(size=7, opacity=0.8),
                               hovertemplate="%{customdata[0]}<br>%{customdata[1]}<extra></extra>"))
# no dragmode here: Streamlit then keeps point clicks as selections; lasso and box are in the chart's toolbar
fig.update_layout(height=620, margin=dict(l=0, r=0, t=10, b=0),
                  legend=dict(itemsizing="constant"), xaxis=dict(visible=False), yaxis=dict(visible=False))
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
                st.caption(f"{it.label or ''}")
                st.page_link("app_pages/explore.py", label="Query", icon=":material/search:", help=item_id,
                             query_params=ui.carry_params(query=item_id, neighbour=None, mode=None))
    if len(ids) > len(shown):
        st.caption(f"... and {len(ids) - len(shown)} more")
