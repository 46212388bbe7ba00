"""Close the loop on the ``shortcut`` demo gallery: label background shortcuts, fine-tune, rebuild, diff (issue 17).

What it does, all with the public API (the same calls as ``simx train`` / ``simx index build`` / ``simx diff``):

1. The ``shortcut`` gallery of ``simx demo`` (300 scenes of 2-3 Tux Paint stamps on 8 strong textures, seed 0),
   reused from ``--data`` (default ``$SIMX_DATA``) when present, else generated; its index with the default model
   (EfficientNet-Lite0, fit pad), reused from ``--root`` when present.
2. The scenes are split, seeded, into *labelled* queries (40 %) and *held-out* queries (60 %, never labelled).
3. A scripted reviewer labels the labelled queries from the ground truth, as a person would in the review queue:
   among a query's top ``--label-k`` neighbours, one that shares only the background (same texture, no common
   object) is *bad* (reason ``background_shortcut``), one that shares an object is *good*; when none of the top
   ``--label-k`` shares an object, the first that does within the top 50 is labelled good (the person scrolled).
   Labels go to a label store of their own (nothing else is touched).
4. ``simx train`` twice: the metric loss alone, and with L_sm (``--sm-batch`` triplets per step through the whole
   network, to bound the CPU cost); each result is embedded into a new index.
5. Measured on the held-out queries for the original and each fine-tuned model: the share of first neighbours that
   share only the background (chance is about 1/8: 8 textures), P@1 by object (first neighbour shares an object
   with the query), and the pointing game of Grad-CAM query maps (methods.md 7.8) for one fixed pair per held-out
   scene (the scene and its first-by-id scene that shares an object; the same pairs for every model): a hit when
   the map's arg-max lies in a box of an object the pair shares (strict) or of any object of the query.
   ``simx diff`` of before vs after gives the labelled pairs fixed and regressed.

Prints a markdown section for docs/benchmarks.md and writes the figures as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simx.data import load_image, read_manifest  # noqa: E402
from simx.demo import generate_scenes, prepare_stamps  # noqa: E402
from simx.diff import compare_indexes  # noqa: E402
from simx.explain import explain  # noqa: E402
from simx.explain.metrics import pointing_game, transform_boxes  # noqa: E402
from simx.index import build_index, open_index  # noqa: E402
from simx.labels import LabelStore  # noqa: E402
from simx.training import TrainConfig, train_index  # noqa: E402


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def gallery(data: Path, n: int) -> Path:
    stamps = prepare_stamps(data / "stamps", progress=False)
    return generate_scenes(data / "shortcut", n=n, variant="shortcut", stamps_dir=stamps, progress=False)


def ground_truth(items) -> tuple[dict[str, set[str]], dict[str, str], dict[str, Any]]:
    objects = {it.id: {b["stamp"] for b in it.boxes} for it in items}
    background = {it.id: str(it.metadata.get("background")) for it in items}
    return objects, background, {it.id: it for it in items}


def first_neighbours(index, ids: list[str]) -> dict[str, str]:
    return {q: index.search_id(q, 1)[0].id for q in ids}


def retrieval(index, ids, objects, background) -> dict[str, float]:
    top = first_neighbours(index, ids)
    only_bg = [background[n] == background[q] and not objects[q] & objects[n] for q, n in top.items()]
    p1 = [bool(objects[q] & objects[n]) for q, n in top.items()]
    same_bg = [background[n] == background[q] for q, n in top.items()]
    return {"only_background_top1": float(np.mean(only_bg)), "p1_object": float(np.mean(p1)),
            "same_background_top1": float(np.mean(same_bg)), "n": len(ids)}


def label(index, store: LabelStore, queries, objects, background, k: int) -> dict[str, int]:
    counts = {"bad": 0, "good": 0, "queries_with_bad": 0}
    for q in queries:
        hits = index.search_id(q, 50)
        bad = [h for h in hits[:k] if background[h.id] == background[q] and not objects[q] & objects[h.id]]
        good = [h for h in hits[:k] if objects[q] & objects[h.id]]
        if not good:
            good = [h for h in hits if objects[q] & objects[h.id]][:1]
        for h in bad:
            store.put(index.name, q, h.id, "bad", reason="background_shortcut", user="bench", rank=h.rank,
                      score=h.score)
        for h in good:
            store.put(index.name, q, h.id, "good", user="bench", rank=h.rank, score=h.score)
        counts["bad"] += len(bad)
        counts["good"] += len(good)
        counts["queries_with_bad"] += bool(bad)
    return counts


def pointing(index, pairs, items, objects) -> dict[str, Any]:
    model = index.model
    maps, shared_boxes, any_boxes = [], [], []
    for q, p in pairs:
        qimg, pimg = load_image(items[q].path), load_image(items[p].path)
        exp = explain(model, qimg, [pimg], method="gradcam", side="query", seed=0)
        maps.append(exp.query_maps[0])
        w, h = qimg.size
        shared = [b for b in items[q].boxes if b["stamp"] in objects[p]]
        shared_boxes.append(transform_boxes(shared, model.preprocessing, w, h))
        any_boxes.append(transform_boxes(items[q].boxes, model.preprocessing, w, h))
    s, a = pointing_game(maps, shared_boxes), pointing_game(maps, any_boxes)
    return {"shared_object": s["accuracy"], "shared_object_tol15": s["accuracy_tolerance"],
            "any_object": a["accuracy"], "any_object_tol15": a["accuracy_tolerance"],
            "random_point_shared": s["random_point_baseline"]["strict"],
            "random_point_any": a["random_point_baseline"]["strict"], "n": s["n"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("SIMX_DATA") or "/tmp/simx-bench-finetune/data")
    ap.add_argument("--root", default="/tmp/simx-bench-finetune/indexes")
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--label-k", type=int, default=5)
    ap.add_argument("--labelled-share", type=float, default=0.4)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64, help="triplets per step")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--sm-epochs", type=int, default=2)
    ap.add_argument("--sm-batch", type=int, default=4)
    ap.add_argument("--pointing", type=int, default=60, help="held-out scenes in the pointing game")
    ap.add_argument("--skip-sm", action="store_true")
    ap.add_argument("--runs", default="after,after_sm",
                    help="which fine-tunings to train now (after: triplet, after_sm: triplet + L_sm); the others are "
                         "read back from a previous run's model folders and indexes when they exist")
    ap.add_argument("--reuse-labels", action="store_true",
                    help="keep the labels of a previous run (same split and reviewer) instead of labelling again")
    ap.add_argument("--no-evaluate", action="store_true", help="train and rebuild only")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    t_all = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - t_all:7.1f} s, load {loadavg()}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    out: dict[str, Any] = {"load_start": loadavg(), "torch_threads": __import__("torch").get_num_threads()}
    data, root = Path(args.data), Path(args.root)
    manifest = gallery(data, args.scenes)
    items_list = read_manifest(manifest)
    objects, background, items = ground_truth(items_list)
    log(f"gallery {manifest} ({len(items_list)} scenes)")

    t0 = time.perf_counter()
    try:
        base = open_index("shortcut", root=root)
    except Exception:  # noqa: BLE001 - not built yet
        build_index(manifest, "shortcut", model="default", fit="pad", root=root, progress=False)
        base = open_index("shortcut", root=root)
    out["build_s"] = round(time.perf_counter() - t0, 1)
    log(f"index shortcut ({base.meta['model']['spec']}) in {out['build_s']} s")

    ids = sorted(base.ids)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ids))
    n_lab = int(round(args.labelled_share * len(ids)))
    labelled, held = sorted(ids[i] for i in order[:n_lab]), sorted(ids[i] for i in order[n_lab:])
    url = f"sqlite:///{(root / 'bench-labels.sqlite').resolve()}"
    if not args.reuse_labels:
        (root / "bench-labels.sqlite").unlink(missing_ok=True)
    store = LabelStore(url)
    if args.reuse_labels:
        c = store.counts(index="shortcut")
        out["labels"] = {"bad": c["verdict"]["bad"], "good": c["verdict"]["good"],
                         "queries_with_bad": len({lab.query_id for lab in store.list(index="shortcut", verdict="bad")})}
    else:
        out["labels"] = label(base, store, labelled, objects, background, args.label_k)
    out["split"] = {"labelled_queries": len(labelled), "held_out_queries": len(held)}
    log(f"labels {out['labels']}")

    partners = {}
    for q in held:
        match = sorted(x for x in ids if x != q and objects[q] & objects[x])
        if match:
            partners[q] = match[0]
    pg_pairs = [(q, partners[q]) for q in held if q in partners][: args.pointing]

    runs: dict[str, Any] = {"before": {"index": "shortcut"}}
    configs = {"after": TrainConfig(epochs=args.epochs, lr=args.lr, seed=0, batch_size=args.batch_size)}
    if not args.skip_sm:
        configs["after_sm"] = TrainConfig(epochs=args.sm_epochs, lr=args.lr, seed=0, sm_weight=0.5,
                                          sm_batch=args.sm_batch, batch_size=args.batch_size)
    wanted = set(args.runs.split(","))
    for key, cfg in configs.items():
        if key not in wanted:
            record = root.parent / f"model-{key}" / "training.json"
            name = f"shortcut-{key.replace('_', '-')}"
            if record.is_file() and (root / name / "meta.json").is_file():
                r = json.loads(record.read_text())
                runs[key] = {"index": name, "train_s": r["elapsed_s"], "build_s": None,
                             "best_epoch": r["best_epoch"], "stopped": r["stopped"], "history": r["history"],
                             "split": {k: v for k, v in r["split"].items() if not k.endswith("queries")},
                             "trainable": {k: r["trainable"][k] for k in ("groups", "trainable_params",
                                                                          "embedding_params")}}
            continue
        t0 = time.perf_counter()
        res = train_index("shortcut", root.parent / f"model-{key}", cfg, root=root, labels_url=url, force=True,
                          command=f"bench_finetune.py ({key})", log=log)
        train_s = time.perf_counter() - t0
        name = f"shortcut-{key.replace('_', '-')}"
        t0 = time.perf_counter()
        build_index(manifest, name, model=res.spec, layer=base.meta["model"]["layer"], fit="pad", root=root,
                    progress=False)
        runs[key] = {"index": name, "train_s": round(train_s, 1), "build_s": round(time.perf_counter() - t0, 1),
                     "best_epoch": res.record["best_epoch"], "stopped": res.record["stopped"],
                     "history": res.record["history"], "split": {k: v for k, v in res.record["split"].items()
                                                                 if not k.endswith("queries")},
                     "trainable": {k: res.record["trainable"][k] for k in ("groups", "trainable_params",
                                                                          "embedding_params")}}
        log(f"{key}: trained in {train_s:.0f} s ({res.record['stopped']}), rebuilt in {runs[key]['build_s']} s")

    if args.no_evaluate:
        return 0
    for key, run in runs.items():
        index = open_index(run["index"], root=root)
        run["held_out"] = retrieval(index, held, objects, background)
        run["labelled"] = retrieval(index, labelled, objects, background)
        t0 = time.perf_counter()
        run["pointing"] = pointing(index, pg_pairs, items, objects)
        run["pointing_s"] = round(time.perf_counter() - t0, 1)
        log(f"{key}: held-out {run['held_out']}, pointing {run['pointing']}")
        if key != "before":
            d = compare_indexes(open_index("shortcut", root=root), index, k=args.label_k, stores=[store])
            run["diff"] = {"pairs": d.overall["pairs"], "top1_changed": d.overall["top1_changed"],
                           "mean_overlap": d.overall["mean_overlap"],
                           "metrics": d.overall["metrics"]}
    out["runs"] = runs
    out["load_end"] = loadavg()
    out["total_s"] = round(time.perf_counter() - t_all, 1)
    out["args"] = vars(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    print(markdown(out))
    return 0


def markdown(o: dict[str, Any]) -> str:
    runs = o["runs"]
    names = {"before": "original (default)", "after": "fine-tuned, triplet", "after_sm": "fine-tuned, triplet + L_sm"}
    lines = ["| model | top-1 shares only the background | P@1 by object | pointing, shared object | "
             "pointing, any object | labelled pairs fixed / regressed |", "|---|---|---|---|---|---|"]
    for key, r in runs.items():
        h, p = r["held_out"], r["pointing"]
        pairs = r.get("diff", {}).get("pairs")
        lines.append(f"| {names.get(key, key)} | {h['only_background_top1']:.3f} | {h['p1_object']:.3f} | "
                     f"{p['shared_object']:.3f} | {p['any_object']:.3f} | "
                     + (f"{pairs['fixed']} / {pairs['regressed']}" if pairs else "-") + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
