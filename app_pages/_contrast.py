""""Why not the right one?": the contrast view of a failing pair, for Explore, the review queue and Failures.

The maths lives in :mod:`simx.explain.contrast` (right-neighbour proposal, contrastive maps, counterfactual
regions, grey check, reading) and the pictures in :mod:`simx.explain.contrast_view` (drawn by simx.render); this
module only caches the result per (index, query, wrong, right, method) and lays it out.
"""

from __future__ import annotations

import streamlit as st

from app_pages import _common as ui

#: Methods tried first for the view (closed-form: no extra backward pass, the margin map sums to the margin).
PREFERRED = ("searchcam", "sfam", "gradcam")


def contrast_methods(index) -> list[str]:
    """Methods that have a contrastive map for the index's model, preferred ones first."""
    from simx.explain import REGISTRY

    able = [m for m, spec in sorted(REGISTRY.items()) if spec.contrast_params(index.model) is not None]
    return [m for m in PREFERRED if m in able] + [m for m in able if m not in PREFERRED]


@st.cache_data(show_spinner=False, max_entries=64)
def _why_not(root: str, name: str, stamp: str, query: str, wrong: str, right: str, method: str) -> dict:
    from simx.data import load_image
    from simx.explain.contrast import why_not
    from simx.explain.contrast_view import contrast_panels
    from simx.explain.scheduling import TURNS

    index = ui._open_index(root, name, stamp)
    images = [load_image(index.item(i).path) for i in (query, wrong, right)]
    with TURNS.person():  # one explanation at a time; the prefetch steps aside
        result = why_not(index.model, *images, method=method)
    return {**contrast_panels(result), **result.to_dict(), "margin": result.margin}


def get_why_not(name: str, query: str, wrong: str, right: str, method: str) -> dict:
    return _why_not(str(ui.index_root()), name, ui.index_stamp(name), query, wrong, right, method)


def announced_cost(index, query: str, wrong: str, right: str, method: str):
    """What the view will cost before it runs, every pass counted (:func:`simx.explain.contrast.estimate_why_not`
    on the prepared images, so cached ones are not counted)."""
    from simx.data import load_image
    from simx.explain.contrast import estimate_why_not
    from simx.explain.engine import PairContext

    images = [load_image(index.item(i).path) for i in (query, wrong, right)]
    return estimate_why_not(index.model, method, pair=PairContext(index.model, images[0], images[1:]))


def is_wrong(index, store, name: str, query: str, neighbour: str) -> bool:
    """True when the neighbour is a failure: labelled bad (latest verdict), or sharing no label with the query."""
    from simx.relevance import shares_label

    labels = store.find(name, query, neighbour)
    if labels:
        return labels[0].verdict == "bad"
    return shares_label(index.item(query), index.item(neighbour)) is False


def right_for(index, store, query: str, wrong: str) -> str | None:
    """The right neighbour: ``?versus=`` when it names a gallery item, else the one simx proposes."""
    from simx.explain.contrast import propose_right

    chosen = ui.qp("versus")
    if chosen and ui.has_item(index, chosen) and chosen not in (query, wrong):
        return chosen
    hit = propose_right(index, query, labels=store, exclude=wrong)
    return None if hit is None else hit.id


def contrast_section(name: str, index, store, query: str, neighbour: str, key: str = "explore",
                     force: bool = False) -> str | None:
    """Draw "Why not the right one?" for a failing (query, neighbour) pair (or any pair with ``force``);
    returns the label reason the view suggests (None when it suggests none or is not shown)."""
    if query.startswith(ui.UPLOAD_PREFIX) or not (force or is_wrong(index, store, name, query, neighbour)):
        return None
    st.divider()
    st.subheader("Why not the right one?")
    right = right_for(index, store, query, neighbour)
    if right is None:
        st.caption("No neighbour sharing the query's label (or labelled good) among its first 100: nothing to "
                   "compare with.")
        return None
    methods = contrast_methods(index)
    if not methods:
        st.caption("No explanation method has a contrastive map for this model.")
        return None
    method = st.selectbox("Contrast method", methods, key=f"contrast_method_{key}",
                          help="The map of the margin s(query, wrong) - s(query, right) on the query")
    from simx.explain import REGISTRY

    run_key = f"contrast_run_{key}_{query}_{neighbour}_{right}_{method}"
    if REGISTRY[method].kind == "perturbation" and not st.session_state.get(run_key):
        cost = announced_cost(index, query, neighbour, right, method)
        st.caption(f"{cost.describe()}: the maps, their faithfulness estimate, the counterfactual regions (which "
                   "stop at the first region that flips the order) and the grey check.")
        st.button("Run", key=f"contrast_go_{key}", icon=":material/play_arrow:",
                  on_click=lambda: st.session_state.__setitem__(run_key, True))
        return None
    try:
        with st.spinner(f"Comparing the two neighbours with {method}..."):
            view = get_why_not(name, query, neighbour, right, method)
    except Exception as exc:  # noqa: BLE001
        ui.show_error(exc, method)
        return None
    s = view["similarities"]
    c1, c2, c3 = st.columns(3)
    c1.image(view["query"], width="stretch", caption=f"query {ui.plain(query)}: red argues for the wrong one, blue for "
                                                      "the right one; green: the counterfactual region")
    c2.image(view["wrong"], width="stretch", caption=f"wrong {ui.plain(neighbour)}: s = {s[0]:.4f}")
    c3.image(view["right"], width="stretch", caption=f"right {ui.plain(right)}: s = {s[1]:.4f}")
    for col, notes in ((c2, view["wrong_notes"]), (c3, view["right_notes"])):
        for text, warning in notes:  # our own sentences (numbers and fixed words), never user text
            col.caption(f":red[:material/warning: {text}]" if warning else text)
    l1, l2 = st.columns([1, 2])
    l1.image(view["query_legend"], width="stretch")
    l2.image(view["pair_legend"], width="stretch")
    m1, m2, m3 = st.columns(3)
    m1.metric("margin s(q, wrong) - s(q, right)", f"{view['margin']:+.4f}")
    region = view["query_region"]
    m2.metric("query region that flips it", f"{region['area']:.0%}" if region["found"] else "none up to 50%")
    m3.metric("margin with the images in grey", f"{max(view['grey']['grey_margin']):+.4f}")
    st.text(view["reading"])  # generated text, shown as text
    if view["reason"]:
        from simx.labels import REASONS

        st.caption(f"Suggested label reason: {REASONS.get(view['reason'], view['reason'])}")
    if key != "explore":
        st.page_link("app_pages/explore.py", label="Open this comparison in Explore", icon=":material/open_in_new:",
                     query_params=ui.carry_params(query=query, neighbour=neighbour, versus=right, why=1, mode=None))
    return view["reason"]


def failure_link(index, store, name: str, query: str) -> None:
    """A link from the Failures page straight to the contrast view of the query's first failure."""
    from simx.explain.contrast import failing_pair

    pair = failing_pair(index, query, labels=store)
    if pair is None:
        return
    wrong, right = pair
    st.page_link("app_pages/explore.py", label=f"Why not the right one? ({ui.plain(wrong.id)} ranked above {ui.plain(right.id)})",
                 icon=":material/compare:",
                 query_params=ui.carry_params(query=query, neighbour=wrong.id, versus=right.id, why=1, mode=None))
