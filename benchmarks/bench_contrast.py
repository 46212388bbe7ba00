"""Contrastive explanations on retrieval failures of the demo scenes (issue 14): deletion flips, counterfactuals, cost.

    .venv/bin/python benchmarks/bench_contrast.py                 # 200 plain + 200 shortcut scenes, 30 pairs each
    .venv/bin/python benchmarks/bench_contrast.py --quick         # 40 + 40 scenes, 3 pairs each (smoke run)

A long run can be split into short ones that share their galleries (``--work DIR`` keeps the scenes and indexes)
and are merged at the end, so a shared machine's benchmark lock is taken for minutes at a time::

    bench_contrast.py --work W --variants plain --first 0 --pairs 10 --json W/plain-0.json
    bench_contrast.py --work W --variants plain --first 10 --pairs 10 --json W/plain-1.json   # and so on
    bench_contrast.py --merge W/plain-0.json W/plain-1.json ...                                # the Markdown

Galleries: procedural demo scenes (:func:`simx.demo.generate_scenes`, ``plain`` and ``shortcut`` variants, seed 0)
generated into a temporary folder and indexed with the default model (EfficientNet-Lite0, cosine, ``fit=pad``).

Pairs: a query scene whose top neighbour shares none of its objects (object = procedural shape id in the scene's
boxes) while a lower-ranked neighbour (within the first 20) does: wrong = the top neighbour, right = the
best-ranked neighbour sharing an object.

For each pair and method (searchcam, gradcam; sbsm on the first ``--slow-pairs``, its 144 windows per map being
the expensive part on a shared CPU):

* **deletion flips**: the top 5 / 10 / 20 % pixels of a query map are removed (filled as the counterfactuals fill:
  white, the letterbox colour of ``fit=pad``) and the order counts as flipped when s(q', right) > s(q', wrong).
  Maps compared: the contrast map (margin s(q, wrong) - s(q, right)), the plain pair map of the same method
  (the query w.r.t. the wrong neighbour, default parameters) and a uniform random map.
* **counterfactual**: :func:`simx.explain.counterfactual.counterfactual` from the contrast map (16 x 16 cells, up to
  half the image): success rate over all pairs and over the *flippable* ones, those where removing the query's
  objects that the right neighbour does not share (an oracle from the ground-truth boxes) flips the order, and the
  median area of the regions found on the flippable pairs (the target) and on all pairs (searchcam and gradcam
  maps, ``--cf-methods``). Each pair is also classed by what flips it: its objects (flippable), its background (the
  query's content outside its object boxes removed: the background shortcut), or neither up to its whole
  background (a global cause).
* **cost**: wall time and passes of the contrast explanation (query side: the margin map) against the plain
  explanation of the same method and side, both given the neighbours' stored index vectors
  (``known_embeddings``) and the feature cache cleared before each (cold); per pair the median of ``--repeats``
  alternated runs, then the median of the per-pair ratios over the first ``--cost-pairs`` pairs. The passes of
  every pair are recorded; without stored vectors, and on both sides, the passes are counted by
  :func:`simx.explain.engine.estimate` (exact with the cache cleared).

Prints a Markdown section for ``docs/benchmarks.md`` (with the load average) and writes ``--json`` if asked.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simx.data import load_image, read_manifest  # noqa: E402
from simx.demo import generate_scenes  # noqa: E402
from simx.explain import FEATURE_CACHE, PairContext, explain  # noqa: E402
from simx.explain.counterfactual import counterfactual, removal_fill  # noqa: E402
from simx.explain.engine import estimate  # noqa: E402
from simx.explain.metrics import box_mask, transform_boxes  # noqa: E402
from simx.index import build_index, open_index  # noqa: E402

METHODS = ("searchcam", "gradcam", "sbsm")
FRACTIONS = (0.05, 0.10, 0.20)
DEPTH = 20


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def objects(item) -> set[str]:
    return {b.get("stamp") for b in item.boxes if b.get("stamp")}


def gallery(variant: str, n: int, tmp: Path) -> tuple[list, object]:
    """Generated scenes of ``variant`` and their index (default model, fit=pad), reused when ``tmp`` has them."""
    name = f"{variant}-{n}"
    if (tmp / "indexes" / name).exists():
        index = open_index(name, root=tmp / "indexes")
        return index.items, index
    manifest = generate_scenes(tmp / name, n=n, seed=0, variant=variant, stamps_dir=None, progress=False)
    t0 = time.perf_counter()
    build_index(manifest, name, model="default", root=tmp / "indexes", fit="pad", workers=0, progress=False)
    log(f"{variant}: {n} scenes indexed in {time.perf_counter() - t0:.0f} s")
    return read_manifest(manifest), open_index(name, root=tmp / "indexes")


def failing_pairs(items, index, limit: int, first: int = 0) -> list[tuple]:
    """(query, wrong, right) items: the top neighbour shares no object, a lower-ranked one (within DEPTH) does;
    the failing pairs ``first`` to ``first + limit`` in gallery order."""
    by_id = {it.id: it for it in items}
    out = []
    for it in items:
        if len(out) >= first + limit:
            break
        hits = index.search_id(it.id, k=DEPTH)
        if not hits or objects(by_id[hits[0].id]) & objects(it):
            continue
        right = next((h for h in hits[1:] if objects(by_id[h.id]) & objects(it)), None)
        if right is not None:
            out.append((it, by_id[hits[0].id], by_id[right.id]))
    return out[first:]


def top_fraction_keep(maps: list[np.ndarray], fracs) -> torch.Tensor:
    """Keep-masks (len(maps) * len(fracs), H, W): 0 on the top ``frac`` pixels of each map, 1 elsewhere."""
    rows = []
    for m in maps:
        order = np.argsort(-m.ravel(), kind="stable")
        for f in fracs:
            keep = np.ones(m.size, np.float32)
            keep[order[: int(round(f * m.size))]] = 0
            rows.append(keep.reshape(m.shape))
    return torch.from_numpy(np.stack(rows))


def oracle_keep(model, q_item, r_item, shape) -> np.ndarray | None:
    """Keep-mask removing the query's objects that the right neighbour does not share (None if there are none)."""
    shared = objects(r_item)
    boxes = [b for b in q_item.boxes if b.get("stamp") not in shared]
    if not boxes:
        return None
    with load_image(q_item.path) as img:
        w, h = img.size
    drop = box_mask(transform_boxes(boxes, model.preprocessing, w, h), shape)
    return (~drop).astype(np.float32)


