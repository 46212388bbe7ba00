"""Explore: pick a query, see its neighbours, open a pair and see why it matches; label it."""

from __future__ import annotations

import random

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from app_pages import _common as ui
from app_pages import _identity, _precomputed
from app_pages._contrast import contrast_section
from app_pages._text_query import supports_text, text_box, text_page
from simx import render, report
from simx.errors import SimxError

GRID_COLS = 8
PAGE_SIZE = 24

present = ui.presentation()
name, index = ui.current_index()  # opened by app.py
store = ui.label_store(name)

with st.sidebar:
    ui.url_k("k_pick")
    k = st.slider("Neighbours (k)", 1, 30, key="k_pick", on_change=lambda: ui.set_qp(k=st.session_state["k_pick"]))
    st.button("Presentation mode", icon=":material/slideshow:", help="Hide every control; share the link",
              on_click=lambda: ui.set_qp(present=1))

if present:
    st.button("Exit presentation", icon=":material/close:", on_click=lambda: ui.set_qp(present=None))

# ------------------------------------------------------------------------------------------------ callbacks


def pick_query(item_id: str) -> None:
    ui.set_qp(query=item_id, neighbour=None, versus=None, why=None, text=None, point=None, sane=None)
    st.session_state["fold_picker"] = True  # fold the gallery away once a query is chosen


def pick_neighbour(item_id: str) -> None:
    ui.set_qp(neighbour=item_id, versus=None, why=None, point=None, sane=None)


def random_query() -> None:
    pick_query(random.choice(index.ids))


def worst_queries() -> list[str] | None:
    """The failing queries, worst first (relevance: sharing a label, simx.index.evaluation.failure_ids)."""
    from simx.index.evaluation import failure_ids

    try:
        _, _, per_query = ui.get_evaluation(name, k)
    except SimxError:
        return None
    return failure_ids(per_query)


def next_failure() -> None:
    from simx.index.evaluation import next_failure as following

    try:
        _, _, per_query = ui.get_evaluation(name, k)
    except SimxError:
        return
    nxt = following(per_query, ui.qp("query"))
    if nxt is not None:
        pick_query(nxt)


# ------------------------------------------------------------------------------------------------ query picker


