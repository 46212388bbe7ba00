"""Contrastive explanations on retrieval failures of the demo scenes (issue 14): deletion flips, counterfactuals, cost.

    .venv/bin/python benchmarks/bench_contrast.py                 # 100 plain + 100 shortcut scenes, 12 pairs each
    .venv/bin/python benchmarks/bench_contrast.py --quick         # 40 + 40 scenes, 3 pairs each (smoke run)

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
  half the image): success rate and median area, over all pairs and over the *flippable* ones, those where
  removing the query's objects that the right neighbour does not share (an oracle from the ground-truth boxes)
  flips the order (searchcam and gradcam maps, ``--cf-methods``).
* **cost**: wall time and passes of the contrast explanation (query side: the margin map) against the plain
  explanation of the same method and side, cold (feature cache cleared before each) and warm (unperturbed
  features cached, as in the dashboard after its prefetch); median of the per-pair ratios over the first
  ``--cost-pairs`` pairs; the pass counts of every pair.

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
    """Generated scenes of ``variant`` and their index (default model, fit=pad)."""
    manifest = generate_scenes(tmp / variant, n=n, seed=0, variant=variant, stamps_dir=None, progress=False)
    t0 = time.perf_counter()
    build_index(manifest, variant, model="default", root=tmp / "indexes", fit="pad", workers=0, progress=False)
    log(f"{variant}: {n} scenes indexed in {time.perf_counter() - t0:.0f} s")
    return read_manifest(manifest), open_index(variant, root=tmp / "indexes")


def failing_pairs(items, index, limit: int) -> list[tuple]:
    """(query, wrong, right) items: the top neighbour shares no object, a lower-ranked one (within DEPTH) does."""
    by_id = {it.id: it for it in items}
    out = []
    for it in items:
        hits = index.search_id(it.id, k=DEPTH)
        if not hits or objects(by_id[hits[0].id]) & objects(it):
            continue
        right = next((h for h in hits[1:] if objects(by_id[h.id]) & objects(it)), None)
        if right is not None:
            out.append((it, by_id[hits[0].id], by_id[right.id]))
        if len(out) >= limit:
            break
    return out


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


def margins_under(ctx: PairContext, keep: torch.Tensor, fill) -> np.ndarray:
    emb = ctx.embed_masked(ctx.query, keep, fill)
    s = ctx.model.similarity(emb, ctx.neighbour_embeddings)
    return (s[:, 0] - s[:, 1]).double().cpu().numpy()


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_pair(model, triple, rng, fill, methods, cf_methods, with_cost: bool) -> dict:
    q_item, w_item, r_item = triple
    q, w, r = (load_image(it.path) for it in triple)
    ctx = PairContext(model, q, [w, r])
    margin0 = float(ctx.similarities()[0] - ctx.similarities()[1])
    out = {"query": q_item.id, "wrong": w_item.id, "right": r_item.id, "margin": margin0, "methods": {}}
    oracle = oracle_keep(model, q_item, r_item, model.input_size)
    out["flippable"] = bool(oracle is not None and margins_under(ctx, torch.from_numpy(oracle[None]), fill)[0] < 0)
    random_map = rng.random(model.input_size)
    for method in methods:
        # cost: cold (cache cleared) and warm, contrast vs plain, query side (timed on the first pairs only)
        FEATURE_CACHE.clear()
        plain, t_plain = timed(lambda: explain(model, q, [w], method=method, side="query"))
        FEATURE_CACHE.clear()
        contrast, t_con = timed(lambda: explain(model, q, w, versus=r, method=method, side="query"))
        res = {"forward": (contrast.cost.forward, plain.cost.forward)}
        if with_cost:
            _, t_plain_w = timed(lambda: explain(model, q, [w], method=method, side="query"))
            _, t_con_w = timed(lambda: explain(model, q, w, versus=r, method=method, side="query"))
            res["cost"] = {"cold": t_con / t_plain, "warm": t_con_w / t_plain_w,
                           "seconds": (t_con, t_plain, t_con_w, t_plain_w)}
        maps = [contrast.query_maps[0], plain.query_maps[0], random_map]
        m = margins_under(ctx, top_fraction_keep(maps, FRACTIONS), fill).reshape(3, len(FRACTIONS))
        res["flips"] = {name: [bool(v < 0) for v in row] for name, row in zip(("contrast", "plain", "random"), m)}
        if method in cf_methods:
            cf = counterfactual(model, q, w, [r], contrast.query_maps[0], side="query", fill=fill)
            res["counterfactual"] = {"found": cf.found, "area": cf.area, "forwards": cf.forwards}
        out["methods"][method] = res
    return out


def summarise(rows: list[dict]) -> dict:
    out = {"pairs": len(rows), "flippable": sum(r["flippable"] for r in rows), "methods": {}}
    for method in METHODS:
        done = [(r, r["methods"][method]) for r in rows if method in r["methods"]]
        if not done:
            continue
        res = [x for _, x in done]
        flips = {name: [sum(x["flips"][name][i] for x in res) for i in range(len(FRACTIONS))]
                 for name in ("contrast", "plain", "random")}
        cfs = [(r, x["counterfactual"]) for r, x in done if "counterfactual" in x]
        areas = [c["area"] for _, c in cfs if c["found"]]
        costs = [x["cost"] for x in res if "cost" in x]
        out["methods"][method] = {
            "n": len(res), "flips": flips,
            "cf_n": len(cfs), "cf_found": sum(c["found"] for _, c in cfs),
            "cf_flippable": sum(r["flippable"] for r, _ in cfs),
            "cf_found_flippable": sum(c["found"] for r, c in cfs if r["flippable"]),
            "cf_median_area": statistics.median(areas) if areas else None,
            "cf_median_forwards": statistics.median(c["forwards"] for _, c in cfs) if cfs else None,
            "cost_n": len(costs),
            "cost_cold": statistics.median(c["cold"] for c in costs) if costs else None,
            "cost_warm": statistics.median(c["warm"] for c in costs) if costs else None,
            "forwards": res[0]["forward"],
        }
    return out


def markdown(summaries: dict[str, dict], load: str, threads: int) -> str:
    lines = [f"Load average before / after: {load}; torch threads {threads}; CPU; default model "
             "(EfficientNet-Lite0, cosine, fit=pad); procedural demo scenes, seed 0.", ""]
    for name, s in summaries.items():
        lines += [f"**{name}**: {s['pairs']} failing pairs (top neighbour shares no object with the query, a "
                  f"neighbour within the first {DEPTH} does); {s['flippable']} flippable (removing the query's "
                  "objects the right one lacks puts it first).", "",
                  "| method | map | pairs | order flipped after deleting the top 5 % | 10 % | 20 % |",
                  "|---|---|---|---|---|---|"]
        for method, m in s["methods"].items():
            for i, mp in enumerate(("contrast", "plain", "random")):
                cells = " | ".join(f"{v}/{m['n']}" for v in m["flips"][mp])
                lines.append(f"| {method if i == 0 else ''} | {mp} | {m['n'] if i == 0 else ''} | {cells} |")
        lines += ["", "| method | counterfactual found: all pairs | flippable pairs | median area | median "
                  "forwards | passes contrast / plain (query side) | time contrast / plain, cold / warm |",
                  "|---|---|---|---|---|---|---|"]
        for method, m in s["methods"].items():
            area = "-" if m["cf_median_area"] is None else f"{100 * m['cf_median_area']:.1f} %"
            cf = (f"{m['cf_found']}/{m['cf_n']} | {m['cf_found_flippable']}/{m['cf_flippable']} | {area} | "
                  f"{m['cf_median_forwards']}") if m["cf_n"] else "- | - | - | -"
            cost = (f"{m['cost_cold']:.2f}x / {m['cost_warm']:.2f}x (median of {m['cost_n']})"
                    if m["cost_n"] else "-")
            lines.append(f"| {method} | {cf} | {m['forwards'][0]} / {m['forwards'][1]} | {cost} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", type=int, default=100, help="scenes per gallery")
    ap.add_argument("--pairs", type=int, default=12, help="failing pairs per gallery at most")
    ap.add_argument("--slow-pairs", type=int, default=4, help="pairs per gallery the perturbation method (sbsm) runs on")
    ap.add_argument("--cost-pairs", type=int, default=2, help="pairs per gallery whose wall time is measured")
    ap.add_argument("--cf-methods", default="searchcam,gradcam", help="methods whose contrast map seeds a "
                    "counterfactual search")
    ap.add_argument("--quick", action="store_true", help="40 scenes, 3 pairs per gallery")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--json", default=None, help="write the per-pair results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.scenes, args.pairs, args.slow_pairs, args.cost_pairs = 40, 3, 1, 1
    torch.set_num_threads(args.threads)
    load_before = open("/proc/loadavg").read().split()[:3]
    tmp = Path(tempfile.mkdtemp(prefix="simx-bench-contrast-"))
    os.environ["SIMX_INDEXES"] = str(tmp / "indexes")
    summaries, everything = {}, {}
    rng = np.random.default_rng(0)
    for variant in ("plain", "shortcut"):
        items, index = gallery(variant, args.scenes, tmp)
        model = index.model
        fill = removal_fill(model)
        pairs = failing_pairs(items, index, args.pairs)
        log(f"{variant}: {len(pairs)} failing pairs")
        rows = []
        cf_methods = set(args.cf_methods.split(","))
        for i, triple in enumerate(pairs):
            methods = [m for m in METHODS if m != "sbsm" or i < args.slow_pairs]
            rows.append(run_pair(model, triple, rng, fill, methods, cf_methods, i < args.cost_pairs))
            if (i + 1) % 5 == 0:
                log(f"  {i + 1}/{len(pairs)}")
        summaries[f"{variant} scenes"] = summarise(rows)
        everything[variant] = rows
    load_after = open("/proc/loadavg").read().split()[:3]
    load = f"{' '.join(load_before)} / {' '.join(load_after)}"
    print(markdown(summaries, load, args.threads))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summaries, "pairs": everything, "load": load}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
