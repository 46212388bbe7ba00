"""Demo retrieval under multi-label relevance (issue 12 item 5): P@1 with "shares a label" against the old
"same (largest object's) label", and how many neighbours each definition wrongly flags.

Not a test. Run from the repository root (CPU; a few minutes: it builds the demo galleries and indexes when
they are missing)::

    .venv/bin/python benchmarks/bench_relevance.py --data /tmp/simx-demo --root /tmp/simx-demo/indexes

For each demo scene gallery (``scenes``: plain backgrounds, ``shortcut``: textured backgrounds) indexed with the
default model, every query's top-k neighbours are classified by ground truth from the scene boxes: the neighbour
holds an identical object (same stamp), shares an object category but no object, or shares nothing. Reported
for both definitions of relevance: P@1, P@k and mAP@k from :func:`simx.index.evaluate`, and how many top-1
neighbours are flagged wrong although they contain an identical object.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def classify(index, per_query) -> dict[str, int]:
    """Top-1 pairs by ground truth: identical object / same category only / nothing shared."""
    objects = {it.id: {b["stamp"] for b in it.boxes} for it in index.items}
    cats = {it.id: {b["category"] for b in it.boxes} for it in index.items}
    out = {"top1_pairs": 0, "top1_identical_object": 0, "top1_category_only": 0, "top1_nothing_shared": 0,
           "top1_identical_flagged_wrong": 0}
    for qid, nbs, rel in zip(per_query["id"], per_query["neighbours"], per_query["relevant"]):
        if not len(nbs):
            continue
        nid, ok = nbs[0], bool(rel[0])
        out["top1_pairs"] += 1
        if objects[qid] & objects[nid]:
            out["top1_identical_object"] += 1
            out["top1_identical_flagged_wrong"] += int(not ok)
        elif cats[qid] & cats[nid]:
            out["top1_category_only"] += 1
        else:
            out["top1_nothing_shared"] += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="demo data folder (default: $SIMX_DATA, else ./data/demo)")
    ap.add_argument("--root", default=None, help="index root (default: $SIMX_INDEXES, else ./indexes)")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--galleries", nargs="*", default=["scenes", "shortcut"])
    args = ap.parse_args()

    from simx.demo.build import build_demo
    from simx.index import evaluate, open_index

    t0 = time.perf_counter()
    built = build_demo(args.galleries, data=args.data, root=args.root, progress=False)
    build_s = time.perf_counter() - t0
    report = {"build": {d.name: d.status for d in built}, "build_s": round(build_s, 1),
              "loadavg": open("/proc/loadavg").read().split()[:3], "cpus": os.cpu_count(), "k": args.k}
    for name in args.galleries:
        index = open_index(name, root=args.root)
        row = {"n_items": len(index)}
        for key, primary in (("old", True), ("new", False)):
            t = time.perf_counter()
            res = evaluate(index, k=args.k, cache=False, primary_only=primary)
            o = res.overall
            row[key] = {"relevance": o["relevance"], "n_queries": o["n_queries"],
                        "precision@1": round(o["precision@1"], 4), "precision@k": round(o["precision@k"], 4),
                        "mAP@k": round(o["mAP@k"], 4), "eval_s": round(time.perf_counter() - t, 3),
                        **classify(index, res.per_query)}
        report[name] = row
    report["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
