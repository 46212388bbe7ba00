"""Shared drawing and state helpers of the dashboard pages (no maths: everything is asked of simx).

* URL state: :func:`qp` / :func:`set_qp` read and write ``st.query_params`` (index, query, neighbour, methods, ...),
  so every view is a link that reopens the same thing;
* resources loaded once per process (``st.cache_resource``): the index (and through it the model), the label store;
* cached results (``st.cache_data``): explanations per (index, query, neighbour, method, params), faithfulness,
  evaluation tables, projections, thumbnails;
* :func:`show_error`: a readable message for every :class:`simx.errors.SimxError`, never a traceback.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import streamlit as st

from simx.errors import SimxError

# ------------------------------------------------------------------------------------------------ URL state

URL_KEYS = ("index", "query", "neighbour", "methods", "k", "joint", "mode", "present", "alpha")
UPLOAD_PREFIX = "upload:"


def qp(name: str, default: str | None = None) -> str | None:
    value = st.query_params.get(name)
    return default if value in (None, "") else value


def set_qp(**values: Any) -> None:
    """Write URL parameters (None removes one) in one URL change: the browser records every change of the URL as
    a history entry, so one action (a new query that also drops the neighbour) must be one entry, not an
    intermediate URL that Back would show. Unchanged values are not rewritten (no entry)."""
    current = st.query_params.to_dict()
    target = dict(current)
    for key, value in values.items():
        if value is None or value == "" or value == []:
            target.pop(key, None)
        else:
            target[key] = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    if target == current:
        return
    if set(target) >= set(current):
        st.query_params.update({k: v for k, v in target.items() if current.get(k) != v})
    else:
        st.query_params.from_dict(target)


def follow_url(widget_key: str, value: Any) -> None:
    """Make a URL-backed widget show what the URL says (call before drawing it): after Back or Forward the URL
    changes and the page reruns, but a keyed widget would keep its old value and write it back. Set every run,
    even when equal: a same-named widget of another page leaves its value behind, and a new widget would not take
    it (it would start at its minimum)."""
    st.session_state[widget_key] = value


def url_k(widget_key: str, default: int = 10, hi: int = 30) -> int:
    """The URL's k clipped to [1, hi] (the widget ``widget_key`` follows it); a k out of range or malformed is
    corrected in the URL too, so the link says what the page shows."""
    k = qp_int("k", default, 1, hi)
    if qp("k") is not None and qp("k") != str(k):
        set_qp(k=k)
    follow_url(widget_key, k)
    return k


def qp_float(name: str, default: float, lo: float = 0.0, hi: float = 1.0) -> float:
    """A float URL parameter clipped to [lo, hi]; a malformed one falls back to ``default``."""
    try:
        value = float(qp(name, str(default)))
    except ValueError:
        return default
    return default if value != value else max(lo, min(hi, value))


def qp_point(name: str = "point") -> tuple[float, float] | None:
    """A point ``x,y`` from the URL (the joint view's query point), or None."""
    try:
        x, y = (float(v) for v in qp_list(name))
    except ValueError:
        return None
    return (x, y)


def qp_int(name: str, default: int, lo: int = 1, hi: int = 1000) -> int:
    """An integer URL parameter clipped to [lo, hi]; a malformed one falls back to ``default``."""
    try:
        return max(lo, min(hi, int(qp(name, str(default)))))
    except ValueError:
        return default


def qp_list(name: str) -> list[str]:
    value = qp(name)
    return [v for v in value.split(",") if v] if value else []


def carry_params(**override: Any) -> dict[str, str]:
    """The URL state to take along to another page (index, query, ...), with overrides."""
    out = {k: st.query_params[k] for k in URL_KEYS if k in st.query_params}
    for k, v in override.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = str(v)
    return out


# ------------------------------------------------------------------------------------------------ navigation


_FROZEN_MODULES = [0]


def freeze_long_lived() -> None:
    """Move what the process has imported so far out of the garbage collector's sight (``gc.freeze``), once per
    growth of ``sys.modules``.

    torch, timm, plotly and Streamlit leave ~0.5 M tracked objects; every interaction allocates enough to set off a
    full collection, which then walks them all: ~200 ms of each joint-view click on a 2-core machine went there
    (measured with ``gc.callbacks``). Modules and their functions live as long as the process, so freezing them
    loses nothing; the few objects that happen to be garbage at that moment are kept, once.
    """
    import sys

    if len(sys.modules) != _FROZEN_MODULES[0]:
        _FROZEN_MODULES[0] = len(sys.modules)
        gc.freeze()


# ------------------------------------------------------------------------------------------------ errors


def show_error(exc: BaseException, what: str = "") -> None:
    """A SimxError as its message; anything else as a one-line message (the traceback goes to the server log)."""
    prefix = f"{what}: " if what else ""
    if isinstance(exc, SimxError):
        st.error(prefix + plain(exc), icon=":material/error:")
    else:
        import logging

        logging.getLogger("simx.app").exception("unexpected error")
        st.error(f"{prefix}unexpected error ({type(exc).__name__}: {plain(exc)}). Details are in the server log.",
                 icon=":material/error:")


BUILD_HELP = (
    "No index found in `{root}`.\n\n"
    "Build one first, for example the demo galleries:\n\n"
    "```\nsimx demo\n```\n\n"
    "or your own folder of images (sub-folders are labels):\n\n"
    "```\nsimx index build PATH/TO/IMAGES --name myindex\n```\n\n"
    "then reload this page. The dashboard looks in `$SIMX_INDEXES` (else `./indexes`)."
)


# ------------------------------------------------------------------------------------------------ resources


def index_root() -> Path:
    from simx.index.layout import index_root as _root

    return _root(None).resolve()


def list_indexes() -> list[dict[str, Any]]:
    from simx.index import list_indexes as _list

    return _list(index_root())


def index_stamp(name: str) -> str:
    """Changes whenever the index folder is rebuilt (cache key for everything derived from it)."""
    meta = index_root() / name / "meta.json"
    try:
        st_ = meta.stat()
    except OSError:
        return "missing"
    return f"{st_.st_mtime_ns}:{st_.st_size}"


@st.cache_resource(show_spinner="Opening the index and its model...", max_entries=8)
def _open_index(root: str, name: str, stamp: str):
    from simx.index import open_index

    index = open_index(name, root=root)
    index.model  # load the model once per process (and check it matches the index)  # noqa: B018
    return index


def get_index(name: str):
    return _open_index(str(index_root()), name, index_stamp(name))


@st.cache_resource(max_entries=16)
def _label_store(url: str):
    from simx.labels import LabelStore

    return LabelStore(url)


def label_store(index_name: str):
    from simx.labels import default_url

    return _label_store(default_url(index_name, index_root()))


def current_user() -> str | None:
    """The labeller's name (the sidebar's field, kept by ``app_pages/_identity.py``), else ``$SIMX_USER``, else
    None: labelling then asks for a name rather than saving under "anonymous"."""
    return (st.session_state.get("user") or "").strip() or os.environ.get("SIMX_USER") or None


# ------------------------------------------------------------------------------------------------ images


@st.cache_data(show_spinner=False, max_entries=4096)
def thumb(path: str, size: int = 128) -> bytes | None:
    """A padded thumbnail of a gallery image as PNG bytes (encoded once), or None when it cannot be read."""
    from simx.data import load_image
    from simx.report import png_bytes, thumbnail

    try:
        return png_bytes(thumbnail(load_image(path), size))
    except SimxError:
        return None


@st.cache_data(show_spinner=False, max_entries=256)
def image_uri(key: str, _image: np.ndarray) -> str:
    """A JPEG data URI of an image that does not change under ``key`` (the joint view's query picture)."""
    from simx.report import data_uri

    return data_uri(_image, fmt="jpeg")


def upload_key(data: bytes) -> str:
    return UPLOAD_PREFIX + hashlib.sha1(data).hexdigest()[:16]


def uploaded_bytes(key: str) -> bytes | None:
    return st.session_state.get("uploads", {}).get(key)


def has_item(index, item_id: str) -> bool:
    try:
        index.position(item_id)
    except SimxError:
        return False
    return True


def query_image(index, query: str):
    """PIL image of a query id (gallery item or an upload kept in memory)."""
    from simx.data import load_image

    if query.startswith(UPLOAD_PREFIX):
        data = uploaded_bytes(query)
        if data is None:
            raise SimxError("the uploaded image is no longer in this session; upload it again")
        return load_image(data)
    return load_image(index.item(query).path)


# ------------------------------------------------------------------------------------------------ cached results


@st.cache_data(show_spinner=False, max_entries=64)
def neighbours(root: str, name: str, stamp: str, query: str, k: int, _data: bytes | None = None) -> list[dict]:
    index = _open_index(root, name, stamp)
    if query.startswith(UPLOAD_PREFIX):
        from simx.data import load_image

        hits = index.search_image(load_image(_data), k)
    else:
        hits = index.search_id(query, k)
    return [h.to_dict() for h in hits]


def get_neighbours(name: str, query: str, k: int) -> list[dict]:
    return neighbours(str(index_root()), name, index_stamp(name), query, int(k), _data=uploaded_bytes(query))


def _explain(root: str, name: str, stamp: str, query: str, neighbour: str, method: str, params_json: str,
             data: bytes | None, with_estimate: bool = True, progress=None):
    from simx.data import load_image
    from simx.explain.metrics import ESTIMATE_STEPS
    from simx.explain.scheduling import TURNS
    from simx.explain.scored import explain_scored

    index = _open_index(root, name, stamp)
    qimg = load_image(data) if query.startswith(UPLOAD_PREFIX) else load_image(index.item(query).path)
    nimg = load_image(index.item(neighbour).path)
    with TURNS.person():  # one explanation at a time; the prefetch steps aside
        # the maps and their faithfulness estimate (kept in exp.scores, shown beside the maps) under one progress
        return explain_scored(index.model, qimg, [nimg], method=method, side="both", seed=0, progress=progress,
                              steps=ESTIMATE_STEPS if with_estimate else 0, **json.loads(params_json))


def prefetch_features(index, query: str, neighbour_ids: Sequence[str]) -> None:
    """Warm simx's feature cache for the query and its shown neighbours in the background (once per query), so
    that opening a pair only pays for the method's own passes (:class:`simx.explain.scheduling.FeaturePrefetcher`)."""
    from simx.data import load_image
    from simx.explain.scheduling import PREFETCHER

    data = uploaded_bytes(query)
    path = None if query.startswith(UPLOAD_PREFIX) else index.item(query).path
    PREFETCHER.prefetch((str(index.path), index_stamp(index.name), query), index.model,
                        lambda: load_image(data) if path is None else load_image(path),
                        [index.item(nid).path for nid in neighbour_ids])


@st.cache_data(show_spinner=False, max_entries=128)  # an explanation is up to ~1 MB (images, maps, joint matrix)
def explanation(root: str, name: str, stamp: str, query: str, neighbour: str, method: str, params_json: str = "{}",
                _data: bytes | None = None, _progress=None, with_estimate: bool = True):
    """The :class:`simx.explain.Explanation` of one method for the pair (a plain value, cached per index, query,
    neighbour, method and parameters), with the cheap faithfulness estimate of its maps when ``with_estimate``;
    ``_progress`` (a :class:`simx.explain.progress.Progress`, not part of the key) follows the passes and cancels."""
    exp = _explain(root, name, stamp, query, neighbour, method, params_json, _data, with_estimate, progress=_progress)
    _COMPUTED.add((root, name, stamp, query, neighbour, method, params_json))
    return exp


@st.cache_data(show_spinner=False, max_entries=512)
def full_faithfulness(root: str, name: str, stamp: str, query: str, neighbour: str, method: str,
                      params_json: str = "{}", _data: bytes | None = None) -> dict:
    """The full insertion/deletion curves (:data:`simx.explain.metrics.FULL_STEPS`) of one method's maps."""
    from simx.explain.metrics import FULL_STEPS, faithfulness
    from simx.explain.scheduling import TURNS

    exp = explanation(root, name, stamp, query, neighbour, method, params_json, _data)
    with TURNS.person():
        return faithfulness(exp, _open_index(root, name, stamp).model, steps=FULL_STEPS, keep=False)


def get_explanation(name: str, query: str, neighbour: str, method: str, params: dict | None = None,
                    with_estimate: bool = True):
    return explanation(str(index_root()), name, index_stamp(name), query, neighbour, method,
                       json.dumps(params or {}, sort_keys=True), _data=uploaded_bytes(query),
                       with_estimate=with_estimate)


def show_map(col: Any, panel: Any, caption: str | None, alpha: float = 0.6, details: bool = True) -> None:
    """Draw one map panel of :func:`simx.render.pair_panels` into ``col``: the overlay (the same pixels as the
    PNG figure and the HTML report), with ``details`` its colour bar in real values and its notes (the
    faithfulness estimate with its direction; warnings for a map no better than random or on the padding)."""
    # PNG, not Streamlit's default JPEG for RGB arrays: the screen shows the exact colours and contours
    col.image(panel.picture(alpha), caption=caption, width="stretch", output_format="PNG")
    if details and panel.heat is not None:
        col.image(panel.legend(), width="stretch", output_format="PNG")
        for note in panel.notes:  # our own sentences (numbers and fixed words), never user text
            col.caption(f":red[:material/warning: {note.text}]" if note.warning else note.text)


def show_maps(columns: Sequence[Any], explanation: Any, captions: Sequence[str], alpha: float = 0.6,
              per_map: bool = False, details: bool = True) -> None:
    """Draw pair 0 of an explanation into two columns (query, neighbour) through :mod:`simx.render`."""
    from simx import render

    for col, panel, caption in zip(columns, render.pair_panels(explanation, per_map=per_map), captions):
        show_map(col, panel, caption, alpha, details)


#: (root, index, stamp, query, neighbour, method, params) of the pair views computed in this process: those open
#: at once, without asking (st.cache_data holds them).
_COMPUTED: set[tuple] = set()

#: A method whose estimate is above this many seconds waits for a click that shows its cost
#: (``SIMX_CONFIRM_ABOVE_S`` overrides it).
CONFIRM_ABOVE_S = 5.0


def confirm_above_s() -> float:
    try:
        return float(os.environ.get("SIMX_CONFIRM_ABOVE_S", CONFIRM_ABOVE_S))
    except ValueError:
        return CONFIRM_ABOVE_S


def estimate(name: str, method: str, params: dict | None = None, query: str | None = None,
             neighbour: str | None = None, with_estimate: bool = True):
    """What one pair of ``method`` costs on this index's model before it runs, the faithfulness estimate of its
    maps included unless ``with_estimate`` is False (:class:`simx.explain.progress.CostEstimate`): the passes the
    run will make, exact for the ``query`` / ``neighbour`` pair (a bound without them)."""
    from simx.explain.engine import PairContext
    from simx.explain.metrics import ESTIMATE_STEPS
    from simx.explain.scored import estimate_scored

    from simx.explain.scheduling import TURNS

    index = get_index(name)
    pair = None
    if query is not None and neighbour is not None:
        pair = PairContext(index.model, query_image(index, query), [query_image(index, neighbour)])
        with TURNS.person():
            # the pair's unperturbed features first (2 forwards, cached: the run skips them), so that the figure
            # said is the run's whether or not the background prefetch has reached this pair yet
            pair.similarities()
    return estimate_scored(index.model, method, k=1, side="both", pair=pair,
                           steps=ESTIMATE_STEPS if with_estimate else 0, **(params or {}))


def explanation_with_progress(name: str, query: str, neighbour: str, method: str, params: dict | None = None,
                              key: str = "", with_estimate: bool = True):
    """The :class:`simx.explain.Explanation` of ``method`` for the pair (with the faithfulness estimate of its
    maps unless ``with_estimate`` is False), drawn with its cost, progress and a way to stop it.

    A view computed before opens at once. Otherwise a method estimated above :func:`confirm_above_s` first says
    what it will cost, the faithfulness estimate of its maps included ("rise: 4,046 forward passes (44 of them score
    the maps), about 4 min on this machine"), and waits for Run. While it runs (in a worker thread; this script run
    only draws), a progress bar shows the passes done out of that same total and the time left, and
    Cancel stops it at the next batch (so does any other click: the interrupted run cancels its work). Returns
    None while nothing is computed (waiting for Run, or cancelled)."""
    from simx.explain.progress import CancelToken, Progress

    params_json = json.dumps(params or {}, sort_keys=True)
    args = (str(index_root()), name, index_stamp(name), query, neighbour, method, params_json)
    flag = f"run_{key or '|'.join(args[3:])}"
    # one slot for the announcement, the progress bar and the outcome
    slot = st.empty().container()
    control = f"ctl_{flag}"  # Run, Cancel and Run again are one button (one key) that changes its label, so no
    # earlier state's button lingers beside the next one while a run draws its progress
    if args not in _COMPUTED:
        est = estimate(name, method, params, query, neighbour, with_estimate)
        if st.session_state.get(flag) == "cancelled":
            slot.info(f"{method} was cancelled. {est.describe()}.", icon=":material/cancel:")
            slot.button("Run again", key=control, on_click=st.session_state.__setitem__, args=(flag, "run"))
            return None
        if est.seconds > confirm_above_s() and st.session_state.get(flag) != "run":
            slot.caption(est.describe())
            slot.button(f"Run {method}", key=control, icon=":material/play_arrow:",
                        on_click=st.session_state.__setitem__, args=(flag, "run"))
            return None
    token = CancelToken()
    progress = Progress(token=token)
    outcome: dict[str, Any] = {}
    data = uploaded_bytes(query)  # read here: the worker thread has no session (an upload's bytes live there)

    def work() -> None:
        try:
            outcome["view"] = explanation(*args, _data=data, _progress=progress,
                                          with_estimate=with_estimate)
        except BaseException as exc:  # noqa: BLE001 - handed to the script thread, which shows it
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="simx-explain", daemon=True)
    worker.start()
    worker.join(0.3)  # a cached or fast view shows without a flash of progress bar
    if worker.is_alive():
        bar = slot.progress(0.0, text=f"{method}: starting")
        slot.button("Cancel", key=control, icon=":material/stop:",
                    on_click=st.session_state.__setitem__, args=(flag, "cancelled"))
        try:
            while worker.is_alive():
                bar.progress(progress.fraction, text=f"{method}: {progress.describe()}")
                worker.join(0.25)
        finally:
            if worker.is_alive():  # this run was interrupted (Cancel, or another click): stop the work too
                token.cancel()
        bar.empty()
    st.session_state.pop(flag, None)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["view"]