def query_picker() -> None:
    text_ok = supports_text(index)  # CLIP-style models take a text query too
    tabs = st.tabs(["Gallery", "Upload an image"] + (["Describe it (text)"] if text_ok else []))
    gallery_tab, upload_tab = tabs[0], tabs[1]
    if text_ok:
        with tabs[2]:
            text_box()
    with gallery_tab:
        labels = sorted({lab for it in index.items for lab in it.labels})
        c1, c2, c3, c4 = st.columns([3, 3, 1.2, 1.6], vertical_alignment="bottom")  # button labels never cut
        chosen = c1.multiselect("Labels (empty: all)", labels, key="flt_labels")
        text = c2.text_input("Search labels, descriptions and ids", key="flt_text").strip().lower()
        c3.button("Random", icon=":material/casino:", on_click=random_query, width="stretch")
        failures = worst_queries()
        c4.button("Next failure", icon=":material/skip_next:", on_click=next_failure, disabled=not failures,
                  width="stretch",
                  help="The next failing query (a neighbour sharing no label ranks above one that shares a "
                  "label), worst average precision first" if failures else
                  "No failing query (or no labelled items to evaluate)")

        def match(it) -> bool:
            if chosen and not set(it.labels) & set(chosen):
                return False
            if not text:
                return True
            hay = " ".join([it.id, *it.labels, str(it.metadata.get("description", "")), " ".join(it.attributes)])
            return text in hay.lower()

        items = [it for it in index.items if match(it)]
        pages = max(1, -(-len(items) // PAGE_SIZE))
        page = 1
        if pages > 1:
            page = int(st.number_input(f"Page (of {pages}, {len(items)} images)", 1, pages, 1, key="gallery_page"))
        else:
            st.caption(f"{len(items)} images")
        shown = items[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        for row in range(0, len(shown), GRID_COLS):
            cols = st.columns(GRID_COLS)
            for col, it in zip(cols, shown[row : row + GRID_COLS]):
                with col:
                    t = ui.thumb(it.path)
                    if t is not None:
                        st.image(t, width="stretch")
                    else:
                        st.caption("(unreadable)")
                    # the label as wrapping text: inside a button a long label would be cut to "a very lon..."
                    st.caption(ui.labels_text(it) if it.labels else ui.plain(it.id))
                    st.button("Choose", key=f"pick_{it.id}", on_click=pick_query, args=(it.id,),
                              help=f"Use {ui.plain(it.id)} as the query", width="stretch")
    with upload_tab:
        from simx.data import MAX_UPLOAD_DECODED_BYTES, load_upload

        # any file type is taken and checked here, so that a refusal (SVG, too large) is a message in the page
        up = st.file_uploader("Query image (kept in memory, never added to the gallery)", key="upload")
        st.caption(f"PNG, JPEG, WebP, BMP, GIF or TIFF: files up to {st.get_option('server.maxUploadSize')} MB "
                   f"(larger ones are refused by the upload box itself), images up to "
                   f"{MAX_UPLOAD_DECODED_BYTES // 2**20} MB once decoded (about 30 megapixels of colour).")
        if up is not None:
            data = up.getvalue()
            try:
                load_upload(data)
            except SimxError as exc:
                st.error(f"Cannot use '{ui.plain(up.name)}' as a query: "
                         f"{ui.plain(exc.reason if hasattr(exc, 'reason') else exc)}",
                         icon=":material/error:")
            else:
                key = ui.upload_key(data)
                st.session_state.setdefault("uploads", {})[key] = data
                if st.session_state.get("last_upload") != key:
                    st.session_state["last_upload"] = key
                    pick_query(key)
                    st.rerun()


# ------------------------------------------------------------------------------------------------ pair view parts


def pair_key(query: str, neighbour: str) -> str:
    return f"{query}|{neighbour}"


def full_faithfulness(query: str, neighbour: str, m: str, exp) -> dict | None:
    """The full insertion/deletion curves of one method's maps once asked for (kept in the explanation's scores,
    so its maps' notes and the downloads show them instead of the estimate)."""
    if not st.session_state.get(f"faith_{pair_key(query, neighbour)}_{m}"):
        return None
    try:
        with st.spinner("Scoring insertion/deletion at 101 steps..."):
            f = ui.get_faithfulness(name, query, neighbour, m)
    except Exception as exc:  # noqa: BLE001
        ui.show_error(exc, "insertion/deletion")
        return None
    exp.scores["faithfulness"] = f
    return f


def curves(query: str, neighbour: str, m: str, f: dict | None) -> None:
    fkey = f"faith_{pair_key(query, neighbour)}_{m}"
    if f is None:
        if not present:
            st.button("Full insertion / deletion curves", key=f"btn_{fkey}", on_click=st.session_state.__setitem__,
                      args=(fkey, True), help="Faithfulness at 101 steps (the maps show an 11-step estimate)")
        return
    st.caption(f["direction"])
    for side in ("query", "neighbour"):
        if side in f:
            st.caption(f"{side}: insertion {f[side]['insertion'][0]:.1f}, deletion {f[side]['deletion'][0]:.1f}")
            st.line_chart({"fraction of pixels": f["thresholds"], "insertion": f[side]["insertion_curves"][0],
                           "deletion": f[side]["deletion_curves"][0]}, x="fraction of pixels", height=160)


def method_rows(query: str, neighbour: str, chosen: list[str], alpha: float, per_map: bool) -> list:
    views = []
    for m in chosen:
        with st.container(border=True):
            try:  # maps stored by `simx explain-batch` open at once, unless asked to compute live
                stored = None if st.session_state.get(_precomputed.live_key(query, neighbour, m)) else \
                    _precomputed.stored_explanation(name, index, query, neighbour, m)
                exp = stored or ui.explanation_with_progress(name, query, neighbour, m)
            except Exception as exc:  # noqa: BLE001
                ui.show_error(exc, m)
                continue
            if exp is None:  # waiting for Run (its cost is shown), or cancelled
                continue
            views.append(exp)
            c1, c2, c3 = st.columns([2, 2, 1.3])
            if stored is not None:
                ui.show_maps((c1, c2), exp, (f"{m}: query (precomputed)", f"{m}: neighbour (precomputed)"), alpha,
                             per_map)
                with c3:
                    st.markdown(f"**{m}**  \nsimilarity **{float(exp.similarities[0]):.4f}**")
                    _precomputed.caption(exp, query, neighbour, m, present)
                continue
            full = full_faithfulness(query, neighbour, m, exp)
            ui.show_maps((c1, c2), exp, (f"{m}: query", f"{m}: neighbour"), alpha, per_map)
            with c3:
                st.markdown(f"**{m}**  \nsimilarity **{float(exp.similarities[0]):.4f}**")
                scoring = (exp.scores.get("faithfulness_estimate") or {}).get("cost") or {}
                st.caption(f"{exp.cost.forward} forward, {exp.cost.backward} backward passes, "
                           f"{exp.cost.seconds:.2f} s" + (f"; the faithfulness estimate {scoring['forward']} forward, "
                                                         f"{scoring['seconds']:.2f} s" if scoring else ""))
                curves(query, neighbour, m, full)
    return views


#: The saliency SANE matches attribute maps against unless the URL says otherwise: RISE, the paper's black-box
#: choice (methods.md 4.4). Its 500 masks per side cost minutes on a loaded 2-core CPU (about 250 s measured with
#: the default model at load 18), so the panel offers every first-order method; gradcam takes seconds.
SANE_SALIENCY = "rise"


def sane_saliency() -> str:
    """The saliency method of the SANE panel (``?sane_saliency=``; a picker, except in presentation mode)."""
    options = ui.method_groups()["first-order"]
    chosen = ui.qp("sane_saliency", SANE_SALIENCY)
    chosen = chosen if chosen in options else SANE_SALIENCY
    if present or chosen not in options:
        return chosen
    ui.follow_url("sane_saliency", chosen)
    return st.selectbox("Saliency matched against", options, key="sane_saliency",
                        help="SANE ranks the shared attributes by how well their maps match this method's saliency "
                             "map; RISE (the paper's choice) is the slowest, gradcam takes seconds.",
                        on_change=lambda: ui.set_qp(sane_saliency=None if st.session_state["sane_saliency"] ==
                                                    SANE_SALIENCY else st.session_state["sane_saliency"]))


def sane_panel(query: str, neighbour: str, alpha: float) -> dict | None:
    if "sane" not in ui.methods():
        return None
    flag = f"sane_{pair_key(query, neighbour)}"
    with st.expander("Attributes (SANE): which shared attribute explains the match", expanded=True):
        saliency = sane_saliency()
        if ui.qp("sane") != "1":  # in the URL: a link (and Back) reopens the pair with its SANE panel
            if not present:
                st.button("Run SANE", key=f"btn_{flag}", icon=":material/label_important:",
                          on_click=ui.set_qp, kwargs={"sane": 1})
            st.caption("Ranks the attributes the pair shares by confidence and how well they match the saliency.")
            return None
        from simx.attributes import index_attributes
        from simx.explain.methods.sane import shared_attribute_rows

        try:
            source = index_attributes(index)
            with st.spinner("Running SANE (attribute maps, saliency and ranking)..."):
                view = ui.get_explanation(name, query, neighbour, "sane", {**source.params, "saliency": saliency},
                                          with_estimate=False)
        except SimxError as exc:
            st.info(f"SANE is not available for this pair: {ui.plain(exc)}", icon=":material/info:")
            return None
        except Exception as exc:  # noqa: BLE001
            ui.show_error(exc, "sane")
            return None
        extras = view.pair_extras(0)
        st.caption(f"Vocabulary: {ui.plain(source.note)}.")
        rows = shared_attribute_rows(extras)
        if extras.get("message"):
            st.caption(ui.plain(extras["message"]))
        c1, c2 = st.columns([1, 1])
        if rows:
            c1.dataframe(rows, hide_index=True, key=f"sane_table_{pair_key(query, neighbour)}")
            c1.caption("Only attributes both images have (predicted at or above the threshold) are listed.")
            c2.image(render.overlay(view.image("neighbour"), view.neighbour_maps[0], alpha=alpha),
                     caption=f"'{ui.plain(rows[0]['attribute'])}' on the neighbour", width="stretch")
        else:
            c1.caption("No attribute that both images are predicted to have explains this match.")
        return {"attributes": [(r["attribute"], r["score"]) for r in rows], "map": view.neighbour_maps[0],
                "image": view.image("neighbour")}


def joint_figure(exp, point, box, alpha: float, lines: int, key: str) -> go.Figure:
    from simx.explain import views as jv

    qimg, nimg = exp.image("query"), exp.image("neighbour")
    h, w = qimg.shape[:2]
    gap = round(w * 0.06)
    proj = None
    if point is not None:
        proj = jv.project_point(exp, point)
    elif box is not None:
        proj = jv.project_region(exp, box)
    shown = render.overlay(nimg, proj.map, alpha=max(alpha, 0.75)) if proj is not None else nimg
    fig = go.Figure()
    # images travel as JPEG data URIs (a z array would be sent as JSON numbers, ~50x larger; PNG ~4x larger)
    fig.add_trace(go.Image(source=ui.image_uri(f"{key}|query", qimg), x0=0, y0=0,
                           hoverinfo="skip", name="query"))
    fig.add_trace(go.Image(source=render.data_uri(shown, fmt="jpeg"), x0=w + gap, y0=0, hoverinfo="skip",
                           name="neighbour"))
    centres = jv.cell_centres(exp.query_cells)
    n = len(centres)
    fig.add_trace(go.Scatter(x=centres[:, 0], y=centres[:, 1], mode="markers", name="query cells",
                             marker=dict(size=max(6, min(26, int(520 / max(np.sqrt(n), 1)))), color="white",
                                         opacity=0.22, line=dict(width=1, color="black")),
                             hovertemplate="query cell %{pointNumber}: (%{x:.0f}, %{y:.0f})<extra></extra>"))
    if lines:  # all correspondence lines in one trace (None breaks the line): one trace validates fast
        xs: list = []
        ys: list = []
        for c in jv.correspondences(exp, top_k=lines):
            xs += [c.query_xy[0], c.neighbour_xy[0] + w + gap, None]
            ys += [c.query_xy[1], c.neighbour_xy[1], None]
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                                     line=dict(width=2, color="rgba(255,170,0,0.8)")))
    if point is not None:
        fig.add_trace(go.Scatter(x=[point[0]], y=[point[1]], mode="markers", hoverinfo="skip", showlegend=False,
                                 marker=dict(symbol="x", size=16, color="yellow", line=dict(width=2,
                                                                                            color="black"))))
    if box is not None:
        x0, y0, x1, y1 = box
        fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, line=dict(color="yellow", width=3))
    # fixed axes: a drag never pans or zooms the pictures away (clicks and box selection still work)
    fig.update_xaxes(visible=False, range=[-2, 2 * w + gap + 2], constrain="domain", fixedrange=True)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", fixedrange=True)
    fig.update_layout(margin=dict(l=0, r=0, t=10, b=0), height=420, showlegend=False)
    return fig