def background_keep(model, q_item, box) -> np.ndarray:
    """Keep-mask removing the query's background: its own picture (``box``, not the padding) outside its objects."""
    with load_image(q_item.path) as img:
        w, h = img.size
    objs = box_mask(transform_boxes(q_item.boxes, model.preprocessing, w, h), model.input_size)
    content = np.zeros(model.input_size, bool)
    content[box[1]:box[3], box[0]:box[2]] = True
    return (~(content & ~objs)).astype(np.float32)


def margins_under(ctx: PairContext, keep: torch.Tensor, fill) -> np.ndarray:
    emb = ctx.embed_masked(ctx.query, keep, fill)
    s = ctx.model.similarity(emb, ctx.neighbour_embeddings)
    return (s[:, 0] - s[:, 1]).double().cpu().numpy()


def timed(fn):
    FEATURE_CACHE.clear()  # cold: nothing of the pair cached
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def passes(model, method: str, side: str, k: int, known: bool) -> int:
    """Forward + backward passes a run of ``side`` makes with nothing cached (:func:`estimate`, exact then)."""
    return estimate(model, method, k=k, side=side, known_embeddings=known).passes


def run_pair(model, index, triple, rng, fill, methods, cf_methods, repeats: int, quality: bool = True) -> dict:
    """One failing pair: the timed cost (``repeats`` > 0) and, with ``quality``, the deletion flips and the
    counterfactuals (counts that do not depend on the machine's load; ``--only`` splits the two)."""
    q_item, w_item, r_item = triple
    q, w, r = (load_image(it.path) for it in triple)
    stored = index.embeddings[[index.position(w_item.id), index.position(r_item.id)]]
    ctx = PairContext(model, q, [w, r])
    margin0 = float(ctx.similarities()[0] - ctx.similarities()[1])
    out = {"query": q_item.id, "wrong": w_item.id, "right": r_item.id, "margin": margin0, "methods": {},
           "quality": quality}
    oracle = oracle_keep(model, q_item, r_item, model.input_size)
    out["flippable"] = bool(oracle is not None and margins_under(ctx, torch.from_numpy(oracle[None]), fill)[0] < 0)
    out["background_flips"] = bool(margins_under(
        ctx, torch.from_numpy(background_keep(model, q_item, ctx.query_box)[None]), fill)[0] < 0)
    random_map = rng.random(model.input_size)
    for method in methods:
        # cost: contrast vs plain, query side, the neighbours' stored vectors given, cold; alternated repeats
        times_plain, times_con = [], []
        for _ in range(max(repeats, 1)):
            plain, t = timed(lambda: explain(model, q, [w], method=method, side="query",
                                             known_embeddings=stored[:1]))
            times_plain.append(t)
            contrast, t = timed(lambda: explain(model, q, w, versus=r, method=method, side="query",
                                                known_embeddings=stored))
            times_con.append(t)
        res = {"passes": {"stored": (contrast.cost.forward + contrast.cost.backward,
                                     plain.cost.forward + plain.cost.backward),
                          "unstored": (passes(model, method, "query", 2, False), passes(model, method, "query", 1,
                                                                                        False)),
                          "both": (passes(model, method, "both", 2, False), passes(model, method, "both", 1, False))}}
        if repeats:
            t_plain, t_con = statistics.median(times_plain), statistics.median(times_con)
            res["cost"] = {"ratio": t_con / t_plain, "seconds": (t_con, t_plain)}
        out["methods"][method] = res
        if not quality:
            continue
        maps = [contrast.query_maps[0], plain.query_maps[0], random_map]
        m = margins_under(ctx, top_fraction_keep(maps, FRACTIONS), fill).reshape(3, len(FRACTIONS))
        res["flips"] = {name: [bool(v < 0) for v in row] for name, row in zip(("contrast", "plain", "random"), m)}
        if method in cf_methods:
            cf = counterfactual(model, q, w, [r], contrast.query_maps[0], side="query", fill=fill)
            res["counterfactual"] = {"found": cf.found, "area": cf.area, "forwards": cf.forwards,
                                     "margin_after": cf.margin_after}
    return out