def get_faithfulness(name: str, query: str, neighbour: str, method: str, params: dict | None = None) -> dict:
    """The full faithfulness result of one method's maps of the pair (on demand; the estimate is in the
    explanation's ``scores``)."""
    return full_faithfulness(str(index_root()), name, index_stamp(name), query, neighbour, method,
                             json.dumps(params or {}, sort_keys=True), _data=uploaded_bytes(query))


#: Queries the dashboard evaluates at most (a seeded sample above): 20k keep the Failures page's evaluation of a
#: 1M index to a minute or two and its table small.
DASHBOARD_QUERIES = 20_000


@st.cache_data(show_spinner="Evaluating the index...", max_entries=16)
def _evaluation(root: str, name: str, stamp: str, k: int):
    from simx.index import evaluate

    # a large index is evaluated on a seeded sample of queries (same sample on every page and run)
    r = evaluate(_open_index(root, name, stamp), k=k, queries=DASHBOARD_QUERIES)
    return r.overall, r.per_label, r.per_query


def get_evaluation(name: str, k: int = 10):
    """(overall, per_label, per_query) of :func:`simx.index.evaluate`; raises SimxError without labels."""
    return _evaluation(str(index_root()), name, index_stamp(name), int(k))


@st.cache_resource(show_spinner="Projecting the embeddings to 2-D (once per index)...", max_entries=8)
def _projection(root: str, name: str, stamp: str):
    from simx.projection import projection

    df = projection(_open_index(root, name, stamp))
    return df, df.attrs.get("method", "")


