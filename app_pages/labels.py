"""Labels: every labelled pair with thumbnails; filter, edit, delete, count and export."""

from __future__ import annotations

from datetime import date, timedelta

import streamlit as st

from app_pages import _common as ui
from simx.errors import SimxError
from simx.labels_io import index_triplets
from simx.labels import REASONS, VERDICTS

PAGE_SIZE = 20

st.title("Labels")
name, index = ui.current_index()  # opened by app.py
store = ui.label_store(name)

f1, f2, f3, f4 = st.columns([2, 3, 2, 3])
verdicts = f1.multiselect("Verdict (empty: any)", list(VERDICTS), key="lab_verdict")
reasons = f2.multiselect("Reason (empty: any)", list(REASONS), format_func=REASONS.get, key="lab_reason")
users = f3.multiselect("User (empty: anyone)", store.users(index=name), key="lab_user")
today = date.today()
span = f4.date_input("Updated between", value=(today - timedelta(days=3650), today + timedelta(days=1)),
                     key="lab_dates")
since, until = (span if isinstance(span, (list, tuple)) and len(span) == 2 else (None, None))
filters = dict(index=name, verdict=verdicts or None, reason=reasons or None, user=users or None, since=since,
               until=until)

counts = store.counts(**filters)
c = st.columns(3 + len(REASONS))
c[0].metric("labels", counts["total"])
c[1].metric("good", counts["verdict"].get("good", 0))
c[2].metric("bad", counts["verdict"].get("bad", 0))
for col, (key, text) in zip(c[3:], REASONS.items()):
    col.metric(text, counts["reason"].get(key, 0))

e1, e2, e3 = st.columns(3)
e1.download_button("Export CSV", data=lambda: store.export_csv(**filters), file_name=f"{name}_labels.csv",
                   mime="text/csv", icon=":material/download:", on_click="ignore", key="exp_csv")
e2.download_button("Export JSONL", data=lambda: store.export_jsonl(**filters), file_name=f"{name}_labels.jsonl",
                   mime="application/jsonl", icon=":material/download:", on_click="ignore", key="exp_jsonl")


def triplets() -> str:
    return index_triplets(store, index, k=ui.qp_int("k", 10, 1, 50), user=users or None)


e3.download_button("Export hard-negative triplets", data=triplets, file_name=f"{name}_triplets.csv", mime="text/csv",
                   icon=":material/download:", on_click="ignore", key="exp_triplets",
                   help="query, positive, negative: negatives are bad-labelled neighbours, positives good-labelled "
                        "or same-label neighbours")

labels = store.list(**filters)
if not labels:
    st.info("No labelled pair matches. Label pairs on the Explore page (good / bad match) or in its review queue.")
    st.stop()

pages = max(1, -(-len(labels) // PAGE_SIZE))
page = int(st.number_input(f"Page (of {pages})", 1, pages, 1, key="lab_page")) if pages > 1 else 1


def save(label_id: int) -> None:
    try:
        store.update(label_id, verdict=st.session_state[f"lv_{label_id}"],
                     reason=st.session_state[f"lr_{label_id}"] or None, note=st.session_state[f"ln_{label_id}"])
        st.session_state["lab_msg"] = f"Label {label_id} updated."
    except SimxError as exc:
        st.session_state["lab_msg"] = f"Could not update label {label_id}: {exc}"


def remove(label_id: int) -> None:
    st.session_state.pop("lab_confirm_delete", None)
    try:
        store.delete(label_id)
        st.session_state["lab_msg"] = f"Label {label_id} deleted."
    except SimxError as exc:
        st.session_state["lab_msg"] = f"Could not delete label {label_id}: {exc}"


msg = st.session_state.pop("lab_msg", None)
if msg:
    st.toast(ui.plain(msg))

for lab in labels[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]:
    with st.container(border=True):
        cols = st.columns([1, 1, 4, 1])
        for col, item_id, role in ((cols[0], lab.query_id, "query"), (cols[1], lab.neighbour_id, "neighbour")):
            path = index.item(item_id).path if ui.has_item(index, item_id) else None
            t = ui.thumb(path) if path else None
            if t is not None:
                col.image(t, width="stretch")
            col.caption(role)
            col.text(item_id)
        with cols[2]:
            st.markdown(f"{ui.verdict_badge(lab.verdict)} by **{ui.plain(lab.user)}** · rank {lab.rank or '-'} · "
                        f"score {'-' if lab.score is None else f'{lab.score:.3f}'} · updated "
                        f"{lab.updated:%Y-%m-%d %H:%M} UTC")
            a, b, n = st.columns([1, 2, 3])
            a.selectbox("verdict", list(VERDICTS), index=list(VERDICTS).index(lab.verdict), key=f"lv_{lab.id}")
            options = [""] + list(REASONS)
            b.selectbox("reason", options, index=options.index(lab.reason or ""), key=f"lr_{lab.id}",
                        format_func=lambda r: REASONS.get(r, "none"))
            n.text_input("note", value=lab.note, key=f"ln_{lab.id}")
        with cols[3]:
            st.button("Save", key=f"ls_{lab.id}", on_click=save, args=(lab.id,), width="stretch")
            if st.session_state.get("lab_confirm_delete") == lab.id:
                st.caption("Delete this label? Its history is kept.")
                st.button("Yes, delete", key=f"ldy_{lab.id}", on_click=remove, args=(lab.id,), type="primary",
                          width="stretch")
                st.button("Cancel", key=f"ldn_{lab.id}", on_click=st.session_state.pop,
                          args=("lab_confirm_delete", None), width="stretch")
            else:
                st.button("Delete", key=f"ld_{lab.id}", on_click=st.session_state.__setitem__,
                          args=("lab_confirm_delete", lab.id), width="stretch", help="Asks for confirmation")
            st.page_link("app_pages/explore.py", label="Open", icon=":material/open_in_new:",
                         query_params=ui.carry_params(query=lab.query_id, neighbour=lab.neighbour_id, mode=None))
