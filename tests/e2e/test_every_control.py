"""Every control a user touches, in a real browser (Chromium + Playwright against ``streamlit run app.py``), on the
demo scenes embedded by the real default model (EfficientNet-Lite0), with the toy ``tiny`` index to switch to.

Each control's effect is checked against the backend: the URL it writes, the neighbours the index returns, the
failing queries the evaluation ranks, the rows and files of the label store. Screenshots are only taken when
``$SIMX_E2E_SHOTS`` names a folder (never into the repository).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.test_browser import (CHROMIUM, NO_CONFIRMATION, TIMEOUT_MS, click_joint_point, free_port, start_server,
                                    stop_server)
from tests.real_demo import private_copy

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install "
                                                                     "chromium): no browser to drive")]

INDEX = "scenes"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = private_copy(tmp_path_factory, "e2e_every_control")
    port = free_port()
    proc = start_server(root, port, user="e2e", confirm_above_s=NO_CONFIRMATION)  # the real model on a loaded
    # machine estimates even Grad-CAM above the dashboard's limit: these tests are about the controls, not the cost
    try:
        yield {"url": f"http://localhost:{port}", "root": root}
    finally:
        stop_server(proc)


@pytest.fixture()
def page(browser):
    pg = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    pg.set_default_timeout(TIMEOUT_MS)
    try:
        yield pg
    finally:
        pg.close()


def index(server, name: str = INDEX):
    from simx.index import open_index

    return open_index(name, root=server["root"])


def store(server):
    from simx.labels import open_labels

    return open_labels(INDEX, root=server["root"])


def params(page) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(page.url).query).items()}


def settled(page) -> None:
    """The page finished its rerun: nothing is drawn stale any more."""
    page.wait_for_timeout(200)
    page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]') && "
                           "!document.querySelector('[data-testid=\"stStatusWidget\"] [data-testid=\"stStatusWidgetRunningIcon\"]')")


def wait_param(page, name: str, value: str | None) -> None:
    """Wait until the URL's ``name`` parameter is ``value`` (None: absent)."""
    page.wait_for_function("([n, v]) => new URL(location.href).searchParams.get(n) === v", arg=[name, value])


def wait_text(page, text: str) -> None:
    page.wait_for_function("(t) => document.body.innerText.replace(/\\u2060/g, '').includes(t)", arg=text)