@st.fragment
def joint_panel(query: str, neighbour: str, alpha: float) -> None:
    joint_methods = ui.method_groups()["joint"]
    st.subheader("Which part matches which part")
    if not joint_methods:
        st.info("No joint explanation method is installed.")
        return
    pk = pair_key(query, neighbour)
    wanted = ui.qp("joint")
    closed = "jointcam" if index.model.linear_head() is not None else "jointhessian"  # jointcam: GAP + linear heads
    default = wanted if wanted in joint_methods else (closed if closed in joint_methods else joint_methods[0])
    c1, c2, c3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    if present:
        method = default
    else:
        if st.session_state.get("joint_method") != default:
            st.session_state["joint_method"] = default
        method = c1.selectbox("Joint method", joint_methods, key="joint_method", format_func=lambda m: m,
                              help="\n".join(f"- **{m}**: {ui.methods()[m]}" for m in joint_methods),
                              on_change=lambda: ui.set_qp(joint=st.session_state["joint_method"]))
    lines = 0 if present else c2.slider("Correspondence lines", 0, 30, 12, key="joint_lines")
    if present:
        lines = 12
    try:
        view = ui.explanation_with_progress(name, query, neighbour, method, with_estimate=False)
    except Exception as exc:  # noqa: BLE001
        ui.show_error(exc, method)
        return
    if view is None:  # waiting for Run (its cost is shown), or cancelled
        return
    if view.joint is None:
        st.info(f"{method} returned no joint matrix for this pair.")
        return
    chart_key = f"joint_chart_{method}_{pk}"
    # the chart's selection from the last interaction (read before drawing, so the drawing reflects it)
    state = st.session_state.get(chart_key) or {}
    sel = (state.get("selection") if isinstance(state, dict) else getattr(state, "selection", None)) or {}
    pts = [p for p in (sel.get("points") or []) if p.get("curve_number", 2) == 2]
    boxes = sel.get("box") or []
    h, w = view.query_image.shape[:2]
    click = None
    if pts and not boxes:  # a box selection also lists the points inside it: the box wins
        click = (float(pts[-1]["x"]), float(pts[-1]["y"]))
    box = None
    if boxes:
        b = boxes[-1]
        xs, ys = sorted(b["x"])[:2], sorted(b["y"])[:2]
        box = (max(0.0, xs[0]), max(0.0, ys[0]), min(float(w), xs[1]), min(float(h), ys[1]))
        if box[2] <= box[0] or box[3] <= box[1]:
            box = None
    if click is not None and st.session_state.get("joint_last_click") != (chart_key, click):
        st.session_state["joint_last_click"] = (chart_key, click)
        st.session_state["joint_x"], st.session_state["joint_y"] = click
        ui.set_qp(point=f"{click[0]:g},{click[1]:g}")
    elif box is not None and st.session_state.get("joint_last_box") != (chart_key, box):
        st.session_state["joint_last_box"] = (chart_key, box)  # a new box replaces the point
        st.session_state["joint_x"] = st.session_state["joint_y"] = None
        ui.set_qp(point=None)
    else:  # the point is in the URL (links, Back / Forward): the inputs follow it, a half-typed point stays
        wanted_point = ui.qp_point()
        typed = (st.session_state.get("joint_x"), st.session_state.get("joint_y"))
        if wanted_point is not None and typed != wanted_point:
            st.session_state["joint_x"], st.session_state["joint_y"] = wanted_point
        elif wanted_point is None and None not in typed:
            st.session_state["joint_x"] = st.session_state["joint_y"] = None

    def clear_point() -> None:
        st.session_state["joint_x"] = st.session_state["joint_y"] = None
        st.session_state["joint_last_click"] = (chart_key, click)
        st.session_state["joint_cleared"] = True
        ui.set_qp(point=None)

    def typed_point() -> None:
        x, y = st.session_state.get("joint_x"), st.session_state.get("joint_y")
        ui.set_qp(point=None if x is None or y is None else f"{x:g},{y:g}")

    c3.button("Clear point", key="joint_clear", disabled=present, on_click=clear_point)
    if st.session_state.pop("joint_cleared", False):
        box = None
    px_col, py_col = st.columns(2)
    for key in ("joint_x", "joint_y"):  # empty inputs, not 0: no point until one is clicked or typed
        st.session_state.setdefault(key, None)
    if present:
        x, y = st.session_state.get("joint_x"), st.session_state.get("joint_y")
    else:
        x = px_col.number_input("Query point x (model pixels)", 0.0, float(w - 1), key="joint_x",
                                on_change=typed_point)
        y = py_col.number_input("Query point y (model pixels)", 0.0, float(h - 1), key="joint_y",
                                on_change=typed_point)
    point = (float(x), float(y)) if x is not None and y is not None else None
    if point is not None:  # a point typed or clicked after the box
        box = None
    try:
        fig = joint_figure(view, point, box, alpha, lines, key=f"{name}|{method}|{pk}")
    except Exception as exc:  # noqa: BLE001
        ui.show_error(exc, "joint view")
        return
    st.plotly_chart(fig, key=chart_key, on_select="rerun", selection_mode=("points", "box"),
                    config={"scrollZoom": False, "modeBarButtonsToRemove": ["zoom2d", "pan2d", "zoomIn2d", "zoomOut2d",
                                                                            "autoScale2d", "toImage"]})
    if point is not None:
        st.caption(f"Heat map on the neighbour: how much each of its parts interacts with the query point "
                   f"({point[0]:.0f}, {point[1]:.0f}) under {method}. Click another cell, or drag a box.")
    elif box is not None:
        st.caption(f"Heat map on the neighbour: projection of the query box ({box[0]:.0f}, {box[1]:.0f}, {box[2]:.0f},"
                   f" {box[3]:.0f}).")
    else:
        st.caption("Click a point (or drag a box) on the query to project it onto the neighbour; lines join the "
                   "strongest mutually matching cells.")


