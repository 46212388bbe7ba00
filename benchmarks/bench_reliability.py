"""Reliability figures of issue 15: what survives a kill -9, hostile files and many browsers at once.

(a) ``build-kill``: an index is built, then rebuilt under the same name and killed with SIGKILL at ``--points``
    moments spread over the rebuild (from the first import to the publication). After every kill the old index
    must open, search and hold exactly its old vectors; the leftovers of the killed build are counted, and the
    next build must succeed and clean them up.
(b) ``hostile``: a gallery of ``--hostile`` files of every kind a real folder holds by accident or malice
    (truncated, empty, random bytes, text renamed .png, a decompression bomb header, a 1-bit 20000 x 20000 PNG of a
    few KB, SVG, a directory named like an image, a dangling symlink, a FIFO, 16-bit, CMYK, palette with
    transparency, animated GIF, EXIF-rotated, WebP, TIFF, ...) mixed with good images is built; every file must be
    either embedded or listed with a reason, the build must finish, and its peak memory is recorded.
(c) ``dashboard``: ``streamlit run app.py`` on the tiny index; a person labels pairs in the review queue with
    keys in a real browser (Chromium), the server is killed with SIGKILL mid-labelling and restarted; every label
    the server committed before the kill must be in the database and the queue must resume at the first pair
    this person has not labelled. Then every hostile file is uploaded as a query (each must get an in-page message
    or be shown; no exception element; a shown one's first pair view must draw its maps), and ``--sessions``
    browser sessions open a pair view at once (all must render; the server's memory before and after is recorded).

Prints markdown and writes ``--out`` JSON. Not a test: minutes on a 2-core CPU.

    python benchmarks/bench_reliability.py                 # everything
    python benchmarks/bench_reliability.py --only build-kill hostile
"""

from __future__ import annotations

import argparse
import json
import re
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOY = "python:simx.models.toy:tiny_linear"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)


