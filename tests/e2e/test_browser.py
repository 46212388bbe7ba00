"""End to end in a real browser: Debian's Chromium driven by Playwright against ``streamlit run app.py``.

open -> pick a query -> open a neighbour -> saliency maps -> click a point in the joint view -> bad match ->
the database row -> export CSV. Screenshots go to $SIMX_E2E_SHOTS (else a new temporary folder), never into
tracked files (explore.png, pair.png, joint.png, labels.png, embedding_map.png, review.png).
"""

from __future__ import annotations

import csv
import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.app.conftest import TOY, make_gallery

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: How long a browser test waits for anything (a page drawn, a map computed, a URL changed). Generous: on a loaded
#: 2-core CI machine the first map of a server (model load, feature cache) has taken over a minute; a wait ends
#: as soon as its condition holds, so an idle machine is not slowed down.
TIMEOUT_MS = 180_000
#: Screenshots of every step, for a person to look at after a run: never into the repository's tracked files.
SHOTS = Path(os.environ.get("SIMX_E2E_SHOTS") or tempfile.mkdtemp(prefix="simx-e2e-shots-"))

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install "
                                                                     "chromium): no browser to drive")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: ``confirm_above_s`` for a server whose tests are not about the cost confirmation: every method starts at once.
NO_CONFIRMATION = 1e9


def start_server(root: Path, port: int, user: str = "e2e", confirm_above_s: float | None = None) -> subprocess.Popen:
    """``streamlit run app.py`` over the index root ``root``. ``confirm_above_s`` sets the cost above which a method
    waits for Run (``SIMX_CONFIRM_ABOVE_S``; None: the dashboard's own limit). Whether a method crosses that limit
    depends on this machine's measured speed (a loaded CI machine estimated RISE on the toy model, and Grad-CAM on
    the real one, above it), so a test whose maps must simply appear uses :data:`NO_CONFIRMATION`."""
    env = {**os.environ, "SIMX_INDEXES": str(root), "SIMX_USER": user, "PYTHONUNBUFFERED": "1"}
    env.pop("SIMX_LABELS_URL", None)
    if confirm_above_s is not None:
        env["SIMX_CONFIRM_ABOVE_S"] = repr(float(confirm_above_s))
    log = open(root.parent / f"streamlit-{port}.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port", str(port),
         "--server.address", "localhost", "--server.headless", "true"],  # the rest from .streamlit/config.toml
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + TIMEOUT_MS / 1000
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"streamlit did not become healthy in {TIMEOUT_MS // 1000} s")


def map_in_advance(root: Path, name: str) -> None:
    """Compute and store the index's embedding map (UMAP) before the server starts, as ``simx`` stores it beside
    the index: the Embedding map page then draws the stored one. Computing it in the server on the first visit
    (numba compiling UMAP in that fresh process) took over three minutes on a loaded 2-core machine, past any
    sensible wait of a browser test; that first-visit path is tested by the AppTest of the page."""
    from simx.index import open_index
    from simx.projection import projection

    projection(open_index(name, root=root))


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from simx.index import build_index

    base = tmp_path_factory.mktemp("e2e")
    root = base / "indexes"
    build_index(make_gallery(base / "gallery", per_label=6), "tiny", model=TOY, root=root, workers=0, progress=False)
    map_in_advance(root, "tiny")
    port = free_port()
    proc = start_server(root, port, confirm_above_s=NO_CONFIRMATION)
    try:
        yield {"url": f"http://localhost:{port}", "root": root, "proc": proc}
    finally:
        stop_server(proc)
    assert proc.poll() is not None  # the server is gone


#: A page function that is true once no element of the previous script run is still shown (the run is drawn).
NOTHING_STALE = "() => !document.querySelector('[data-stale=\"true\"]')"