def _median(values):
    values = list(values)
    return statistics.median(values) if values else None


def summarise(all_rows: list[dict]) -> dict:
    rows = [r for r in all_rows if r.get("quality", True)]
    out = {"pairs": len(rows), "flippable": sum(r["flippable"] for r in rows),
           "background": sum(r["background_flips"] and not r["flippable"] for r in rows),
           "neither": sum(not r["background_flips"] and not r["flippable"] for r in rows), "methods": {}}
    for method in METHODS:
        done = [(r, r["methods"][method]) for r in rows if method in r["methods"]]
        costs = [r["methods"][method]["cost"] for r in all_rows
                 if method in r["methods"] and "cost" in r["methods"][method]]
        if not done and costs:  # timed only (``--only cost``): its passes and times, no counts
            res = [r["methods"][method] for r in all_rows if method in r["methods"]]
            out["methods"][method] = {"n": 0, "cf_n": 0, "passes": res[0]["passes"], **_cost_summary(costs)}
            continue
        if not done:
            continue
        res = [x for _, x in done]
        flips = {name: [sum(x["flips"][name][i] for x in res) for i in range(len(FRACTIONS))]
                 for name in ("contrast", "plain", "random")}
        cfs = [(r, x["counterfactual"]) for r, x in done if "counterfactual" in x]
        out["methods"][method] = {
            "n": len(res), "flips": flips,
            "cf_n": len(cfs), "cf_found": sum(c["found"] for _, c in cfs),
            "cf_flippable": sum(r["flippable"] for r, _ in cfs),
            "cf_found_flippable": sum(c["found"] for r, c in cfs if r["flippable"]),
            "cf_area_flippable": _median(c["area"] for r, c in cfs if c["found"] and r["flippable"]),
            "cf_area_all": _median(c["area"] for _, c in cfs if c["found"]),
            "cf_found_background": sum(c["found"] for r, c in cfs if r["background_flips"] and not r["flippable"]),
            "cf_area_background": _median(c["area"] for r, c in cfs
                                          if c["found"] and r["background_flips"] and not r["flippable"]),
            "cf_median_forwards": _median(c["forwards"] for _, c in cfs),
            "passes": res[0]["passes"], **_cost_summary(costs),
        }
    return out