def save_label(query: str, neighbour: str, verdict: str, rank: int | None, score: float | None) -> None:
    from simx.labels import REASONS

    reason = st.session_state.get("label_reason") if verdict == "bad" else None
    note = st.session_state.get("label_note", "")
    user = ui.current_user()
    if not user:
        st.session_state["label_saved"] = "Could not save the label: enter your name first"
        return
    try:
        store.put(name, query, neighbour, verdict, reason=reason, note=note, user=user,
                  model=index.meta["model"]["spec"], rank=rank, score=score)
        st.session_state["label_saved"] = f"Saved: {verdict} match" + (f" ({REASONS[reason]})" if reason else "")
    except SimxError as exc:
        st.session_state["label_saved"] = f"Could not save the label: {exc}"


def label_panel(query: str, neighbour: str, rank: int | None, score: float | None,
                suggested: str | None = None) -> dict | None:
    from simx.labels import REASONS

    if query.startswith(ui.UPLOAD_PREFIX):
        st.caption("Uploaded queries are not in the gallery, so their pairs cannot be labelled.")
        return None
    with st.container(border=True):
        user = _identity.ask_name("explore")
        mine = store.find(name, query, neighbour, user=user) if user else []
        current = mine[0] if mine else None
        st.markdown("**Label this pair**" + (f"  \ncurrent: {ui.verdict_badge(current.verdict)} "
                                             f"{REASONS.get(current.reason or '', '')} {ui.plain(current.note)}"
                                             if current else ""))
        c1, c2, c3, c4 = st.columns([1.4, 1.4, 2, 3], vertical_alignment="bottom")
        c1.button("Good match", icon=":material/thumb_up:", key="label_good", on_click=save_label,
                  args=(query, neighbour, "good", rank, score), type="primary", disabled=not user)
        c2.button("Bad match", icon=":material/thumb_down:", key="label_bad", on_click=save_label,
                  args=(query, neighbour, "bad", rank, score), disabled=not user)
        c3.selectbox("Reason (bad)", list(REASONS), format_func=REASONS.get, key="label_reason",
                     index=list(REASONS).index(current.reason) if current and current.reason
                     else list(REASONS).index(suggested) if suggested in REASONS else 0)
        c4.text_input("Note", key="label_note")
        msg = st.session_state.pop("label_saved", None)
        if msg:
            (st.error if msg.startswith("Could not") else st.success)(msg)
    # the figures and the report show the reason as text ("wrong category", not wrong_category)
    return None if current is None else {"verdict": current.verdict, "reason": REASONS.get(current.reason or "") or None,
                                         "note": current.note, "user": current.user}


