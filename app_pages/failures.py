"""Failures: the per-query retrieval metrics, worst first, and where labels get confused; a row opens in Explore."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from app_pages import _common as ui
from app_pages._contrast import failure_link
from simx.errors import SimxError
from simx.index.evaluation import label_confusion

#: Queries per page of the failure table.
TABLE_ROWS = 1000

st.title("Failures")
name, index = ui.current_index()  # opened by app.py

k = st.sidebar.slider("k (neighbours evaluated)", 1, 50, ui.qp_int("k", 10, 1, 50), key="fail_k",
                      on_change=lambda: ui.set_qp(k=st.session_state["fail_k"]))
try:
    overall, per_label, per_query = ui.get_evaluation(name, k)
except SimxError as exc:
    st.info(f"No failure table for this index: {ui.plain(exc)}", icon=":material/info:")
    st.stop()

c = st.columns(5)
c[0].metric("queries", overall["n_queries"])
c[1].metric("precision@1", f"{overall['precision@1']:.3f}")
c[2].metric(f"precision@{k}", f"{overall['precision@k']:.3f}")
c[3].metric(f"recall@{k}", f"{overall['recall@k']:.3f}")
c[4].metric(f"mAP@{k}", f"{overall['mAP@k']:.3f}")
shares = "shares a label with" if overall.get("multi_label") else "has the label of"
st.caption(f"A neighbour is correct when it {shares} the query (relevant = {overall.get('relevance', 'same label')}); "
           f"{overall['n_skipped']} items that share no label with any other are not queries.")

# human verdicts per query, from the label store
store = ui.label_store(name)
bad_counts: dict[str, int] = {}
for lab in store.list(index=name, verdict="bad"):
    bad_counts[lab.query_id] = bad_counts.get(lab.query_id, 0) + 1

f1, f2, f3 = st.columns([3, 2, 2])
labels = sorted({lab for labs in per_query["labels"] for lab in labs})
chosen = f1.multiselect("Labels (empty: all)", labels, key="fail_labels")
max_ap = f2.slider("Show queries with AP at most", 0.0, 1.0, 1.0, 0.05, key="fail_ap")
only_p1 = f3.toggle("Only wrong first neighbour", key="fail_p1")

table = per_query.copy()
if chosen:
    table = table[[bool(set(labs) & set(chosen)) for labs in table["labels"]]]
table = table[table["ap"] <= max_ap + 1e-9]
if only_p1:
    table = table[table["p1"] < 1]
# server-side pages: a 1M index's sampled evaluation has 20k queries; the browser gets one page of them
n_match = len(table)
n_pages = max(1, -(-n_match // TABLE_ROWS))
page = st.number_input(f"Page (of {n_pages}, {TABLE_ROWS} queries each)", 1, n_pages, 1,
                       key="fail_page") if n_pages > 1 else 1
table = table.iloc[(page - 1) * TABLE_ROWS : page * TABLE_ROWS]
table = table.assign(labels=[" | ".join(labs) for labs in table["labels"]],
                     bad_labels=[bad_counts.get(i, 0) for i in table["id"]],
                     neighbours=[", ".join(f"{'✓' if ok else '✗'} {n}" for n, ok in zip(list(nbs)[:5], list(rel)))
                                 for nbs, rel in zip(table["neighbours"], table["relevant"])])
table = table.drop(columns=["label", "relevant"])
sample = (f" (a seeded sample of the {overall['n_eligible']:,} queries)" if overall.get("sampled") else "")
st.caption(f"{n_match} of {len(per_query)} queries{sample}, worst average precision first. Click a row, then open it.")
event = st.dataframe(
    table, key="fail_table", on_select="rerun", selection_mode="single-row", hide_index=True,
    column_config={
        "ap": st.column_config.ProgressColumn("AP@k", min_value=0.0, max_value=1.0, format="%.3f"),
        "p1": st.column_config.NumberColumn("P@1", format="%.0f"),
        "pk": st.column_config.NumberColumn("P@k", format="%.3f"),
        "rk": st.column_config.NumberColumn("R@k", format="%.3f"),
        "n_relevant": st.column_config.NumberColumn("relevant"),
        "bad_labels": st.column_config.NumberColumn("bad labels"),
        "neighbours": st.column_config.TextColumn("first neighbours", help="✓ shares a label with the query, "
                                                  "✗ shares none (a failure)"),
    },
)
rows = event.selection.rows if event is not None else []
if rows:
    qid = table.iloc[rows[0]]["id"]
    st.markdown(f"Selected query: {ui.plain(qid)}")
    st.page_link("app_pages/explore.py", label="Open in Explore", icon=":material/open_in_new:",
                 query_params=ui.carry_params(query=qid, neighbour=None, mode=None))
    failure_link(index, store, name, qid)

st.subheader("Label confusion")
st.caption("How often a query of one label (rows) retrieves a neighbour of another label (columns) in its top k; "
           "the diagonal is correct retrieval (a neighbour carrying the query's label). A query or neighbour with "
           "several labels splits its count evenly over them.")
conf = label_confusion(per_query, {it.id: it.labels for it in index.items}, normalise=True)
if conf.empty:
    st.info("Nothing to show.")
else:
    fig = go.Figure(go.Heatmap(z=conf.values, x=[str(c) for c in conf.columns], y=[str(r) for r in conf.index],
                               colorscale="Reds", zmin=0, zmax=1,
                               hovertemplate="query %{y}<br>neighbour %{x}<br>share %{z:.2f}<extra></extra>"))
    fig.update_layout(height=max(320, 24 * len(conf) + 120), margin=dict(l=0, r=0, t=10, b=0),
                      xaxis_title="neighbour label", yaxis_title="query label", yaxis_autorange="reversed")
    st.plotly_chart(fig, key="fail_confusion")