def _cost_summary(costs: list[dict]) -> dict:
    return {"cost_n": len(costs), "cost": _median(c["ratio"] for c in costs),
            "cost_range": (min(c["ratio"] for c in costs), max(c["ratio"] for c in costs)) if costs else None,
            "cost_seconds": _median(c["seconds"][1] for c in costs)}


def _area(v) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def markdown(summaries: dict[str, dict], loads: list[str], threads: int) -> str:
    lines = [f"Load average (1, 5, 15 min) before / after each run: {'; '.join(loads)}; torch threads {threads}; "
             "CPU; default model (EfficientNet-Lite0, cosine, fit=pad); procedural demo scenes, seed 0.", ""]
    for name, s in summaries.items():
        lines += [f"**{name}**: {s['pairs']} failing pairs (top neighbour shares no object with the query, a "
                  f"neighbour within the first {DEPTH} does): {s['flippable']} flippable (removing the query's "
                  f"objects the right one lacks puts it first), {s['background']} more flipped only by removing "
                  f"the query's whole background, {s['neither']} by neither (a global cause).", "",
                  "| method | map | pairs | order flipped after deleting the top 5 % | 10 % | 20 % |",
                  "|---|---|---|---|---|---|"]
        for method, m in s["methods"].items():
            if not m["n"]:
                continue
            for i, mp in enumerate(("contrast", "plain", "random")):
                cells = " | ".join(f"{v}/{m['n']}" for v in m["flips"][mp])
                lines.append(f"| {method if i == 0 else ''} | {mp} | {m['n'] if i == 0 else ''} | {cells} |")
        lines += ["", "| method | counterfactual found: flippable pairs | median area (flippable) | "
                  "background-only pairs | median area (background) | all pairs | median area (all) | "
                  "median forwards |", "|---|---|---|---|---|---|---|---|"]
        for method, m in s["methods"].items():
            if not m["cf_n"]:
                continue
            lines.append(f"| {method} | {m['cf_found_flippable']}/{m['cf_flippable']} | "
                         f"{_area(m['cf_area_flippable'])} | {m['cf_found_background']}/{s['background']} | "
                         f"{_area(m['cf_area_background'])} | {m['cf_found']}/{m['cf_n']} | "
                         f"{_area(m['cf_area_all'])} | {m['cf_median_forwards']} |")
        lines += ["", "| method | passes contrast / plain, query side, stored vectors | without stored vectors | "
                  "both sides | time contrast / plain (stored vectors, cold) | plain time |",
                  "|---|---|---|---|---|---|"]
        for method, m in s["methods"].items():
            p = m["passes"]
            cost = "-" if m["cost"] is None else (f"{m['cost']:.2f}x (median of {m['cost_n']} pairs, "
                                                  f"{m['cost_range'][0]:.2f}-{m['cost_range'][1]:.2f})")
            plain_t = "-" if m["cost_seconds"] is None else f"{1000 * m['cost_seconds']:.0f} ms"
            lines.append(f"| {method} | {p['stored'][0]} / {p['stored'][1]} | {p['unstored'][0]} / "
                         f"{p['unstored'][1]} | {p['both'][0]} / {p['both'][1]} | {cost} | {plain_t} |")
        lines.append("")
    return "\n".join(lines)