def get_projection(name: str):
    return _projection(str(index_root()), name, index_stamp(name))


# ------------------------------------------------------------------------------------------------ methods


def methods() -> dict[str, str]:
    from simx.explain import METHODS

    return dict(METHODS)


def method_kinds() -> dict[str, str]:
    from simx.explain import REGISTRY

    return {name: spec.kind for name, spec in REGISTRY.items()}


#: The method picker's groups, by the registry's ``kind``: first-order maps (one row each in Explore), joint
#: correspondences (the joint view's picker), attribute explanations (the SANE panel).
METHOD_GROUPS = {"first-order": ("gradient", "closed-form", "perturbation"), "joint": ("joint",),
                 "attribute": ("attribute",)}


def method_groups() -> dict[str, list[str]]:
    """Method names per picker group (:data:`METHOD_GROUPS`), sorted; every registered method is in one group."""
    kinds = method_kinds()
    groups = {group: sorted(m for m, kind in kinds.items() if kind in members)
              for group, members in METHOD_GROUPS.items()}
    grouped = {m for names in groups.values() for m in names}
    groups["first-order"] = sorted(groups["first-order"] + [m for m in kinds if m not in grouped])
    return groups


#: Shown first when nothing is chosen: fast and model-agnostic enough for a first look.
DEFAULT_METHODS = ("gradcam", "searchcam")


