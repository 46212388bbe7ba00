"""Text queries on the Explore page (CLIP-style indexes, issue 13): a text box beside the query picker, the text's
neighbours, and for an opened neighbour the image-side maps (which regions match the text) with their similarity,
cost and faithfulness. State lives in the URL: ``text`` (the query text) and ``neighbour``. All maths is in
:mod:`simx` (``Index.search_text``, :func:`simx.explain.text.explain_text`); this module draws."""

from __future__ import annotations

import streamlit as st

from app_pages import _common as ui
from simx.render import pair_panels

#: methods offered for a text query: first-order maps of one side (joint methods pair cells of two images)
TEXT_KINDS = ("gradient", "closed-form", "perturbation")


def supports_text(index) -> bool:
    """True when the index's model has a text tower (loading the model once; False when it cannot load)."""
    try:
        return bool(index.model.supports_text)
    except Exception:  # noqa: BLE001 - a model that cannot load has no text box; the page reports the error elsewhere
        return False


def text_box() -> None:
    """The text query input (a tab of the query picker)."""
    with st.form("text_query_form", border=False):
        text = st.text_input("Describe what you are looking for", value=ui.qp("text") or "", key="text_query",
                             help="For example: a red double-decker bus")
        if st.form_submit_button("Search by text", icon=":material/text_fields:"):
            ui.set_qp(text=text.strip() or None, query=None, neighbour=None)
            st.rerun()


@st.cache_data(show_spinner="Searching by text...", max_entries=64)
def _text_neighbours(root: str, name: str, stamp: str, text: str, k: int) -> list[dict]:
    index = ui._open_index(root, name, stamp)
    return [h.to_dict() for h in index.search_text(text, k)]


@st.cache_data(show_spinner=False, max_entries=128)
def _text_view(root: str, name: str, stamp: str, text: str, neighbour: str, method: str, full: bool):
    """The explanation of a neighbour against the text (a plain value), with the faithfulness of its map scored
    against the text embedding: the cheap estimate, or with ``full`` the 101-step curve."""
    from simx.data import load_image
    from simx.explain.metrics import ESTIMATE_STEPS, FULL_STEPS, faithfulness
    from simx.explain.text import explain_text

    index = ui._open_index(root, name, stamp)
    exp = explain_text(index.model, text, [load_image(index.item(neighbour).path)], method=method, seed=0)
    faithfulness(exp, index.model, steps=FULL_STEPS if full else ESTIMATE_STEPS)
    return exp


def text_page(name: str, index, text: str, k: int, present: bool) -> None:
    """The results of a text query: neighbours, then the opened neighbour's maps."""
    root, stamp = str(ui.index_root()), ui.index_stamp(name)
    try:
        hits = _text_neighbours(root, name, stamp, text, int(k))
    except Exception as exc:  # noqa: BLE001
        ui.show_error(exc, "text search")
        return
    st.markdown("**Text query**")
    st.text(text)  # user text is shown as text, never as Markdown
    neighbour = ui.qp("neighbour")
    per_row = 5 if len(hits) > 5 else max(1, len(hits))
    for row in range(0, len(hits), per_row):
        for col, h in zip(st.columns(per_row), hits[row : row + per_row]):
            with col:
                t = ui.thumb(h["path"])
                if t is not None:
                    st.image(t, width="stretch")
                st.caption(f"#{h['rank']} · {h['score']:.3f} · {ui.plain(h['label'] or '')}")
                if not present:
                    st.button("Open" if h["id"] != neighbour else "Opened", key=f"tnb_{h['id']}",
                              on_click=ui.set_qp, kwargs={"neighbour": h["id"]}, width="stretch",
                              type="primary" if h["id"] == neighbour else "secondary")
    if neighbour is None or not ui.has_item(index, neighbour):
        st.info("Open a neighbour to see which of its regions match the text.")
        return
    st.divider()
    st.subheader("Which regions match the text?")
    kinds = ui.method_kinds()
    offered = [m for m in ui.methods() if kinds.get(m) in TEXT_KINDS]
    wanted = [m for m in ui.qp_list("methods") if m in offered] or ui.default_methods(offered)
    chosen = wanted if present else st.multiselect("Saliency methods (one row each)", offered, default=wanted,
                                                   key="text_methods")
    for m in chosen:
        with st.container(border=True):
            fkey = f"tfaith_{neighbour}_{m}"
            full = bool(st.session_state.get(fkey))
            try:
                with st.spinner(f"Running {m} and the faithfulness of its map..."):
                    exp = _text_view(root, name, stamp, text, neighbour, m, full)
            except Exception as exc:  # noqa: BLE001
                ui.show_error(exc, m)
                continue
            c1, c2 = st.columns([2, 1.3])
            ui.show_map(c1, pair_panels(exp)[1], f"{m}: neighbour vs text")  # with its faithfulness line
            with c2:
                st.markdown(f"**{m}**  \nsimilarity **{float(exp.similarities[0]):.4f}**")
                st.caption(f"{exp.cost.forward} forward, {exp.cost.backward} backward passes, "
                           f"{exp.cost.seconds:.2f} s")
                if not present and not full:
                    st.button("Full insertion / deletion curve", key=f"btn_{fkey}",
                              on_click=st.session_state.__setitem__, args=(fkey, True),
                              help="Faithfulness of this map against the text embedding at 101 steps (the map "
                                   "shows an 11-step estimate)")
