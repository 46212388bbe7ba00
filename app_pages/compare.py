"""Compare: two indexes of one gallery (e.g. before and after ``simx train``), query by query and pair by pair.

Everything is computed by :mod:`simx.diff`; this page picks index B, draws the summary, the worst queries, the
neighbour lists side by side, the labelled pairs that moved and one pair's explanation under both models.
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from app_pages import _common as ui
from simx.diff import comparable_indexes, summary_rows
from simx.errors import SimxError

HOW_TO_GET_B = (
    "Compare needs a second index over the same gallery, built with another model. Fine-tune this index's model "
    "on its labels and embed the gallery again in one go:\n\n"
    "```\nsimx train {a} --out models/{a}-ft --build {a}-ft\n```\n\n"
    "or build one with any model: `simx index build SOURCE --name NAME --model SPEC`."
)


@st.cache_data(show_spinner="Comparing the two indexes...", max_entries=8)
def _diff(root: str, a: str, stamp_a: str, b: str, stamp_b: str, k: int, labels_seen: str):
    from simx.diff import compare_indexes

    return compare_indexes(ui.get_index(a), ui.get_index(b), k=k)


@st.cache_data(show_spinner=False, max_entries=8)
def _report(_diff_obj, key: tuple) -> str:
    from simx.diff import diff_report_html

    return diff_report_html(_diff_obj)


@st.cache_data(show_spinner=False, max_entries=8)
def _report_with_pair(_diff_obj, key: tuple, query: str, neighbour: str, method: str, _pics: dict) -> str:
    from simx.diff import diff_report_html

    return diff_report_html(_diff_obj, pair={"query": query, "neighbour": neighbour, "method": method,
                                             "pictures": _pics})


@st.cache_data(show_spinner="Explaining the pair under both models...", max_entries=32)
def _pair(root: str, a: str, stamp_a: str, b: str, stamp_b: str, query: str, neighbour: str, method: str,
          per_map: bool) -> dict:
    from simx.diff import explain_both, pair_pictures
    from simx.explain.scheduling import TURNS

    with TURNS.person():
        exp_a, exp_b = explain_both(ui.get_index(a), ui.get_index(b), query,
                                    neighbour, method=method)
    return pair_pictures(exp_a, exp_b, per_map=per_map)


def labels_seen(index_a, index_b) -> str:
    """Changes when labels of either index are added or edited (part of the comparison's cache key). Only stores
    that exist are read: comparing never creates a label database."""
    from simx.diff import label_stores

    parts = []
    for store in label_stores(index_a, index_b):
        c = store.counts(index=[index_a.name, index_b.name])
        parts.append(f"{c['total']}:{sorted(c['verdict'].items())}:{sorted(c['user'].items())}")
    return "|".join(parts)


def neighbour_column(index, title: str, ids: list[str], marked: set[str], mark: str, col) -> None:
    col.markdown(f"**{ui.plain(title)}**")
    cells = col.columns(5)
    for rank, nid in enumerate(ids, start=1):
        cell = cells[(rank - 1) % 5]
        t = ui.thumb(index.item(nid).path)
        if t is not None:
            cell.image(t, width="stretch")
        cell.caption(f"{rank}. {ui.plain(nid)}" + (f" · **{mark}**" if nid in marked else ""))


st.title("Compare models")
name_a, index_a = ui.current_index()
root = str(ui.index_root())
others = comparable_indexes(index_a, root)  # same gallery source first; no model is loaded for the list
if not others:
    st.info(HOW_TO_GET_B.format(a=name_a), icon=":material/info:")
    st.stop()
wanted = ui.qp("b")
if st.session_state.get("cmp_b") not in others or (wanted in others and st.session_state.get("cmp_b") != wanted):
    st.session_state["cmp_b"] = wanted if wanted in others else others[0]
name_b = st.sidebar.selectbox("Compare with (B)", others, key="cmp_b",
                              on_change=lambda: ui.set_qp(b=st.session_state["cmp_b"], query=None, neighbour=None))
if ui.qp("b") != name_b:
    ui.set_qp(b=name_b)
k = st.sidebar.slider("k (neighbours compared)", 1, 50, ui.qp_int("k", 10, 1, 50), key="cmp_k",
                      on_change=lambda: ui.set_qp(k=st.session_state["cmp_k"]))
try:
    index_b = ui.get_index(name_b)
    stamps = (ui.index_stamp(name_a), ui.index_stamp(name_b))
    seen = labels_seen(index_a, index_b)
    diff = _diff(root, name_a, stamps[0], name_b, stamps[1], int(k), seen)
except SimxError as exc:
    ui.show_error(exc, "Cannot compare")
    st.stop()

st.caption(f"A = {ui.plain(name_a)} (model {ui.plain(diff.models['a'])}) · B = {ui.plain(name_b)} (model "
           f"{ui.plain(diff.models['b'])}) · {diff.overall['n_items']} items · k = {k}")
for note in diff.notes:
    st.caption(ui.plain(note))

# ------------------------------------------------------------------------------------------------ summary
st.subheader("Summary")
left, right = st.columns([2, 3])
left.dataframe([{"measure": r[0], "A": r[1], "B": r[2], "change": r[3]} for r in summary_rows(diff)],
               hide_index=True, key="cmp_summary")
what, values, ids = diff.sorted_deltas()
colours = ["#b2182b" if v < 0 else "#2166ac" if v > 0 else "#999999" for v in values]
fig = go.Figure(go.Bar(x=list(range(len(values))), y=values, marker_color=colours, customdata=ids,
                       hovertemplate="%{customdata}<br>%{y:.3f}<extra></extra>"))
fig.update_layout(height=260, margin=dict(l=0, r=0, t=10, b=0), xaxis_title="queries, sorted", yaxis_title=what)
right.plotly_chart(fig, key="cmp_plot")
right.download_button("Download the summary (HTML)", _report(diff, (name_a, stamps[0], name_b, stamps[1], k, seen)),
                      file_name=f"simx-diff-{name_a}-vs-{name_b}.html", mime="text/html", key="cmp_html",
                      icon=":material/download:")

# ------------------------------------------------------------------------------------------------ queries
st.subheader("Queries that got worse" if diff.has_metrics else "Queries whose neighbours changed most")
worst = diff.worst(50)
if worst.empty:
    st.success("No query got worse." if diff.has_metrics else "Every query keeps its neighbours.")
    table = diff.per_query.head(50)
else:
    table = worst
shown = table.assign(entered=[", ".join(v[:5]) for v in table["entered"]],
                     left=[", ".join(v[:5]) for v in table["left"]]).drop(columns=["neighbours_a", "neighbours_b"])
event = st.dataframe(shown, hide_index=True, on_select="rerun", selection_mode="single-row", key="cmp_queries")
rows = event.selection.rows if event is not None else []
query = table.iloc[rows[0]]["id"] if rows else ui.qp("query")
if query not in set(diff.per_query["id"]):
    query = str(table.iloc[0]["id"]) if len(table) else None
if query is None:
    st.stop()
if ui.qp("query") != query:
    ui.set_qp(query=query)
row = diff.per_query[diff.per_query["id"] == query].iloc[0]
st.markdown(f"Query {ui.plain(query)}" + (f" · AP@{k} {row['ap_a']:.3f} → {row['ap_b']:.3f}"
                                  if diff.has_metrics and row.get("ap_a") == row.get("ap_a") else "")
            + f" · top-{k} overlap {row['overlap']:.2f}")
qcol, acol, bcol = st.columns([1, 4, 4])
t = ui.thumb(index_a.item(query).path)
if t is not None:
    qcol.image(t, caption="query", width="stretch")
neighbour_column(index_a, f"A: {name_a}", list(row["neighbours_a"]), set(row["left"]), "left", acol)
neighbour_column(index_b, f"B: {name_b}", list(row["neighbours_b"]), set(row["entered"]), "entered", bcol)

# ------------------------------------------------------------------------------------------------ labelled pairs
st.subheader("Labelled pairs")
pairs = diff.pairs
if pairs.empty:
    st.caption("No labelled pair in this gallery yet: label matches in Explore or the review queue.")
    pair_event = None
else:
    counts = diff.overall["pairs"]
    st.caption(f"{counts['fixed']} fixed · {counts['regressed']} regressed · {counts['unchanged']} unchanged "
               f"(a bad match leaving the top {k} is a fix, a good one leaving it a regression). Click a row to "
               "explain it.")
    pair_event = st.dataframe(pairs, hide_index=True, on_select="rerun", selection_mode="single-row",
                              key="cmp_pairs")

# ------------------------------------------------------------------------------------------------ one pair, both models
st.subheader("One pair under both models")
picked = pair_event.selection.rows if pair_event is not None else []
if picked:
    query, nb_default = pairs.iloc[picked[0]]["query"], pairs.iloc[picked[0]]["neighbour"]
    row = diff.per_query[diff.per_query["id"] == query].iloc[0]
else:
    nb_default = ui.qp("neighbour")
candidates = list(dict.fromkeys([*row["neighbours_a"], *row["neighbours_b"],
                                 *pairs[pairs["query"] == query]["neighbour"].tolist()]))
if not candidates:
    st.stop()
if nb_default not in candidates:
    nb_default = candidates[0]
c1, c2, c3 = st.columns([3, 2, 1])
neighbour = c1.selectbox(f"Neighbour of {ui.plain(query)}", candidates, index=candidates.index(nb_default),
                         key=f"cmp_nb_{query}")
methods = list(ui.methods())
default_method = ui.default_methods(methods)[0]
method = c2.selectbox("Method (the same for both)", methods, index=methods.index(default_method), key="cmp_method")
per_map = c3.toggle("Scale per map", key="cmp_per_map")
if ui.qp("neighbour") != neighbour:
    ui.set_qp(neighbour=neighbour)
try:
    pics = _pair(root, name_a, stamps[0], name_b, stamps[1], query, neighbour, method, per_map)
except SimxError as exc:
    ui.show_error(exc, "Cannot explain the pair")
    st.stop()
ca, cb = st.columns(2)
for col, key, title in ((ca, "a", f"A: {name_a}"), (cb, "b", f"B: {name_b}")):
    col.markdown(f"**{ui.plain(title)}** · similarity {pics[key]['similarity']:.4f}")
    q_img, n_img = col.columns(2)
    q_img.image(pics[key]["query"], caption=f"query {ui.plain(query)}", width="stretch")
    n_img.image(pics[key]["neighbour"], caption=f"neighbour {ui.plain(neighbour)}", width="stretch")
st.image(pics["legend"], caption=pics["note"])
st.download_button("Download the summary with this pair (HTML)",
                   _report_with_pair(diff, (name_a, stamps[0], name_b, stamps[1], k, seen, query, neighbour, method,
                                            per_map), query, neighbour, method, pics),
                   file_name=f"simx-diff-{name_a}-vs-{name_b}-pair.html", mime="text/html", key="cmp_pair_html",
                   icon=":material/download:")