def default_methods(available: Sequence[str]) -> list[str]:
    picks = [m for m in DEFAULT_METHODS if m in available]
    return picks[:1] or list(available)[:1]


# ------------------------------------------------------------------------------------------------ sidebar


def sidebar_index() -> str | None:
    """The index picker (URL-bound) in the sidebar; returns the chosen index name or None (with help shown)."""
    try:
        entries = list_indexes()
    except SimxError as exc:
        show_error(exc)
        return None
    names = [e["name"] for e in entries]
    if not names:
        st.info(BUILD_HELP.format(root=index_root()), icon=":material/info:")
        return None
    wanted = qp("index")
    if wanted is not None and wanted not in names:
        st.error(f"No index named '{plain(wanted)}' in {plain(index_root())} (available: {plain(', '.join(names))}).",
                 icon=":material/error:")

        def chosen() -> None:
            if st.session_state.get("index_rescue"):
                set_qp(index=st.session_state["index_rescue"], query=None, neighbour=None)

        st.sidebar.selectbox("Index (choose one)", names, index=None, key="index_rescue",
                             on_change=chosen)
        return None
    if st.session_state.get("index_pick") not in names or (wanted and st.session_state.get("index_pick") != wanted):
        first = os.environ.get("SIMX_INDEX")  # simx dashboard --index NAME
        st.session_state["index_pick"] = wanted or (first if first in names else names[0])

    def changed() -> None:
        set_qp(index=st.session_state["index_pick"], query=None, neighbour=None)

    st.sidebar.selectbox("Index", names, key="index_pick", on_change=changed)
    name = st.session_state["index_pick"]
    entry = next(e for e in entries if e["name"] == name)
    if not entry.get("ok", True):
        st.error(f"Index '{plain(name)}' cannot be opened: {plain(entry.get('error'))}", icon=":material/error:")
        return None
    if qp("index") != name:
        set_qp(index=name)
    return name


