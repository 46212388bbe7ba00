"""Review queue: the top-k pairs of the worst queries, one at a time, labelled good / bad / skipped at speed."""

from __future__ import annotations

import streamlit as st

from app_pages import _common as ui
from app_pages._contrast import contrast_section
from simx import report
from simx.errors import SimxError
from simx.labels import REASONS

st.title("Review queue")
name, index = ui.current_index()  # opened by app.py
store = ui.label_store(name)

with st.sidebar:
    if "user" not in st.session_state:
        st.session_state["user"] = ui.current_user()
    st.text_input("Your name (for labels)", key="user")
    k = st.slider("Pairs per query (k)", 1, 30, ui.qp_int("k", 10, 1, 30), key="k_pick",
                  on_change=lambda: ui.set_qp(k=st.session_state["k_pick"]))


def review_pairs() -> list[tuple[str, str, int]]:
    """(query, neighbour, rank) of the top-k neighbours of every labelled query, worst queries first (the order
    of simx.index.evaluation.review_pairs: relevance = sharing a label)."""
    from simx.index.evaluation import review_pairs as queue_order

    try:
        _, _, per_query = ui.get_evaluation(name, k)
    except SimxError:
        return []
    return queue_order(per_query, k)


def review_act(action: str, pair: tuple[str, str, int]) -> None:
    q, n, r = pair
    hist = st.session_state.setdefault("review_history", [])
    if action == "back":
        if hist:
            st.session_state["review_override"] = hist.pop()
        return
    if action in ("good", "bad"):
        reason = st.session_state.get("review_reason") if action == "bad" else None
        try:
            store.put(name, q, n, action, reason=reason, user=ui.current_user(), model=index.meta["model"]["spec"],
                      rank=r)
        except SimxError as exc:
            st.session_state["review_msg"] = f"Could not save: {exc}"
            return
    else:
        st.session_state.setdefault("review_skipped", set()).add((q, n))
    hist.append(pair)
    st.session_state.pop("review_override", None)


pairs = review_pairs()
if not pairs:
    st.info("The review queue walks the top-k pairs of the worst queries; it needs labelled items (a folder "
            "gallery's sub-folders or a manifest 'label' column).")
    st.stop()
done = store.labelled_pairs(name, user=ui.current_user())
skipped = st.session_state.get("review_skipped", set())
remaining = [p for p in pairs if (p[0], p[1]) not in done and (p[0], p[1]) not in skipped]
current = st.session_state.get("review_override") or (remaining[0] if remaining else None)
st.progress(1 - len(remaining) / len(pairs),
            text=f"{len(pairs) - len(remaining)} of {len(pairs)} pairs labelled or skipped "
                 f"(worst queries first, {ui.current_user()})")
msg = st.session_state.pop("review_msg", None)
if msg:
    st.error(msg)
if current is None:
    st.success("Every pair of the queue is labelled.")
    st.stop()
q, n, r = current
method = (ui.qp_list("methods") or ui.default_methods(list(ui.methods())))[0]
try:
    with st.spinner(f"Running {method}..."):
        view = ui.get_explanation(name, q, n, method)
except Exception as exc:  # noqa: BLE001
    ui.show_error(exc, method)
    view = None
qi, ni = index.item(q), index.item(n)
c1, c2, c3 = st.columns([2, 2, 1.4])
if view is not None:
    c1.image(report.overlay(view["query_image"], view["query_map"], 0.5), width="stretch",
             caption=f"query {q} ({' | '.join(qi.labels) or '-'})")
    c2.image(report.overlay(view["neighbour_image"], view["neighbour_map"], 0.5), width="stretch",
             caption=f"#{r} {n} ({' | '.join(ni.labels) or '-'})")
with c3:
    if view is not None:
        st.metric("similarity", f"{view['similarity']:.4f}")
    st.markdown(ui.pair_badge(index, q, n))
    st.selectbox("Reason for bad", list(REASONS), format_func=REASONS.get, key="review_reason",
                 index=list(REASONS).index("other"))
    b1, b2 = st.columns(2)
    b1.button("Good", key="rq_good", shortcut="G", on_click=review_act, args=("good", current),
              type="primary", width="stretch")
    b2.button("Bad", key="rq_bad", shortcut="B", on_click=review_act, args=("bad", current),
              width="stretch")
    b3, b4 = st.columns(2)
    b3.button("Skip", key="rq_skip", shortcut="S", on_click=review_act, args=("skip", current),
              width="stretch")
    b4.button("Back", key="rq_back", shortcut="Left", on_click=review_act, args=("back", current),
              disabled=not st.session_state.get("review_history"), width="stretch")
    st.caption("Keys: **G** good · **B** bad · **S** skip · **←** back")
    st.page_link("app_pages/explore.py", label="Open in Explore", icon=":material/open_in_new:",
                 query_params=ui.carry_params(query=q, neighbour=n, mode=None))
if st.toggle("Why not the right one?", key="review_contrast", help="Compare this neighbour with the one that "
             "should have ranked first: the margin map, the region that flips the order, a one-line reading"):
    contrast_section(name, index, store, q, n, key="review", force=True)
