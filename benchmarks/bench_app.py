"""Dashboard latency in a real browser (issue 7): not a test, a measurement.

Starts ``streamlit run app.py`` on a free localhost port (CPU only: CUDA hidden), drives Debian's Chromium with
Playwright and times, on the demo index (``indexes/scenes`` as ``simx demo`` builds it; else a small scenes index
built on the fly with the default model):

* neighbour -> first map: from the click on a neighbour's *Open* button to the first gradient saliency map
  (``gradcam``) being visible and decoded in the page. The first pair of the process also pays for loading the
  model; it is reported apart ("cold"). Returning to a pair (cache hit) is timed too.
* joint click -> heat map: from a click on a query cell of the joint view to the projected heat map's caption for
  that point being visible (one fragment rerun).

* with ``--review``, instead: the review queue's sustained labelling rate with a key pressed every 100 ms
  (``--interval``), as a fast labeller does: every press must be stored against the pair it was pressed for
  (checked against the queue's order), and the rate is presses over the time from the first press to the last
  stored verdict. Written under ``## Review queue labelling rate (issue 12)``.

Targets: < 1.5 s to the first gradient map, < 300 ms for a joint-view click. Results are printed and written to
``docs/benchmarks.md`` under ``## Dashboard (issue 7)`` (only that section is replaced).

    .venv/bin/python benchmarks/bench_app.py [--index scenes] [--root indexes] [--pairs 10] [--clicks 8]
    .venv/bin/python benchmarks/bench_app.py --pairs 2 --clicks 1 --no-write --screenshots docs/img  # README pictures
    .venv/bin/python benchmarks/bench_app.py --review --presses 40 --interval 0.1
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SECTION = "## Dashboard (issue 7)"
REVIEW_SECTION = "## Review queue labelling rate (issue 12)"
TARGET_MAP_S = 1.5
TARGET_JOINT_S = 0.3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_index(root: Path, name: str) -> tuple[Path, str, str]:
    """(root, name, how) of an index to measure: the demo one if present, else a small one built now."""
    sys.path.insert(0, str(REPO))
    from simx.index import list_indexes

    ok = {e["name"] for e in list_indexes(root) if e.get("ok")}
    if name in ok:
        return root, name, "existing"
    from simx.demo import generate_scenes
    from simx.index import build_index

    base = Path(tempfile.mkdtemp(prefix="simx-bench-app-"))
    print(f"index {name!r} not found under {root}; building a small scenes index in {base}", file=sys.stderr)
    source = generate_scenes(base / "scenes", n=60, variant="plain", stamps_dir=None, progress=False)
    build_index(source, "scenes", model="default", root=base / "indexes", progress=False)
    return base / "indexes", "scenes", "built (60 generated scenes, default model)"


def start_server(root: Path, port: int, user: str = "bench") -> subprocess.Popen:
    env = {**os.environ, "SIMX_INDEXES": str(root), "SIMX_USER": user, "CUDA_VISIBLE_DEVICES": "",
           "PYTHONUNBUFFERED": "1"}
    log = open(Path(tempfile.gettempdir()) / f"simx-bench-app-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port",
                             str(port), "--server.address", "localhost", "--server.headless", "true"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"streamlit exited with {proc.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("streamlit did not become healthy")


def wait_map(page, method: str) -> None:
    """Until the neighbour map of ``method`` is visible and its image decoded."""
    fig = page.locator("[data-testid='stImage']").filter(has_text=f"{method}: neighbour").first
    img = fig.locator("img")
    img.wait_for(state="visible")
    page.wait_for_function("(el) => el.complete && el.naturalWidth > 0", arg=img.element_handle())


def open_first_neighbour(page, base_url: str, query: str, method: str, think: float) -> float:
    """Seconds from the click on the first neighbour's Open button to its map; ``think`` seconds of looking at
    the neighbour grid before the click (the dashboard warms the feature cache meanwhile)."""
    page.goto(f"{base_url}&query={quote(query, safe='')}&methods={method}")
    page.get_by_text("Top 10 neighbours").wait_for()
    button = page.locator("[class*='st-key-nb_'] button:visible").first
    button.wait_for()
    if think:
        page.wait_for_timeout(think * 1000)
    t0 = time.perf_counter()
    button.click()
    wait_map(page, method)
    return time.perf_counter() - t0


def time_pairs(page, base_url: str, queries: list[str], method: str, think: float
               ) -> tuple[float, list[float], list[float], list[float]]:
    """(very first pair of the process, immediate clicks, clicks after ``think`` s, revisits) in seconds; every
    timed pair but the revisits is new to the process (its explanation cache is cold)."""
    half = len(queries) // 2
    cold = open_first_neighbour(page, base_url, queries[0], method, 0)
    immediate = [open_first_neighbour(page, base_url, q, method, 0) for q in queries[1:half]]
    thought = [open_first_neighbour(page, base_url, q, method, think) for q in queries[half:]]
    revisit = [open_first_neighbour(page, base_url, q, method, 0) for q in queries[1:4]]
    return cold, immediate, thought, revisit


def joint_cells(page):
    """(chart, its query-cell markers, their number) of the joint view, once it is drawn and on screen."""
    page.get_by_text("Click a point (or drag a box)").wait_for()
    chart = page.locator("[data-testid='stPlotlyChart']").last
    chart.scroll_into_view_if_needed()
    points = chart.locator(".scatterlayer .trace").nth(0).locator("path.point")
    points.first.wait_for(state="attached")
    return chart, points, points.count()


def time_joint(page, clicks: int) -> list[float]:
    chart, points, n = joint_cells(page)
    out = []
    for c in range(clicks):
        idx = (c * 7 + 3) % n
        points.nth(idx).wait_for(state="visible")
        page.wait_for_timeout(300)  # let the previous rerun settle: every click starts from a quiet page
        box = points.nth(idx).bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        # the caption names the clicked cell centre: wait until it shows this click's point
        expected = page.evaluate(
            "([el, i]) => { const gd = el.querySelector('.js-plotly-plot'); const t = gd._fullData[2];"
            " return [t.x[i], t.y[i]]; }", [chart.element_handle(), idx])
        label = f"query point ({expected[0]:.0f}, {expected[1]:.0f})"
        page.mouse.move(x, y)
        t0 = time.perf_counter()
        page.mouse.click(x, y)
        page.get_by_text(label).wait_for(state="visible")
        out.append(time.perf_counter() - t0)
    return out


def take_screenshots(page, base_url: str, query: str, method: str, out: Path,
                     point: tuple[float, float] | None = None) -> None:
    """The README's pictures, taken on the demo index after the timings: the neighbour grid, the pair view with
    three saliency methods, the joint view with a projected point."""
    out.mkdir(parents=True, exist_ok=True)
    methods = f"{method},searchcam,sbsm"
    page.goto(f"{base_url}&query={quote(query, safe='')}&methods={methods}")
    page.get_by_text("Top 10 neighbours").wait_for()
    page.wait_for_timeout(1500)  # thumbnails
    page.screenshot(path=str(out / "demo_explore.png"))
    page.locator("[class*='st-key-nb_'] button:visible").first.click()
    for m in methods.split(","):
        wait_map(page, m)
    page.locator("[data-testid='stImage']").filter(has_text=f"{method}: neighbour").first.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=str(out / "demo_pair.png"))
    chart, points, n = joint_cells(page)
    pick = n // 2  # the centre cell, or the cell nearest ``point`` (model pixels)
    if point is not None:
        pick = page.evaluate(
            "([el, p]) => { const t = el.querySelector('.js-plotly-plot')._fullData[2]; let b = 0, d = Infinity;"
            " for (let i = 0; i < t.x.length; i++) { const e = (t.x[i] - p[0]) ** 2 + (t.y[i] - p[1]) ** 2;"
            " if (e < d) { d = e; b = i; } } return b; }", [chart.element_handle(), list(point)])
    target = points.nth(pick)
    box = target.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.get_by_text("Heat map on the neighbour").wait_for(state="visible")
    page.wait_for_timeout(500)
    chart.scroll_into_view_if_needed()
    page.screenshot(path=str(out / "demo_joint.png"))
    print(f"screenshots in {out}: demo_explore.png, demo_pair.png, demo_joint.png", file=sys.stderr)


def object_centre(index, item_id: str) -> tuple[float, float] | None:
    """Centre, in model-input pixels, of the demo scene's object that its top neighbour also holds (else its first
    object; None without boxes)."""
    from PIL import Image

    item = index.item(item_id)
    boxes = getattr(item, "boxes", None) or []
    if not boxes:
        return None
    other = index.item(index.search_id(item_id, 1)[0].id)
    shared = {b.get("stamp") for b in (getattr(other, "boxes", None) or [])}
    b = next((b for b in boxes if b.get("stamp") in shared), boxes[0])
    with Image.open(item.path) as im:
        s, dx, dy = index.model.preprocessing.box_transform(*im.size)
    return ((b["x0"] + b["x1"]) / 2 * s + dx, (b["y0"] + b["y1"]) / 2 * s + dy)


def summarize(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    return (f"median {statistics.median(xs) * 1000:.0f} ms, min {min(xs) * 1000:.0f}, max {max(xs) * 1000:.0f} "
            f"(n={len(xs)})")


def write_section(text: str, section: str = SECTION) -> Path:
    path = REPO / "docs" / "benchmarks.md"
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(text, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    path.write_text(new, encoding="utf-8")
    return path


def review_rate(root: Path, name: str, how: str, presses: int, interval: float) -> str:
    """Press review-queue keys every ``interval`` s in a real browser; check every verdict's pair; the rate."""
    from simx.index import evaluate, open_index
    from simx.labels import REASONS, open_labels
    from simx.review import queue_pairs

    index = open_index(name, root=root)
    pairs = queue_pairs(evaluate(index, k=10).per_query, 10)
    user = f"bench-review-{int(time.time())}"
    keys = [("g", "b", "g", "s", "1", "g", "b", "2")[i % 8] for i in range(presses)]
    if len(pairs) < presses:
        raise SystemExit(f"the queue has {len(pairs)} pairs, fewer than {presses} presses")
    expected: dict[tuple[str, str], tuple[str, str | None]] = {}
    for key, pair in zip(keys, pairs):
        if key != "s":
            verdict, reason = ("good", None) if key == "g" else ("bad", "other" if key == "b"
                                                                 else list(REASONS)[int(key) - 1])
            expected[(pair.query, pair.neighbour)] = (verdict, reason)
    store = open_labels(name, root=root)
    port = free_port()
    proc = start_server(root, port, user="")
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(120_000)
            page.goto(f"http://localhost:{port}/review?index={quote(name)}&user={quote(user)}")
            page.locator(".st-key-rq_good button").wait_for()
            page.locator("[data-testid='simxReviewKeys']").wait_for(state="attached")
            page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]')")
            page.wait_for_timeout(1000)
            start = time.time()
            for key in keys:
                page.keyboard.press(key)
                page.wait_for_timeout(interval * 1000)
            typed = time.time() - start
            deadline = time.time() + 900
            while time.time() < deadline:
                waiting = int(page.locator("[data-testid='simxReviewKeys']").get_attribute("data-waiting") or 0)
                if waiting == 0 and store.count(index=name, user=user) == len(expected):
                    break
                time.sleep(0.05)
            done = time.time() - start
            page.wait_for_timeout(1500)
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    got = {(r.query_id, r.neighbour_id): (r.verdict, r.reason) for r in store.list(index=name, user=user)}
    right = sum(got.get(pair) == want for pair, want in expected.items())
    wrong = len(got) - right
    load = os.getloadavg()
    return (
        f"{REVIEW_SECTION}\n\n"
        f"`benchmarks/bench_app.py --review`, real browser (Debian Chromium, headless, Playwright) against "
        f"`streamlit run app.py` on localhost, CPU only ({os.cpu_count()} cores). Index `{name}` ({how}; "
        f"{len(index)} images, model `{index.meta['model']['spec']}`); the review page draws each pair with its "
        f"first map. {presses} key presses (G, B, S, 1, 2 mixed: {len(expected)} verdicts and "
        f"{presses - len(expected)} skips), one every {interval * 1000:.0f} ms.\n\n"
        f"| measurement | result |\n| --- | --- |\n"
        f"| presses typed in | {typed:.1f} s |\n"
        f"| first press -> last verdict stored | {done:.1f} s |\n"
        f"| sustained labelling rate | {presses / done:.2f} presses/s ({60 * presses / done:.0f} per minute) |\n"
        f"| verdicts stored against the pair they were pressed for | {right} of {len(expected)} "
        f"({wrong} on a wrong pair or missing) |\n\n"
        f"Presses made while the page redraws wait in the browser and go out one at a time against the pair "
        f"shown next, so the rate is bounded by one page run per press (drawing the next pair and its map); none is "
        f"lost or applied to another pair. Machine load average while it ran: {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} (1 / 5 / 15 min) on {os.cpu_count()} cores, shared with other work.\n"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", default="scenes")
    ap.add_argument("--root", default=str(REPO / "indexes"))
    ap.add_argument("--query", default=None, help="query id (default: the index's first item)")
    ap.add_argument("--pairs", type=int, default=10, help="queries timed (each opens its first neighbour)")
    ap.add_argument("--think", type=float, default=2.0, help="seconds on the neighbour grid before a 'thinking' click")
    ap.add_argument("--clicks", type=int, default=8)
    ap.add_argument("--method", default="gradcam")
    ap.add_argument("--screenshots", metavar="DIR", default=None,
                    help="also save screenshots of the demo index (explore, pair, joint) into DIR (the README's: "
                         "docs/img)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    ap.add_argument("--review", action="store_true", help="measure the review queue's labelling rate instead")
    ap.add_argument("--presses", type=int, default=40, help="--review: keys pressed")
    ap.add_argument("--interval", type=float, default=0.1, help="--review: seconds between two presses")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing (apt-get install chromium)")

    root, name, how = ensure_index(Path(args.root), args.index)
    if args.review:
        text = review_rate(root, name, how, args.presses, args.interval)
        print(text)
        if not args.no_write:
            print(f"written to {write_section(text, REVIEW_SECTION)}")
        return 0
    from simx.index import open_index

    index = open_index(name, root=root)
    step = max(1, len(index) // max(args.pairs, 1))
    queries = [args.query] if args.query else []
    queries += [index.ids[(i * step) % len(index)] for i in range(args.pairs - len(queries))]
    query = queries[0]
    spec = index.meta["model"]["spec"]
    port = free_port()
    proc = start_server(root, port)
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(60_000)
            base = f"http://localhost:{port}/?index={quote(name)}"
            cold, immediate, thought, back = time_pairs(page, base, queries, args.method, args.think)
            joint = time_joint(page, args.clicks)
            if args.screenshots:
                take_screenshots(page, base, queries[0], args.method, Path(args.screenshots),
                                 object_centre(index, queries[0]))
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    # context: the model's own share, in this process (no browser, no Streamlit)
    from simx.data import load_image
    from simx.explain import FEATURE_CACHE, explain

    model = index.model
    inproc_cold, inproc_warm = [], []
    for q in queries[:4]:
        nb = index.search_id(q, 1)[0].id
        qi, ni = load_image(index.item(q).path), load_image(index.item(nb).path)
        FEATURE_CACHE.clear()
        t0 = time.perf_counter()
        explain(model, qi, [ni], method=args.method)
        inproc_cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        explain(model, qi, [ni], method=args.method)
        inproc_warm.append(time.perf_counter() - t0)
    # the dashboard's own server-side work per interaction (Streamlit's AppTest, no browser, everything cached)
    from streamlit.testing.v1 import AppTest

    os.environ["SIMX_INDEXES"] = str(root)
    os.environ["SIMX_NO_PREFETCH"] = "1"
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
    nb = index.search_id(query, 1)[0].id
    at.query_params.update({"index": name, "query": query, "neighbour": nb, "methods": args.method})
    at.run()
    at.run()
    script_runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        at.run()
        script_runs.append(time.perf_counter() - t0)
    load = os.getloadavg()
    map_ok = bool(thought) and statistics.median(thought) < TARGET_MAP_S
    joint_ok = bool(joint) and statistics.median(joint) < TARGET_JOINT_S
    cpu = platform.processor() or platform.machine()
    text = (
        f"{SECTION}\n\n"
        f"`benchmarks/bench_app.py`, real browser (Debian Chromium, headless, Playwright) against `streamlit run "
        f"app.py` on localhost, CPU only ({os.cpu_count()} cores, {cpu}). Index `{name}` ({how}; {len(index)} images, "
        f"model `{spec}`), {len(queries)} queries from `{query}` on, method `{args.method}`. Times are wall-clock from the click to the "
        f"result being visible in the page.\n\n"
        f"| measurement | result | target |\n| --- | --- | --- |\n"
        f"| neighbour -> first {args.method} map, first pair of the process (model warm-up) | {cold * 1000:.0f} ms "
        f"| - |\n"
        f"| neighbour -> first {args.method} map, new query, click at once | {summarize(immediate)} | - |\n"
        f"| neighbour -> first {args.method} map, new query, click after {args.think:g} s on the grid | "
        f"{summarize(thought)} | < {TARGET_MAP_S * 1000:.0f} ms {'(met)' if map_ok else '(missed)'} |\n"
        f"| neighbour -> first {args.method} map, returning to a pair (cache) | {summarize(back)} | - |\n"
        f"| joint-view click -> projected heat map (jointcam) | {summarize(joint)} | < {TARGET_JOINT_S * 1000:.0f} ms "
        f"{'(met)' if joint_ok else '(missed)'} |\n\n"
        f"For scale, `simx.explain.explain(..., method={args.method!r})` alone in one process on the same machine: "
        f"{summarize(inproc_cold[1:] or inproc_cold)} with cold features, {summarize(inproc_warm)} with the "
        f"features cached (what the dashboard's prefetch of the shown neighbours buys). A whole Explore page "
        f"run with the pair view open and its explanations cached takes {summarize(script_runs)} on the server "
        f"(AppTest, no browser): the rest of each row is the model's passes, the browser and the machine's load.\n\n"
        f"Machine load average while it ran: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) on "
        f"{os.cpu_count()} cores; other work on the machine slows every row.\n"
    )
    print(text)
    if not args.no_write:
        print(f"written to {write_section(text)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