def sidebar_status(index) -> None:
    st.sidebar.caption(f"{len(index)} images · model {plain(index.meta['model']['spec'])} · "
                       f"{index.meta['model']['metric']} · device **{index.model.device}**")


#: Session-state key under which ``app.py`` leaves the index chosen for this run.
CURRENT_INDEX = "simx_current_index"


def open_current_index(page_title: str) -> None:
    """What every page needs before it draws, done once per run by ``app.py``: the index picker (URL-bound), the
    index and its model opened, the sidebar status line. Without an index (none built, a wrong name in the URL,
    one that cannot be opened) it draws the page title and the reason, and stops the run."""
    name = sidebar_index()
    if name is None:
        st.title(page_title)
        st.stop()
    try:
        index = get_index(name)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message
        st.title(page_title)
        show_error(exc, f"Cannot open index '{name}'")
        st.stop()
    sidebar_status(index)
    st.session_state[CURRENT_INDEX] = name


def current_index() -> tuple[str, Any]:
    """(name, index) that ``app.py`` opened for this run (see :func:`open_current_index`)."""
    name = st.session_state[CURRENT_INDEX]
    return name, get_index(name)


def presentation() -> bool:
    return qp("present") == "1"


def hide_sidebar_css() -> None:
    st.html("<style>[data-testid='stSidebar'],[data-testid='stSidebarCollapsedControl']{display:none}</style>")