def downloads(query: str, neighbour: str, views: list, sane: dict | None, label: dict | None,
              rank: int | None, score: float | None, per_map: bool) -> None:
    if not views:
        return
    q_item = None if query.startswith(ui.UPLOAD_PREFIX) else index.item(query)
    n_item = index.item(neighbour)
    title = f"{name}: {query} vs {neighbour}"
    base = f"simx_{name}_{query}_{neighbour}".replace("/", "_").replace(":", "_")
    c1, c2 = st.columns(2)
    c1.download_button("Download PNG figure",
                       data=lambda: render.pair_png(views, title=title, label=label, per_map=per_map),
                       file_name=base + ".png", mime="image/png", icon=":material/image:", on_click="ignore",
                       key="dl_png")
    c2.download_button("Download HTML report",
                       data=lambda: render.report_html(views, 0, q_item, n_item, index_name=name,
                                                       model_spec=index.meta["model"]["spec"], rank=rank,
                                                       score=score, sane=sane, label=label, per_map=per_map),
                       file_name=base + ".html", mime="text/html", icon=":material/description:", on_click="ignore",
                       key="dl_html")


def pair_view(query: str, neighbour: str, hit: dict | None) -> None:
    first_order = ui.method_groups()["first-order"]
    wanted = [m for m in ui.qp_list("methods") if m in first_order] or ui.default_methods(first_order)
    st.divider()
    st.subheader("Why do these match?")
    if present:
        chosen, alpha, per_map = wanted, ui.qp_float("alpha", 0.6), False
    else:
        c1, c2 = st.columns([3, 1])
        # set every run, even when equal: after an index change the pair view (and the picker) is gone for a few
        # runs, and a new picker over a value left behind showed no choice in the browser while drawing the maps
        ui.follow_url("methods_pick", wanted)
        # first-order maps only: joint methods have their own picker below, attributes the SANE panel, so typing
        # a name and Enter picks that method and no other one whose name contains it (sbsm, not jointsbsm)
        chosen = c1.multiselect("Saliency maps (first-order methods, one row each)", first_order,
                                key="methods_pick", format_func=lambda m: m,
                                help="\n".join(f"- **{m}**: {ui.methods()[m]}" for m in first_order),
                                on_change=lambda: ui.set_qp(methods=st.session_state["methods_pick"]))
        ui.follow_url("alpha", ui.qp_float("alpha", 0.6))
        alpha = c2.slider("Map opacity", 0.0, 1.0, step=0.05, key="alpha",
                          on_change=lambda: ui.set_qp(alpha=None if st.session_state["alpha"] == 0.6
                                                      else st.session_state["alpha"]))
        per_map = c2.toggle("Scale each map on its own", key="per_map",
                            help="Off: a method's query and neighbour maps share one scale, so a weak map looks "
                                 "weak. On: each map spans the whole colour bar (the colour bars say which).")
    rank = hit["rank"] if hit else None
    score = hit["score"] if hit else None
    views = method_rows(query, neighbour, chosen, alpha, per_map)
    sane = sane_panel(query, neighbour, alpha)
    joint_panel(query, neighbour, alpha)
    reason = None if present else contrast_section(name, index, store, query, neighbour, force=ui.qp("why") == "1")
    label = None if present else label_panel(query, neighbour, rank, score, suggested=reason)
    if not present:
        downloads(query, neighbour, views, sane, label, rank, score, per_map)