def merge(paths: list[str]) -> tuple[dict[str, list], list[str], int]:
    rows: dict[str, list] = {}
    loads, threads = [], 2
    for path in paths:
        doc = json.loads(Path(path).read_text())
        for variant, got in doc["pairs"].items():
            rows.setdefault(variant, []).extend(got)
        loads.append(doc["load"])
        threads = doc.get("threads", threads)
    return rows, loads, threads


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", type=int, default=200, help="scenes per gallery")
    ap.add_argument("--variants", default="plain,shortcut", help="galleries: plain, shortcut or both")
    ap.add_argument("--pairs", type=int, default=30, help="failing pairs per gallery at most")
    ap.add_argument("--first", type=int, default=0, help="skip the first failing pairs (to split a run)")
    ap.add_argument("--slow-pairs", type=int, default=30, help="pairs per gallery the perturbation method (sbsm) "
                    "runs on, counted from the first failing pair")
    ap.add_argument("--cost-pairs", type=int, default=10, help="pairs per gallery whose wall time is measured, "
                    "counted from the first failing pair")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each explanation per cost pair")
    ap.add_argument("--cf-methods", default="searchcam,gradcam", help="methods whose contrast map seeds a "
                    "counterfactual search")
    ap.add_argument("--only", choices=("cost", "quality"), default=None, help="run the timed cost only (the "
                    "first --cost-pairs pairs) or the load-independent counts only (flips, counterfactuals)")
    ap.add_argument("--quick", action="store_true", help="40 scenes, 3 pairs per gallery")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--work", default=None, help="folder for the galleries, kept between runs (default: a new "
                    "temporary folder)")
    ap.add_argument("--json", default=None, help="write the per-pair results here")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON", help="print the Markdown of earlier runs' "
                    "--json files together and exit")
    args = ap.parse_args(argv)
    if args.merge:
        rows, loads, threads = merge(args.merge)
        print(markdown({f"{v} scenes": summarise(r) for v, r in rows.items()}, loads, threads))
        return 0
    if args.quick:
        args.scenes, args.pairs, args.slow_pairs, args.cost_pairs = 40, 3, 1, 1
    torch.set_num_threads(args.threads)
    load_before = open("/proc/loadavg").read().split()[:3]
    tmp = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="simx-bench-contrast-"))
    os.environ["SIMX_INDEXES"] = str(tmp / "indexes")
    summaries, everything = {}, {}
    rng = np.random.default_rng(args.first)
    for variant in args.variants.split(","):
        items, index = gallery(variant, args.scenes, tmp)
        model = index.model
        fill = removal_fill(model)
        limit = min(args.pairs, max(0, args.cost_pairs - args.first)) if args.only == "cost" else args.pairs
        pairs = failing_pairs(items, index, limit, args.first)
        log(f"{variant}: {len(pairs)} failing pairs from #{args.first}")
        rows = []
        cf_methods = set(args.cf_methods.split(","))
        for i, triple in enumerate(pairs, start=args.first):
            methods = [m for m in METHODS if m != "sbsm" or i < args.slow_pairs]
            timed_pair = i < args.cost_pairs and args.only != "quality"
            rows.append(run_pair(model, index, triple, rng, fill, methods, cf_methods,
                                 args.repeats if timed_pair else 0, quality=args.only != "cost"))
            log(f"  {variant} pair {i + 1}")
        summaries[f"{variant} scenes"] = summarise(rows)
        everything[variant] = rows
    load_after = open("/proc/loadavg").read().split()[:3]
    load = f"{' '.join(load_before)} / {' '.join(load_after)}"
    print(markdown(summaries, [load], args.threads))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summaries, "pairs": everything, "load": load,
                                               "threads": args.threads}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