def badge(correct: bool | None) -> str:
    """The correctness badge of a pair: ``correct`` is :func:`simx.relevance.shares_label` (None: unknown)."""
    if correct is None:
        return ""
    return (":green-badge[:material/check: shares a label]" if correct
            else ":red-badge[:material/close: no shared label]")


def pair_badge(index, query: str, neighbour: str) -> str:
    """:func:`badge` of a gallery pair (empty for an upload or an unknown id)."""
    from simx.relevance import shares_label

    if not has_item(index, query) or not has_item(index, neighbour):
        return ""
    return badge(shares_label(index.item(query), index.item(neighbour)))


def labels_text(item) -> str:
    """Every label of a gallery item, ``a | b``, with Markdown's special characters escaped (labels are user
    text: shown as written, never interpreted)."""
    return plain(" | ".join(item.labels)) if item.labels else "-"


def verdict_badge(verdict: str | None) -> str:
    if verdict == "good":
        return ":blue-badge[:material/thumb_up: good]"
    if verdict == "bad":
        return ":orange-badge[:material/thumb_down: bad]"
    return ""


def guarded(fn: Callable[[], Any], what: str = "") -> Any:
    """Run a drawing step; a SimxError becomes a message instead of a traceback."""
    try:
        return fn()
    except SimxError as exc:
        show_error(exc, what)
    except Exception as exc:  # noqa: BLE001
        show_error(exc, what)
    return None


_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
_AUTOLINK_STARTS = re.compile(r"(:|\bwww)(//|\.)", re.IGNORECASE)


def plain(text: Any) -> str:
    """User text (a note, a user name, a file name, a gallery label or id) made safe to put in a Markdown string.

    Every ASCII punctuation character is backslash-escaped (CommonMark allows that for all of them) and line
    breaks become spaces, so the text shows as typed: no image is fetched, no link, emphasis, heading, HTML,
    colour directive or icon is made. Streamlit's Markdown also turns bare URLs, ``www.`` names and e-mail
    addresses found in the *parsed* text into links, which no escape prevents: an invisible word joiner (U+2060)
    after ``:`` in ``://``, after ``www`` and before ``@`` keeps them plain (seen in a browser: ``[bob](http://x/)``
    as a user name became a link). Where no Markdown is needed, draw user text with ``st.text`` instead."""
    text = _AUTOLINK_STARTS.sub(lambda m: m.group(1) + "\u2060" + m.group(2), str(text)).replace("@", "\u2060@")
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text).replace("\r", " ").replace("\n", " ")