# ------------------------------------------------------------------------------------------------ page

st.title("Explore" if not present else f"simx · {name}")
if ui.qp("mode") == "review":  # links from before the review queue had its own page
    st.switch_page("app_pages/review.py", query_params=ui.carry_params(mode=None))

query = ui.qp("query")
if not present:
    if st.session_state.pop("fold_picker", False):
        st.session_state["picker"] = False
    picker = st.expander("Choose a query", expanded=query is None, key="picker", on_change="rerun")
    if picker.open:  # the gallery grid is only built while the expander is open
        with picker:
            query_picker()
if query is None and ui.qp("text"):
    text_page(name, index, ui.qp("text"), k, present)
    st.stop()
if query is None:
    st.info("Pick a query image above: from the gallery, at random, the next failure, or upload one.")
    st.stop()

is_upload = query.startswith(ui.UPLOAD_PREFIX)
if is_upload and ui.uploaded_bytes(query) is None:
    st.error("The uploaded query image is no longer in this session (uploads are kept in memory only); upload it "
             "again.", icon=":material/error:")
    st.stop()
if not is_upload and not ui.has_item(index, query):
    st.error(f"No image with id '{ui.plain(query)}' in index '{ui.plain(name)}'.", icon=":material/error:")
    st.stop()

q_item = None if is_upload else index.item(query)
try:
    hits = ui.get_neighbours(name, query, k)