def click_joint_point(page, index: int) -> None:
    """Click the ``index``-th query-cell marker of the joint view's plotly chart."""
    chart = page.locator("[data-testid='stPlotlyChart']").last
    chart.scroll_into_view_if_needed()
    points = chart.locator(".scatterlayer .trace").nth(0).locator("path.point")
    points.nth(index).wait_for(state="attached")
    box = points.nth(index).bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def test_browser_walkthrough(server, browser):
    from simx.labels import open_labels

    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    page.set_default_timeout(TIMEOUT_MS)
    # open
    page.goto(server["url"] + "/?index=tiny")
    page.get_by_text("Pick a query image").wait_for()
    # pick a query from the gallery grid
    page.locator("[class*='st-key-pick_red'] button:visible").first.click()
    page.get_by_text("Top 10 neighbours").wait_for()
    page.wait_for_function("() => new URL(location.href).searchParams.get('query') !== null")
    query = page.evaluate("() => new URL(location.href).searchParams.get('query')")
    assert query.startswith("red/")
    page.screenshot(path=str(SHOTS / "explore.png"))
    # open the first neighbour
    page.locator("[class*='st-key-nb_'] button:visible").first.click()
    page.get_by_text("Why do these match?").wait_for()
    page.wait_for_function("() => new URL(location.href).searchParams.get('neighbour') !== null")
    neighbour = page.evaluate("() => new URL(location.href).searchParams.get('neighbour')")
    # wait for the saliency maps
    maps = page.locator("[data-testid='stImage']").filter(has_text="gradcam: neighbour")
    maps.first.wait_for(state="visible")
    img = maps.first.locator("img")
    img.wait_for(state="visible")
    page.wait_for_function("(el) => el.complete && el.naturalWidth > 0", arg=img.element_handle())
    maps.first.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "pair.png"))
    # click a point in the joint view: the projected heat map appears
    page.get_by_text("Click a point (or drag a box)").wait_for()
    click_joint_point(page, 100)
    caption = page.get_by_text("Heat map on the neighbour")
    caption.wait_for(state="visible")
    assert "query point (" in caption.inner_text()
    page.locator("[data-testid='stPlotlyChart']").last.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "joint.png"))
    # ... or draw a box (the chart's Box Select tool): the box is projected instead, once the click's rerun has
    # drawn its chart (a drag on the chart it replaces is lost)
    page.wait_for_function(NOTHING_STALE)
    chart = page.locator("[data-testid='stPlotlyChart']").last
    chart.hover()
    chart.locator("[data-title='Box Select']").click()
    cells = chart.locator(".scatterlayer .trace").nth(0).locator("path.point")
    a, z = cells.nth(17).bounding_box(), cells.nth(17 + 16 * 4 + 4).bounding_box()
    page.mouse.move(a["x"] + 2, a["y"] + 2)
    page.mouse.down()
    page.mouse.move(z["x"] + 10, z["y"] + 10, steps=8)
    page.mouse.up()
    page.get_by_text("projection of the query box").wait_for()
    # mark the pair as a bad match (reason: the default, background shortcut)
    page.locator(".st-key-label_bad button").click()
    page.get_by_text("Saved: bad match").wait_for()
    rows = open_labels("tiny", root=server["root"]).list(index="tiny")
    assert len(rows) == 1
    assert (rows[0].query_id, rows[0].neighbour_id, rows[0].verdict, rows[0].reason, rows[0].user) == (
        query, neighbour, "bad", "background_shortcut", "e2e")
    # stakeholder downloads: a PNG figure and a self-contained HTML report
    with page.expect_download() as dl:
        page.locator(".st-key-dl_png button").click()
    assert Path(dl.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with page.expect_download() as dl:
        page.locator(".st-key-dl_html button").click()
    html = Path(dl.value.path()).read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") >= 4 and neighbour in html and "bad" in html
    # Back walks the URL's history: the clicked point (in the URL), the pair before the click, the query alone;
    # Forward reopens the pair
    page.go_back()
    page.wait_for_function("() => new URL(location.href).searchParams.get('point') !== null")
    page.get_by_text("Heat map on the neighbour").wait_for()
    assert "query point (" in page.get_by_text("Heat map on the neighbour").inner_text()
    page.go_back()
    page.wait_for_function("() => new URL(location.href).searchParams.get('point') === null")
    page.go_back()
    page.get_by_text("Open a neighbour to see why it matches.").wait_for()
    assert "neighbour=" not in page.url and "query=" in page.url
    page.go_forward()
    page.locator("[data-testid='stImage']").filter(has_text="gradcam: neighbour").first.wait_for()
    # the view is a link: a new page from the URL reopens the same pair
    other = browser.new_page(viewport={"width": 1400, "height": 1100})
    other.set_default_timeout(TIMEOUT_MS)
    other.goto(page.url)
    other.locator("[data-testid='stImage']").filter(has_text="gradcam: neighbour").first.wait_for()
    key = "nb_" + re.sub(r"[^A-Za-z0-9_-]", "-", neighbour)  # Streamlit's class for the button's key
    other.locator(f".st-key-{key} button:visible", has_text="Opened").wait_for()
    other.close()
    # export CSV from the Labels page
    page.get_by_role("link", name="Labels").click()
    page.get_by_text("Export CSV").wait_for()
    with page.expect_download() as dl:
        page.locator(".st-key-exp_csv button").click()
    text = Path(dl.value.path()).read_text(encoding="utf-8")
    got = list(csv.DictReader(io.StringIO(text)))
    assert len(got) == 1 and got[0]["verdict"] == "bad" and got[0]["query_id"] == query
    assert got[0]["neighbour_id"] == neighbour and got[0]["reason"] == "background_shortcut"
    page.screenshot(path=str(SHOTS / "labels.png"))
    # embedding map: clicking a point makes it the query
    page.get_by_role("link", name="Embedding map").click()
    chart = page.locator("[data-testid='stPlotlyChart']").first
    chart.wait_for()
    point = chart.locator(".scatterlayer .trace").first.locator("path.point").nth(2)
    point.wait_for(state="visible")
    page.wait_for_function(NOTHING_STALE)  # the page's run is drawn: a click on a chart being replaced is lost
    page.screenshot(path=str(SHOTS / "embedding_map.png"))
    box = point.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.get_by_text("Top 10 neighbours").wait_for()
    picked = page.evaluate("() => new URL(location.href).searchParams.get('query')")
    from simx.index import open_index

    assert picked in open_index("tiny", root=server["root"]).ids  # the clicked gallery item is the query now
    assert open_labels("tiny", root=server["root"]).count(index="tiny") == 1
    # review queue with the keyboard: G labels the shown pair good, S skips, B labels bad
    page.goto(server["url"] + "/review?index=tiny")
    page.locator(".st-key-rq_good button").wait_for()
    # the keys are read by the page's key listener, which is installed with its line under the buttons: a key
    # pressed before it is drawn goes nowhere
    page.locator("[data-testid='simxReviewKeys']").wait_for(state="attached")
    store = open_labels("tiny", root=server["root"])
    before = store.count(index="tiny")
    page.keyboard.press("g")
    page.wait_for_function(
        "() => document.body.innerText.includes('" + str(before + 1) + " of ')")
    assert store.count(index="tiny", verdict="good") == 1 and store.count(index="tiny") == before + 1
    # the page re-renders after a verdict: press B once the G is applied and the key listener's line is drawn
    # again (a key pressed while no listener's line is on the page is not taken)
    # (the listener's line is drawn by a component, inside a shadow root: a locator finds it, a page query not)
    page.wait_for_function(NOTHING_STALE)
    page.locator("[data-testid='simxReviewKeys'][data-waiting='0']").wait_for(state="attached")
    page.locator(".st-key-rq_bad button").wait_for(state="visible")
    page.keyboard.press("b")
    page.wait_for_function(
        "() => document.body.innerText.includes('" + str(before + 2) + " of ')")
    assert store.count(index="tiny", verdict="bad") == 2
    page.screenshot(path=str(SHOTS / "review.png"))
    for name in ("explore", "pair", "joint", "labels", "embedding_map", "review"):
        assert (SHOTS / f"{name}.png").stat().st_size > 10_000
    page.close()


def test_deep_link_to_a_page_uses_the_app_navigation(server, browser, tmp_path):
    """The very first request of a fresh server is a deep link to /failures: app.py's navigation must still be
    the one shown (the pages live in app_pages/: Streamlit treats a pages/ folder as an old-style multipage app)."""
    port = free_port()
    proc = start_server(server["root"], port, user="deep", confirm_above_s=NO_CONFIRMATION)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"http://localhost:{port}/failures?index=tiny")
        page.get_by_text("Label confusion").wait_for()
        nav = page.locator("[data-testid='stSidebarNav'] a")
        names = sorted(t.strip().split("\n")[-1].strip() for t in nav.all_inner_texts())  # after the icon
        assert names == ["Compare", "Duplicates", "Embedding map", "Explore", "Failures", "Labels",
                         "Review queue"], names
        assert "index=tiny" in page.url and page.url.split("?")[0].endswith("/failures")
        page.close()
    finally:
        stop_server(proc)