def shot(page, name: str) -> None:
    folder = os.environ.get("SIMX_E2E_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def choose(page, key: str, option: str) -> None:
    """Pick ``option`` in the select box or multiselect whose Streamlit key is ``key``."""
    box = page.locator(f".st-key-{key} [role='combobox']")
    box.click()
    box.fill(option)  # the list is long (and drawn lazily): filter it to the option first
    page.locator("[role='option']").filter(has_text=re.compile(f"^{re.escape(option)}$")).first.click()
    page.keyboard.press("Escape")  # a multiselect stays open after a pick
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    settled(page)


def type_into(page, key: str, text: str) -> None:
    box = page.locator(f".st-key-{key} input")
    box.fill(text)
    box.press("Enter")
    settled(page)


def slide(page, key: str, presses: int, direction: str = "ArrowLeft", param: str | None = None) -> None:
    """Move a slider by ``presses`` arrow keys. With ``param`` (the URL parameter the slider writes), one key at a
    time, each waiting for the URL to move: a key pressed while the page reruns can otherwise be lost on a loaded
    machine (seen in CI: three quick presses moved k by two)."""
    thumb = page.locator(f".st-key-{key} input[type='range']")
    for _ in range(presses):
        before = params(page).get(param) if param else None
        thumb.focus()
        thumb.press(direction)
        if param:
            page.wait_for_function("([n, v]) => new URL(location.href).searchParams.get(n) !== v",
                                   arg=[param, before])
            settled(page)
        else:
            page.wait_for_timeout(60)
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    settled(page)


def shown_picks(page) -> set[str]:
    """The ids of the gallery items whose pick buttons are on screen."""
    classes = page.locator("[data-stale='false'][class*='st-key-pick_']").evaluate_all("els => els.map(e => e.className)")
    return {c.split("st-key-pick_")[1].split()[0] for c in classes}


def until_shown(page, read, expected, timeout_s: float = 60.0):
    """Poll ``read(page)`` until it equals ``expected`` (a rerun replaces the previous run's elements a moment
    after its own text is drawn); the last value read is returned for the assertion."""
    import time

    deadline = time.time() + timeout_s
    got = read(page)
    while got != expected and time.time() < deadline:
        page.wait_for_timeout(250)
        got = read(page)
    return got


def shown_neighbours(page) -> list[str]:
    classes = page.locator("[data-stale='false'][class*='st-key-nb_']").evaluate_all("els => els.map(e => e.className)")
    return list(dict.fromkeys(c.split("st-key-nb_")[1].split()[0] for c in classes))  # one per button, in order


def open_picker(page) -> None:
    """Unfold "Choose a query" (it folds away once a query is picked)."""
    if page.locator(".st-key-flt_text").count() == 0:
        page.get_by_text("Choose a query").click()
        page.locator(".st-key-flt_text").wait_for()
        settled(page)


# ------------------------------------------------------------------------------------------------ gallery


def test_gallery_filter_search_paging_next_failure_random_k_and_index_switch(server, page):
    from simx.index import evaluate
    from simx.index.evaluation import next_failure

    idx = index(server)
    items = idx.items
    page.goto(server["url"] + f"/?index={INDEX}")
    page.get_by_text("Pick a query image").wait_for()
    settled(page)
    # paging: 40 images, 24 a page
    wait_text(page, f"Page (of 2, {len(items)} images)")
    assert until_shown(page, shown_picks, {it.id for it in items[:24]}) == {it.id for it in items[:24]}
    type_into(page, "gallery_page", "2")
    page.locator(f".st-key-pick_{items[30].id}").wait_for()
    assert until_shown(page, shown_picks, {it.id for it in items[24:]}) == {it.id for it in items[24:]}
    # the label filter: only images carrying the label
    label = "town"
    choose(page, "flt_labels", label)
    want = {it.id for it in items if label in it.labels}
    assert 0 < len(want) <= 24
    wait_text(page, f"{len(want)} images")
    assert until_shown(page, shown_picks, want) == want
    # text search on top of it: ids, labels, descriptions
    target = sorted(want)[0]
    type_into(page, "flt_text", target)
    wait_text(page, "1 images")
    assert until_shown(page, shown_picks, {target}) == {target}
    type_into(page, "flt_text", "no-such-thing-anywhere")
    wait_text(page, "0 images")
    assert until_shown(page, shown_picks, set()) == set()
    # Next failure: the worst failing query, then the one after it
    per_query = evaluate(idx, k=10).per_query
    first = next_failure(per_query, None)
    page.get_by_role("button", name="Next failure").click()
    wait_param(page, "query", first)
    page.get_by_text("Top 10 neighbours").wait_for()
    settled(page)
    open_picker(page)
    page.get_by_role("button", name="Next failure").click()
    second = next_failure(per_query, first)
    assert second not in (None, first)
    wait_param(page, "query", second)
    settled(page)
    # Random: some gallery image becomes the query
    open_picker(page)
    page.get_by_role("button", name="Random").click()
    page.wait_for_function("(q) => new URL(location.href).searchParams.get('query') !== q", arg=second)
    query = params(page)["query"]
    assert query in idx.ids
    page.get_by_text("Top 10 neighbours").wait_for()
    settled(page)
    top = [h.id for h in idx.search_id(query, k=10)]
    assert until_shown(page, shown_neighbours, top) == top
    # the k slider: fewer neighbours, the index's own top k, in the URL
    slide(page, "k_pick", 3, param="k")
    wait_param(page, "k", "7")
    page.get_by_text("Top 7 neighbours").wait_for()
    top = [h.id for h in idx.search_id(query, k=7)]
    assert until_shown(page, shown_neighbours, top) == top
    shot(page, "gallery_k")
    # switching indexes: the query goes, the other gallery shows
    choose(page, "index_pick", "tiny")
    wait_param(page, "index", "tiny")
    wait_param(page, "query", None)
    tiny = index(server, "tiny")
    wait_text(page, f"{len(tiny)} images")
    open_picker(page)
    ids = {re.sub(r"[^A-Za-z0-9_-]", "-", it.id) for it in tiny.items}  # as Streamlit writes them in classes
    assert until_shown(page, shown_picks, ids) == ids
    status = page.locator("[data-testid='stSidebar']").inner_text()
    assert f"{len(tiny)} images · model python:simx.models.toy:tiny_linear" in status, status


# ------------------------------------------------------------------------------------------------ pair view


def test_joint_selector_clear_point_and_presentation_mode(server, page):
    idx = index(server)
    query = "scene_0003"
    neighbour = idx.search_id(query, k=1)[0].id
    page.goto(server["url"] + f"/?index={INDEX}&query={query}&neighbour={neighbour}")
    maps = page.locator("[data-testid='stImage']").filter(has_text="gradcam: neighbour")
    maps.first.wait_for(state="visible")
    # the joint view: a click projects a point, Clear point removes it
    page.get_by_text("Click a point (or drag a box)").wait_for()
    settled(page)
    click_joint_point(page, 20)
    caption = page.get_by_text("Heat map on the neighbour")
    caption.wait_for()
    assert "under jointcam" in caption.inner_text()
    x = page.locator(".st-key-joint_x input").input_value()
    assert x != ""
    page.locator(".st-key-joint_clear button").click()
    page.get_by_text("Click a point (or drag a box)").wait_for()
    settled(page)
    assert page.locator(".st-key-joint_x input").input_value() == ""
    assert page.get_by_text("Heat map on the neighbour").count() == 0
    # the joint-method selector: another method draws the chart, and the URL remembers it
    choose(page, "joint_method", "jointhessian")
    wait_param(page, "joint", "jointhessian")
    # the new method's own chart (keyed by method), not the jointcam one it replaces: a click on that one is lost
    page.locator("[data-stale='false'][class*='st-key-joint_chart_jointhessian_'] .scatterlayer path.point").first \
        .wait_for(state="attached")
    page.get_by_text("Click a point (or drag a box)").wait_for()
    settled(page)
    click_joint_point(page, 20)
    page.get_by_text("under jointhessian").wait_for()
    # presentation mode: no controls, no sidebar, the maps stay; the link shares it; Exit brings them back
    page.locator("[data-testid='stSidebar'] button", has_text="Presentation mode").first.click()
    wait_param(page, "present", "1")
    page.get_by_text(f"simx · {INDEX}").wait_for()
    maps.first.wait_for(state="visible")
    settled(page)
    assert not page.locator("[data-testid='stSidebar']").is_visible()
    assert page.get_by_text("Label this pair").count() == 0
    assert page.locator(".st-key-joint_clear button").is_disabled()
    assert page.locator("[class*='st-key-nb_']").count() == 0
    shot(page, "presentation")
    page.locator("button", has_text="Exit presentation").first.click()
    wait_param(page, "present", None)
    page.get_by_text("Label this pair").wait_for()
    assert page.locator("[data-testid='stSidebar']").is_visible()