except Exception as exc:  # noqa: BLE001
    ui.show_error(exc, "search")
    st.stop()

labelled: dict[str, str] = {}  # neighbour -> verdict shown on its badge: this user's, else anyone's latest
if not is_upload:
    me = ui.current_user()
    for lab in sorted(reversed(store.list(index=name, query_id=query)), key=lambda lab: lab.user == me):
        labelled[lab.neighbour_id] = lab.verdict

qc, nc = st.columns([1, 5])
with qc:
    st.markdown("**Query**")
    try:
        st.image(report.thumbnail(ui.query_image(index, query), 224), width="stretch")
    except SimxError as exc:
        ui.show_error(exc)
    if q_item is not None:
        st.caption(f"{ui.plain(q_item.id)}  \nlabels: **{ui.labels_text(q_item)}**"
                   + (f"  \n{ui.plain(q_item.metadata['description'])}" if q_item.metadata.get("description") else "")
                   + (f"  \nattributes: {ui.plain(', '.join(q_item.attributes))}" if q_item.attributes else ""))
        extra = {k: v for k, v in q_item.metadata.items() if k != "description"}
        if extra:  # the manifest's own columns, as plain text
            with st.expander("More about this image"):
                st.dataframe([{"column": str(k), "value": str(v)} for k, v in extra.items()], hide_index=True)
    else:
        st.caption("uploaded image (in memory)")
