"""The Failures filters, the embedding map's box and lasso selection, and the Labels page's filters, edits, deletes
and downloads, in a real browser on the demo scenes embedded by the real default model (EfficientNet-Lite0).

Each page is checked against the backend: the evaluation's per-query table for the filters, the stored
projection for the selections, the label store (:mod:`simx.labels`) for edits, deletes and every download.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.e2e.test_browser import CHROMIUM
from tests.e2e.test_every_control import page  # noqa: F401 - the fixture: one browser page per test
from tests.e2e.test_every_control import choose, params, settled, until_shown, wait_text
from tests.e2e.real_server import INDEX, index, real_demo_server, store

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install "
                                                                     "chromium): no browser to drive")]



@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from real_demo_server(tmp_path_factory, "e2e_real_pages", user="e2e")


def listed(page, n: int, total: int) -> None:
    """The Failures page lists ``n`` of the ``total`` queries."""
    wait_text(page, f"{n} of {total} queries")
    settled(page)


def down_to(page, key: str, value: float) -> None:
    """Move the slider ``key`` down to ``value`` one key press at a time, each waiting for the slider to move (a
    press made while the page reruns can be lost on a loaded machine)."""
    thumb = page.locator(f".st-key-{key} input[type='range']")
    while float(thumb.input_value()) > value + 1e-9:
        before = thumb.input_value()
        thumb.focus()
        thumb.press("ArrowLeft")
        page.wait_for_function("([k, v]) => document.querySelector(`.st-key-${k} input[type='range']`).value !== v",
                               arg=[key, before])
        settled(page)
    assert float(thumb.input_value()) == pytest.approx(value)
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    settled(page)


# ------------------------------------------------------------------------------------------------ failures


def test_failures_filters(server, page):
    from simx.index import evaluate

    per_query = evaluate(index(server), k=10).per_query
    total = len(per_query)
    page.goto(server["url"] + f"/failures?index={INDEX}")
    listed(page, total, total)
    # the label filter: the queries carrying the label
    label = "animals"
    choose(page, "fail_labels", label)
    has = [label in labs for labs in per_query["labels"]]
    assert 0 < sum(has) < total
    listed(page, sum(has), total)
    # AP at most 0.5 (ten steps of 0.05 down from 1.0), on top of it
    down_to(page, "fail_ap", 0.5)
    low = [h and ap <= 0.5 + 1e-9 for h, ap in zip(has, per_query["ap"])]
    listed(page, sum(low), total)
    # only queries whose first neighbour is wrong
    page.locator(".st-key-fail_p1 label").click()
    wrong = [lo and p1 < 1 for lo, p1 in zip(low, per_query["p1"])]
    listed(page, sum(wrong), total)
    assert sum(wrong) <= sum(low) <= sum(has)
    # back off the label filter: every label again, AP and first-neighbour filters kept
    page.locator(f".st-key-fail_labels [aria-label='Remove {label}']").first.click()
    every = [ap <= 0.5 + 1e-9 and p1 < 1 for ap, p1 in zip(per_query["ap"], per_query["p1"])]
    listed(page, sum(every), total)
    assert sum(every) >= sum(wrong)


# ------------------------------------------------------------------------------------------------ embedding map


def test_embedding_map_box_and_lasso_selection(server, page):
    idx = index(server)
    page.goto(server["url"] + f"/embedding_map?index={INDEX}")
    chart = page.locator("[data-testid='stPlotlyChart']").first
    chart.wait_for(timeout=300_000)  # the first visit computes the projection (UMAP's JIT: minutes under load)
    chart.locator(".scatterlayer .trace path.point").nth(len(idx) - 1).wait_for(state="attached")
    settled(page)
    # every point on screen: (its centre's x, its id from the trace's customdata)
    drawn = page.evaluate("""() => { const gd = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
        return [...gd.querySelectorAll('.scatterlayer .trace')].flatMap((tr, j) =>
            [...tr.querySelectorAll('path.point')].map(p => { const r = p.getBoundingClientRect();
                const c = gd._fullData[j].customdata[p.__data__.i];
                return [r.x + r.width / 2, String(Array.isArray(c) ? c[0] : c)]; })); }""")
    assert sorted(i for _, i in drawn) == sorted(idx.ids)
    xs = sorted(x for x, _ in drawn)
    # cut through the widest gap in the left-to-right order that leaves at least four points on each side
    _, cut_at = max((xs[i + 1] - xs[i], i) for i in range(3, len(xs) - 4))
    cut = (xs[cut_at] + xs[cut_at + 1]) / 2
    left_ids = {i for x, i in drawn if x < cut}
    def shown_ids() -> set[str]:
        links = page.locator("[data-stale='false'] [data-testid='stPageLink']").filter(has_text="Query")
        return set(links.evaluate_all("els => els.map(e => new URL(e.querySelector('a').href).searchParams"
                                      ".get('query'))"))

    def drag(tool: str, corners) -> None:
        """Pick ``tool`` in the chart's toolbar and drag through ``corners(top, bottom, left, right)`` (the plot
        area measured now: a rerun may have scrolled the page, which moves it vertically, never horizontally)."""
        chart.hover()
        chart.locator(f"[data-title='{tool}']").click()
        plot = chart.locator(".nsewdrag").first.bounding_box()
        path = corners(plot["y"] + 2, plot["y"] + plot["height"] - 2, plot["x"] + 2, plot["x"] + plot["width"] - 2)
        page.mouse.move(*path[0])
        page.mouse.down()
        for x, y in path[1:]:
            page.mouse.move(x, y, steps=8)
        page.mouse.up()

    # lasso: a polygon around the points right of the cut (a third of the gap clear of it), started at its
    # bottom-left corner (the chart's toolbar covers the plot's top-right corner: a press there is no drag)
    edge = cut + (xs[cut_at + 1] - xs[cut_at]) / 3
    right_ids = set(idx.ids) - left_ids
    drag("Lasso Select", lambda top, bottom, left, right: [(edge, bottom), (right, bottom), (right, top), (edge, top),
                                                           (edge, bottom - 1)])
    page.get_by_text(f"{len(right_ids)} selected").wait_for()
    settled(page)
    assert until_shown(page, lambda _: shown_ids(), right_ids) == right_ids
    assert "query" not in params(page)  # an area selects, it does not open a query
    # then the box: everything left of the cut, in place of the lasso's points
    drag("Box Select", lambda top, bottom, left, right: [(left, top), (cut, bottom)])
    page.get_by_text(f"{len(left_ids)} selected").wait_for()
    settled(page)
    boxed = until_shown(page, lambda _: shown_ids(), left_ids)
    assert boxed == left_ids  # the thumbnails (with their Query links) of exactly the boxed points


# ------------------------------------------------------------------------------------------------ labels page


def test_labels_page_filters_edits_deletes_and_downloads(server, page):
    from simx.labels_io import index_triplets

    idx = index(server)
    labels = store(server)
    q1, q2 = "scene_0001", "scene_0002"
    n1 = [h.id for h in idx.search_id(q1, k=3)]
    n2 = [h.id for h in idx.search_id(q2, k=3)]
    labels.put(INDEX, q1, n1[0], "good", user="ann", note="first")
    labels.put(INDEX, q1, n1[1], "bad", reason="wrong_category", user="ann")
    labels.put(INDEX, q2, n2[0], "bad", reason="background_shortcut", user="ben", note="sky")
    labels.put(INDEX, q2, n2[1], "good", user="ben")
    page.goto(server["url"] + f"/labels?index={INDEX}")
    page.get_by_text("Export CSV").wait_for()
    settled(page)

    def total_shown(n: int) -> None:
        page.wait_for_function("(n) => [...document.querySelectorAll('[data-testid=\"stMetric\"]')].some(m => "
                               "m.innerText.split('\\n')[0] === 'labels' && m.innerText.split('\\n').includes(String(n)))",
                               arg=n)
        settled(page)

    def download(key: str) -> str:
        with page.expect_download() as dl:
            page.locator(f".st-key-{key} button").first.click()
        return Path(dl.value.path()).read_text(encoding="utf-8")

    def row(r) -> tuple:
        get = r.get if isinstance(r, dict) else (lambda k: getattr(r, k))
        return (get("query_id"), get("neighbour_id"), get("verdict"), get("reason") or "", get("user"),
                get("note") or "")

    def csv_rows(text: str) -> set[tuple]:
        return {row(r) for r in csv.DictReader(io.StringIO(text))}

    def db(**filters) -> set[tuple]:
        return {row(r) for r in labels.list(index=INDEX, **filters)}

    total_shown(4)
    # the three downloads, unfiltered, hold exactly the database
    assert csv_rows(download("exp_csv")) == db()
    assert {row(json.loads(line)) for line in download("exp_jsonl").splitlines()} == db()
    triplets = download("exp_triplets")
    assert triplets == index_triplets(labels, idx, k=10)
    negatives = {(r["query"], r["negative"]) for r in csv.DictReader(io.StringIO(triplets))}
    assert negatives == {(q1, n1[1]), (q2, n2[0])}  # the two bad labels, each with a positive
    # filters: verdict bad, then the user
    choose(page, "lab_verdict", "bad")
    total_shown(2)
    assert csv_rows(download("exp_csv")) == db(verdict="bad")
    choose(page, "lab_user", "ben")
    total_shown(1)
    assert page.get_by_text("by ann").count() == 0
    assert csv_rows(download("exp_csv")) == db(verdict="bad", user="ben") == {
        (q2, n2[0], "bad", "background_shortcut", "ben", "sky")}
    assert {row(json.loads(line)) for line in download("exp_jsonl").splitlines()} == db(verdict="bad", user="ben")
    # edit that label: verdict good, a new note; it then leaves the "bad" list
    edited = labels.find(INDEX, q2, n2[0], user="ben")[0]
    choose(page, f"lv_{edited.id}", "good")
    note = page.locator(f".st-key-ln_{edited.id} input")
    note.fill("checked: same kite")
    note.press("Enter")
    settled(page)
    page.locator(f".st-key-ls_{edited.id} button").first.click()
    total_shown(0)
    now = labels.get(edited.id)
    assert (now.verdict, now.note, now.user) == ("good", "checked: same kite", "ben")
    # clear the filters: every label again; delete one (with its confirmation)
    page.goto(server["url"] + f"/labels?index={INDEX}")
    total_shown(4)
    victim = labels.find(INDEX, q1, n1[0], user="ann")[0]
    page.locator(f".st-key-ld_{victim.id} button").first.click()
    page.locator(f".st-key-ldy_{victim.id} button").first.click()
    total_shown(3)
    assert labels.get(victim.id) is None and labels.count(index=INDEX) == 3
    page.locator(f".st-key-ls_{victim.id}").wait_for(state="detached")
    assert csv_rows(download("exp_csv")) == db()
    assert (q1, n1[0], "good", "", "ann", "first") not in db()
    assert {row(json.loads(line)) for line in download("exp_jsonl").splitlines()} == db()
    assert download("exp_triplets") == index_triplets(labels, idx, k=10)
