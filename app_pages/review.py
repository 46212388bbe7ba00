"""Review queue: the top-k pairs of the worst queries, one at a time, labelled good / bad / skipped at speed.

Keys (``review_keys.js``): each press carries the pair that was on screen when it was sent, and presses made while
the page redraws wait their turn, so no verdict lands on the wrong pair (the rules are in :mod:`simx.review`).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app_pages import _common as ui
from app_pages import _identity
from app_pages._contrast import contrast_section
from simx import render
from simx import review as rv
from simx.errors import SimxError
from simx.labels import REASONS

KEYS_JS = (Path(__file__).with_name("review_keys.js")).read_text()
_review_keys = st.components.v2.component("simx_review_keys", js=KEYS_JS)
KEY_MAP = rv.key_map(list(REASONS))

st.title("Review queue")
name, index = ui.current_index()  # opened by app.py
store = ui.label_store(name)

with st.sidebar:
    ui.url_k("k_pick")
    k = st.slider("Pairs per query (k)", 1, 30, key="k_pick", on_change=lambda: ui.set_qp(k=st.session_state["k_pick"]))

state: rv.ReviewState = st.session_state.setdefault(f"review_state_{name}", rv.ReviewState())


def review_pairs() -> list[rv.Pair]:
    """The top-k neighbours of every labelled query, worst queries first (relevance = sharing a label)."""
    try:
        _, _, per_query = ui.get_evaluation(name, k)
    except SimxError:
        return []
    return rv.queue_pairs(per_query, k)


def pair_score(pair: rv.Pair) -> float | None:
    """The pair's retrieval score (the index's search, cached per query)."""
    try:
        hits = ui.get_neighbours(name, pair.query, max(k, pair.rank))
    except SimxError:
        return None
    return next((float(h["score"]) for h in hits if h["id"] == pair.neighbour), None)


def save(pair: rv.Pair, verdict: str, reason: str | None) -> None:
    user = ui.current_user()
    if not user:
        raise rv.ReviewError("enter your name first: labels are saved under it")
    store.put(name, pair.query, pair.neighbour, verdict, reason=reason, user=user,
              model=index.meta["model"]["spec"], rank=pair.rank, score=pair_score(pair))


def report_outcome(fn) -> None:
    """Run one queue action; what happened (or why not) is shown above the pair."""
    try:
        done = fn()
    except SimxError as exc:
        st.session_state["review_msg"] = ("error", f"Not saved: {exc}")
        return
    if done:
        st.session_state["review_msg"] = ("info", done)


def on_press() -> None:
    """A key press from the browser (``review_keys.js``): applied to the pair it names."""
    value = st.session_state.get("review_keys")
    raw = value.get("press") if hasattr(value, "get") else None
    if raw is None:
        return
    report_outcome(lambda: rv.apply_press(state, rv.parse_press(raw), review_pairs(), KEY_MAP,
                                          st.session_state.get("review_reason"), save))


def on_button(action: str, pair: rv.Pair) -> None:
    reason = st.session_state.get("review_reason")
    report_outcome(lambda: rv.apply_action(state, action, pair, reason, save))


pairs = review_pairs()
if not pairs:
    st.info("The review queue walks the top-k pairs of the worst queries; it needs labelled items (a folder "
            "gallery's sub-folders or a manifest 'label' column).")
    st.stop()
user = _identity.ask_name("review")
done = store.labelled_pairs(name, user=user) if user else set()
current, remaining = rv.current_pair(state, pairs, done)
st.progress(1 - remaining / len(pairs),
            text=f"{len(pairs) - remaining} of {len(pairs)} pairs labelled or skipped (worst queries first)")
if user:
    st.caption("Labelling as")
    st.text(user)
kind, msg = st.session_state.pop("review_msg", (None, None))
if msg:
    (st.error if kind == "error" else st.caption)(msg)
_review_keys(key="review_keys", data={"pair": current.token() if current else None, "ack": state.ack,
                                      "keys": {key: action for key, (action, _) in KEY_MAP.items()},
                                      "enabled": bool(user)},
             on_press_change=on_press, height="content")
if current is None:
    st.success("Every pair of the queue is labelled.")
    st.stop()
q, n, r = current.query, current.neighbour, current.rank
score = pair_score(current)
method = (ui.qp_list("methods") or ui.default_methods(list(ui.methods())))[0]
try:
    with st.spinner(f"Running {method}..."):
        view = ui.get_explanation(name, q, n, method)  # with its faithfulness estimate
except Exception as exc:  # noqa: BLE001
    ui.show_error(exc, method)
    view = None
qi, ni = index.item(q), index.item(n)
c1, c2, c3 = st.columns([2, 2, 1.4])
panels = render.pair_panels(view) if view is not None else [None, None]
for col, panel, what, item in ((c1, panels[0], "query", qi), (c2, panels[1], f"rank {r}", ni)):
    with col:
        if panel is not None:
            ui.show_map(col, panel, None, alpha=0.5)  # with its faithfulness estimate and warnings
        st.caption(what)
        st.text(f"{item.id}\nlabels: {' | '.join(item.labels) or '-'}")
with c3:
    st.metric(f"score (rank {r})", "-" if score is None else f"{score:.4f}")
    st.markdown(ui.pair_badge(index, q, n))
    st.selectbox("Reason for bad (B)", list(REASONS), format_func=REASONS.get, key="review_reason",
                 index=list(REASONS).index("other"))
    b1, b2 = st.columns(2)
    b1.button("Good", key="rq_good", on_click=on_button, args=("good", current), type="primary", width="stretch",
              disabled=not user)
    b2.button("Bad", key="rq_bad", on_click=on_button, args=("bad", current), width="stretch", disabled=not user)
    b3, b4 = st.columns(2)
    b3.button("Skip", key="rq_skip", on_click=on_button, args=("skip", current), width="stretch")
    b4.button("Back", key="rq_back", on_click=on_button, args=("back", current), disabled=not state.history,
              width="stretch")
    st.caption("Keys: **G** good · **B** bad (reason above) · **S** skip · **←** back · bad with a reason: "
               + " · ".join(f"**{i + 1}** {text}" for i, text in enumerate(list(REASONS.values())[:9])))
    st.page_link("app_pages/explore.py", label="Open in Explore", icon=":material/open_in_new:",
                 query_params=ui.carry_params(query=q, neighbour=n, mode=None))
if st.toggle("Why not the right one?", key="review_contrast", help="Compare this neighbour with the one that "
             "should have ranked first: the margin map, the region that flips the order, a one-line reading"):
    contrast_section(name, index, store, q, n, key="review", force=True)