with nc:
    st.markdown(f"**Top {len(hits)} neighbours**")
    per_row = 5 if len(hits) > 5 else max(1, len(hits))
    neighbour = ui.qp("neighbour")
    for row in range(0, len(hits), per_row):
        cols = st.columns(per_row)
        for col, h in zip(cols, hits[row : row + per_row]):
            with col:
                t = ui.thumb(h["path"])
                if t is not None:
                    st.image(t, width="stretch")
                nb_labels = ui.labels_text(index.item(h["id"])) if h["label"] else ""
                st.markdown(f"#{h['rank']} · **{h['score']:.3f}**  \n{nb_labels}  \n"
                            f"{ui.pair_badge(index, query, h['id'])} "
                            f"{ui.verdict_badge(labelled.get(h['id']))}")
                if not present:
                    st.button("Open" if h["id"] != neighbour else "Opened", key=f"nb_{h['id']}",
                              on_click=pick_neighbour, args=(h["id"],), width="stretch",
                              type="primary" if h["id"] == neighbour else "secondary")

ui.prefetch_features(index, query, [h["id"] for h in hits])
neighbour = ui.qp("neighbour")
if neighbour is None:
    if not present:
        st.info("Open a neighbour to see why it matches.")
    st.stop()
if not ui.has_item(index, neighbour):
    st.error(f"No image with id '{ui.plain(neighbour)}' in index '{ui.plain(name)}'.", icon=":material/error:")
    st.stop()
hit = next((h for h in hits if h["id"] == neighbour), None)
pair_view(query, neighbour, hit)