def env_for_child(**extra: str) -> dict[str, str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("SIMX_LABELS_URL", None)
    return env


def good_gallery(folder: Path, n: int, size: int = 160, seed: int = 0) -> Path:
    """``n`` labelled pictures (coloured shapes on light backgrounds, one sub-folder per colour)."""
    rng = np.random.default_rng(seed)
    colours = {"red": (210, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 210), "orange": (240, 150, 30)}
    for i in range(n):
        label, rgb = list(colours.items())[i % len(colours)]
        img = np.full((size, size, 3), 235, np.uint8) + rng.integers(0, 20, (1, 1, 3), dtype=np.uint8)
        x, y = rng.integers(0, size // 2, 2)
        w = int(rng.integers(size // 5, size // 2))
        img[y:y + w, x:x + w] = rgb
        (folder / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / label / f"{i:04d}.png")
    return folder


# ---------------------------------------------------------------------------------------------- (a) build kills


def _index_state(name: str, root: Path) -> tuple[np.ndarray, list[str]]:
    from simx.index import open_index

    index = open_index(name, root=root)
    return np.asarray(index.embeddings).copy(), list(index.ids)


def bench_build_kill(work: Path, points: int, images: int, model: str) -> dict[str, Any]:
    root, gallery = work / "indexes", good_gallery(work / "gallery", images)
    cmd = [sys.executable, "-m", "simx", "index", "build", str(gallery), "--name", "victim", "--model", model,
           "--root", str(root), "-q"]
    t0 = time.time()
    subprocess.run(cmd, env=env_for_child(), check=True, capture_output=True)
    first = time.time() - t0
    old_vectors, old_ids = _index_state("victim", root)
    t0 = time.time()
    subprocess.run(cmd, env=env_for_child(), check=True, capture_output=True)  # the rebuild being killed below
    span = time.time() - t0
    old_vectors, old_ids = _index_state("victim", root)
    log(f"build-kill: first build {first:.1f} s, rebuild {span:.1f} s; killing at {points} points")
    rows = []
    for i in range(points):
        at = span * (i + 0.5) / points
        proc = subprocess.Popen(cmd, env=env_for_child(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(at)
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        leftovers = sorted(p.name for p in root.iterdir() if p.name.startswith(".victim."))
        try:
            vectors, ids = _index_state("victim", root)
            same = ids == old_ids and vectors.shape == old_vectors.shape and \
                float(np.abs(vectors - old_vectors).max()) <= 1e-6
            opens, error = True, ""
        except Exception as exc:  # noqa: BLE001 - the figure is whether it opens
            opens, same, error = False, False, f"{type(exc).__name__}: {exc}"
        rows.append({"kill_at_s": round(at, 2), "fraction": round(at / span, 2), "had_finished": finished,
                     "old_index_opens": opens, "same_vectors": same, "leftovers": leftovers, "error": error})
        log(f"  kill at {at:.1f} s: opens={opens} same={same} leftovers={leftovers} {error}")
    t0 = time.time()
    final = subprocess.run(cmd, env=env_for_child(), capture_output=True, text=True)
    left_after = sorted(p.name for p in root.iterdir() if p.name.startswith(".victim."))
    return {"images": images, "model": model, "first_build_s": round(first, 1), "rebuild_s": round(span, 1),
            "kills": rows, "next_build_ok": final.returncode == 0, "next_build_s": round(time.time() - t0, 1),
            "leftovers_after_next_build": left_after}


# ---------------------------------------------------------------------------------------------- (b) hostile files


def hostile_files(folder: Path, n: int, seed: int = 1) -> list[dict[str, str]]:
    """``n`` hostile files of :data:`KINDS` (round robin) under ``folder/hostile``; returns (name, kind)."""
    import io
    import zlib

    rng = np.random.default_rng(seed)
    out_dir = folder / "hostile"
    out_dir.mkdir(parents=True, exist_ok=True)
    good = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    good.save(buf, "PNG")
    png = buf.getvalue()

    def png_header(width: int, height: int, bit_depth: int = 8, colour: int = 2) -> bytes:
        ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([bit_depth, colour, 0, 0, 0])
        chunk = b"IHDR" + ihdr
        return (b"\x89PNG\r\n\x1a\n" + len(ihdr).to_bytes(4, "big") + chunk
                + zlib.crc32(chunk).to_bytes(4, "big"))

    def save(img: Image.Image, name: str, **kw) -> None:
        img.save(out_dir / name, **kw)

    kinds = {
        "truncated png": lambda p: p.write_bytes(png[: len(png) // 2]),
        "empty file": lambda p: p.write_bytes(b""),
        "random bytes": lambda p: p.write_bytes(rng.integers(0, 255, 4096, dtype=np.uint8).tobytes()),
        "text named .png": lambda p: p.write_text("this is not an image\n"),
        "bomb header (60000^2)": lambda p: p.write_bytes(png_header(60000, 60000) + png[33:]),
        "1-bit 20000^2 (few KB)": lambda p: Image.new("1", (20000, 20000)).save(p, optimize=True),
        "svg": lambda p: p.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'),
        "directory named .png": lambda p: p.mkdir(),
        "dangling symlink": lambda p: p.symlink_to(folder / "nowhere.png"),
        "fifo": lambda p: os.mkfifo(p),
        "16-bit grey": lambda p: Image.fromarray((rng.integers(0, 65535, (48, 48))).astype(np.uint16)).save(p),
        "cmyk jpeg": lambda p: good.convert("CMYK").save(p.with_suffix(".jpg"), "JPEG"),
        "palette + transparency": lambda p: good.convert("P").save(p, transparency=0),
        "animated gif": lambda p: good.save(p.with_suffix(".gif"), save_all=True,
                                            append_images=[good.rotate(90)], duration=50),
        "exif rotated jpeg": lambda p: _exif_rotated(good, p.with_suffix(".jpg")),
        "webp": lambda p: good.save(p.with_suffix(".webp"), "WEBP"),
        "tiff float": lambda p: Image.fromarray(rng.random((32, 32)).astype(np.float32)).save(p.with_suffix(".tif")),
        "1x1 pixel": lambda p: Image.new("RGB", (1, 1), (9, 9, 9)).save(p),
        "extreme aspect 4000x2": lambda p: Image.new("RGB", (4000, 2), (200, 0, 0)).save(p),
        "jpeg with trailing junk": lambda p: p.with_suffix(".jpg").write_bytes(_jpeg(good) + b"\x00junk" * 100),
    }
    made = []
    names = list(kinds)
    for i in range(n):
        kind = names[i % len(names)]
        path = out_dir / f"h{i:03d}.png"
        kinds[kind](path)
        real = next((q for q in (path, path.with_suffix(".jpg"), path.with_suffix(".gif"), path.with_suffix(".webp"),
                                 path.with_suffix(".tif")) if q.exists() or q.is_symlink()), path)
        made.append({"name": real.name, "kind": kind})
    return made


def _jpeg(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


def _exif_rotated(img: Image.Image, path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    img.save(path, "JPEG", exif=exif.tobytes())


def bench_hostile(work: Path, n: int, model: str) -> dict[str, Any]:
    gallery = good_gallery(work / "gallery", 40)
    made = hostile_files(gallery, n)
    root = work / "indexes"
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", f"""
import json, resource, sys
from simx.index import build_index
res = build_index({str(gallery)!r}, "hostile", model={model!r}, root={str(root)!r}, progress=False)
print(json.dumps({{"counts": res.meta["counts"], "skipped": res.meta["skipped"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""], env=env_for_child(), capture_output=True, text=True, timeout=1800)
    elapsed = time.time() - t0
    if out.returncode != 0:
        return {"files": n, "build_ok": False, "error": out.stderr[-2000:]}
    res = json.loads(out.stdout.strip().splitlines()[-1])
    skipped = {Path(s["path"]).name: s["reason"] for s in res["skipped"]}
    from simx.index import open_index

    embedded = {Path(it.path).name for it in open_index("hostile", root=root).items}
    by_kind: dict[str, dict[str, Any]] = {}
    unaccounted = []
    for f in made:
        k = by_kind.setdefault(f["kind"], {"files": 0, "embedded": 0, "skipped": 0, "reasons": set()})
        k["files"] += 1
        if f["name"] in embedded:
            k["embedded"] += 1
        elif f["name"] in skipped:
            k["skipped"] += 1
            k["reasons"].add(skipped[f["name"]].split(":")[0][:70])
        else:
            unaccounted.append(f)
    for k in by_kind.values():
        k["reasons"] = sorted(k["reasons"])
    return {"files": n, "build_ok": True, "build_s": round(elapsed, 1), "counts": res["counts"],
            "peak_rss_mb": round(res["peak_rss_mb"]), "by_kind": by_kind, "unaccounted": unaccounted}


# ---------------------------------------------------------------------------------------------- (c) dashboard


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(root: Path, port: int, log_path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "simx", "dashboard", "--port", str(port), "--root", str(root)],
                            env=env_for_child(), stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the dashboard did not start; see {log_path}")


def _server_pids(proc: subprocess.Popen) -> list[int]:
    """The launcher and the Streamlit process it started (same session)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == proc.pid:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def _kill_hard(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _upload_pair_view(page) -> str:
    """Open the uploaded query's first neighbour: "maps" when the pair view draws its first method's maps,
    else what the page says instead (an error message or an exception)."""
    page.locator("[class*='st-key-nb_'] button").first.click()
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stImage\"]')].some(e => "
                           "e.innerText.includes(': neighbour')) || document.querySelector('[data-testid=\"stException\"]')"
                           " || [...document.querySelectorAll('[data-testid=\"stAlert\"]')].some(e => "
                           "e.innerText.includes('error')) || [...document.querySelectorAll('button')].some(b => "
                           "b.innerText.startsWith('Run '))", timeout=120_000)
    run = page.locator("button", has_text="Run ")
    if run.count() and not page.locator("[data-testid='stImage']").filter(has_text=": neighbour").count():
        run.first.click()  # a method whose estimate asks for a click on a loaded machine
        page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stImage\"]')].some(e => "
                               "e.innerText.includes(': neighbour')) || "
                               "document.querySelector('[data-testid=\"stException\"]')", timeout=120_000)
    problems = page.locator("[data-testid='stException'], [data-testid='stAlert']").filter(
        has_text=re.compile("error|Error")).all_inner_texts()
    if problems:
        return " | ".join(t.strip() for t in problems)[:160]
    return "maps" if page.locator("[data-testid='stImage']").filter(has_text=": neighbour").count() else "no maps"


def bench_dashboard(work: Path, sessions: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from simx.index import build_index, evaluate, open_index
    from simx.labels import open_labels
    from simx.review import queue_pairs

    root = work / "indexes"
    build_index(good_gallery(work / "gallery", 48, size=96), "tiny", model=TOY, root=root, workers=0,
                progress=False)
    index = open_index("tiny", root=root)
    k = 10
    order = [(p.query, p.neighbour) for p in queue_pairs(evaluate(index, k=k).per_query, k)]
    port, log_path = _free_port(), work / "streamlit.log"
    out: dict[str, Any] = {}
    proc = _serve(root, port, log_path)
    url = f"http://localhost:{port}"
    user = "bench"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # -- kill -9 while labelling
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(90_000)
            page.goto(f"{url}/review?index=tiny&k={k}&user={user}")
            page.get_by_role("button", name="Good").wait_for()
            page.wait_for_timeout(1500)
            before_kill = 12
            for _ in range(before_kill):
                page.keyboard.press("g")
                page.wait_for_timeout(150)
            page.wait_for_timeout(300)
            _kill_hard(proc)
            store = open_labels("tiny", root=root)
            committed = [(lab.query_id, lab.neighbour_id) for lab in store.list(index="tiny", user=user)]
            proc = _serve(root, port, log_path)
            page.wait_for_timeout(3000)  # the browser reconnects by itself
            page.goto(f"{url}/review?index=tiny&k={k}&user={user}")  # and a reload resumes the queue
            page.get_by_role("button", name="Good").wait_for()
            page.wait_for_timeout(1500)
            shown = page.locator("[data-testid='stText']").all_inner_texts()
            resumed = any(order[len(set(committed))][0] in t for t in shown) if len(committed) < len(order) else None
            after_restart = 8
            for _ in range(after_restart):
                page.keyboard.press("g")
                page.wait_for_timeout(150)
            page.wait_for_timeout(12_000)  # let the last presses land (a press is resent after 8 s)
            final = {(lab.query_id, lab.neighbour_id) for lab in open_labels("tiny", root=root).list(index="tiny",
                                                                                                  user=user)}
            out["kill"] = {"presses_before_kill": before_kill, "labels_committed_before_kill": len(committed),
                           "committed_kept": all(c in final for c in committed),
                           "queue_resumed_at_first_unlabelled": resumed, "presses_after_restart": after_restart,
                           "labels_at_end": len(final), "labels_are_the_queue_prefix": final == set(order[:len(final)])}
            log(f"dashboard kill: {out['kill']}")
            page.close()

            # -- every hostile upload
            made = hostile_files(work / "uploads", 20)
            uploads = []
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            for f in made:
                path = work / "uploads" / "hostile" / f["name"]
                if not path.is_file():
                    uploads.append({**f, "result": "not a file: a browser cannot pick it"})
                    continue
                page.goto(f"{url}/?index=tiny")
                page.locator("input[type=file]").first.wait_for(state="attached")
                page.locator("input[type=file]").first.set_input_files(str(path))
                page.wait_for_timeout(2500)
                exceptions = page.locator("[data-testid='stException']").count()
                alerts = page.locator("[data-testid='stAlert']").all_inner_texts()
                row = {**f, "exceptions": exceptions, "message": " | ".join(a.strip() for a in alerts)[:160]}
                if page.locator("[class*='st-key-nb_'] button").count():  # shown as a query: open its first pair
                    row["pair_view"] = _upload_pair_view(page)
                uploads.append(row)
            out["uploads"] = uploads
            page.close()

            # -- many sessions at once
            q = order[0][0]
            n = order[0][1]
            pids = _server_pids(proc)
            rss_before = _rss_mb(pids)
            contexts = [browser.new_context(viewport={"width": 1200, "height": 900}) for _ in range(sessions)]
            pages = [c.new_page() for c in contexts]
            t0 = time.time()
            for pg in pages:
                pg.goto(f"{url}/?index=tiny&query={q}&neighbour={n}", wait_until="commit")
            answered = 0
            for pg in pages:
                try:
                    pg.locator("[data-testid='stImage']").nth(2).wait_for(timeout=180_000)
                    answered += pg.locator("[data-testid='stException']").count() == 0
                except Exception:  # noqa: BLE001 - counted as not answered
                    pass
            elapsed = time.time() - t0
            rss_peak = _rss_mb(pids)
            for c in contexts:
                c.close()
            out["sessions"] = {"sessions": sessions, "answered": answered, "all_in_s": round(elapsed, 1),
                               "server_rss_mb_before": rss_before, "server_rss_mb_with_sessions": rss_peak}
            log(f"sessions: {out['sessions']}")
        finally:
            browser.close()
            _kill_hard(proc)
    return out


# ---------------------------------------------------------------------------------------------- report


def markdown(res: dict[str, Any]) -> str:
    out = []
    if "build-kill" in res:
        b = res["build-kill"]
        out += [f"### kill -9 during an index build ({b['images']} images, model `{b['model']}`)", "",
                f"First build {b['first_build_s']} s, rebuild {b['rebuild_s']} s; the rebuild is killed at "
                f"{len(b['kills'])} moments spread over it.", "",
                "| kill at | share of the rebuild | old index opens | same ids and vectors | leftovers |",
                "|---|---|---|---|---|"]
        for r in b["kills"]:
            out.append(f"| {r['kill_at_s']} s | {r['fraction']:.2f} | {'yes' if r['old_index_opens'] else 'NO'} | "
                       f"{'yes' if r['same_vectors'] else 'NO'} | {', '.join(r['leftovers']) or '-'} |")
        out += ["", f"Next build after the kills: {'ok' if b['next_build_ok'] else 'FAILED'} in {b['next_build_s']} s; "
                f"leftovers after it: {', '.join(b['leftovers_after_next_build']) or 'none'}.", ""]
    if "hostile" in res:
        h = res["hostile"]
        out += [f"### {h['files']} hostile files in one build (plus 40 good images)", ""]
        if not h["build_ok"]:
            out += [f"BUILD FAILED: {h['error']}", ""]
        else:
            c = h["counts"]
            out += [f"Build finished in {h['build_s']} s with peak memory {h['peak_rss_mb']} MB: {c['embedded']} "
                    f"embedded, {c['skipped']} skipped with a reason, {len(h['unaccounted'])} unaccounted.", "",
                    "| kind | files | embedded | skipped | reason given |", "|---|---|---|---|---|"]
            for kind, k in h["by_kind"].items():
                out.append(f"| {kind} | {k['files']} | {k['embedded']} | {k['skipped']} | "
                           f"{'; '.join(k['reasons']) or '-'} |")
            ignored = sorted({u["kind"] for u in h["unaccounted"]})
            if ignored:
                out.append(f"Neither embedded nor listed: {len(h['unaccounted'])} files ({', '.join(ignored)}). "
                           "Only regular files (and dangling symlinks, reported as missing) are gallery items; a "
                           "directory or a FIFO named like an image is never opened (reading a FIFO would block).")
            out.append("")
    if "dashboard" in res:
        d = res["dashboard"]
        k = d["kill"]
        out += ["### kill -9 of the dashboard while labelling in the review queue (real browser)", "",
                f"{k['presses_before_kill']} G presses at 150 ms, then SIGKILL of the server: "
                f"{k['labels_committed_before_kill']} labels committed, all kept: {k['committed_kept']}. After the "
                f"restart the queue resumed at the first unlabelled pair: {k['queue_resumed_at_first_unlabelled']}; "
                f"{k['presses_after_restart']} more presses; {k['labels_at_end']} labels at the end, exactly the first "
                f"pairs of the queue: {k['labels_are_the_queue_prefix']}.", "",
                "### Hostile uploads on Explore", "",
                "| file | kind | exceptions | what the page says | its first pair view |", "|---|---|---|---|---|"]
        for u in d["uploads"]:
            out.append(f"| {u['name']} | {u['kind']} | {u.get('exceptions', '-')} | "
                       f"{u.get('message') or u.get('result') or '(shown as a query)'} | {u.get('pair_view', '-')} |")
        s_ = d["sessions"]
        out += ["", f"### {s_['sessions']} browser sessions at once", "",
                f"{s_['answered']} of {s_['sessions']} rendered a pair view without an error in {s_['all_in_s']} s; "
                f"server memory {s_['server_rss_mb_before']} MB before, {s_['server_rss_mb_with_sessions']} MB with "
                "every session open.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--points", type=int, default=10, help="kill moments during the rebuild")
    ap.add_argument("--images", type=int, default=400, help="good images of the killed build")
    ap.add_argument("--model", default="default", help="model of the killed build and the hostile build")
    ap.add_argument("--hostile", type=int, default=200, help="hostile files in the hostile build")
    ap.add_argument("--sessions", type=int, default=20, help="browser sessions at once")
    ap.add_argument("--out", default=None, help="JSON file for the figures")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="simx-reliability-"))
    res: dict[str, Any] = {"load_before": os.getloadavg()}
    try:
        if "build-kill" in args.only:
            res["build-kill"] = bench_build_kill(work / "kill", args.points, args.images, args.model)
        if "hostile" in args.only:
            res["hostile"] = bench_hostile(work / "hostile", args.hostile, args.model)
        if "dashboard" in args.only:
            res["dashboard"] = bench_dashboard(work / "dash", args.sessions)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["load_after"] = os.getloadavg()
    print(markdown(res))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2, default=str))
    return 0


PARTS = ("build-kill", "hostile", "dashboard")

if __name__ == "__main__":
    sys.exit(main())
