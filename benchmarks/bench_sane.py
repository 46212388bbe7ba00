"""Benchmark of SANE's explaining attribute (issue 6): is the chosen attribute one the pair really shares?

Not a test. Run from the repository root (CPU; one to two hours on 2 cores with the defaults)::

    .venv/bin/python benchmarks/bench_sane.py                 # 500 stamp scenes, 40 test pairs
    .venv/bin/python benchmarks/bench_sane.py --quick         # smaller smoke run
    .venv/bin/python benchmarks/bench_sane.py --write-docs    # also (re)write "## SANE (issue 6)" in docs/benchmarks.md

Setup. ``--scenes`` demo scenes (:func:`simx.demo.generate_scenes`, plain backgrounds, Tux Paint stamps when
installed, else procedural shapes), indexed with the default model (EfficientNet-Lite0, 224 px, cosine). The
gallery vocabulary is every level of every category path in the manifest's ``attributes`` (``animals``,
``animals/mammals``, ``animals/mammals/bovines``, ...). Two attribute predictors are trained on the index's
cached features with the same hash split (60 / 20 / 20): with saliency supervision (L_heat on RISE maps against
the 3 nearest neighbours of ``--heat-images`` training scenes) and without (methods.md 4.3).

Part 1, attribute recognition (methods.md 7.3): test-split mAP with and without L_heat, next to chance.

Part 2, the explaining attribute (methods.md 4.4, 7.4). Each test scene is a query, its top-1 index neighbour the
reference. Ground truth: the attributes both scenes carry (annotations; where: the query's boxes of objects that
carry the attribute). For every pair the ``sane`` method runs on the query side with ``candidates="all"`` (every
vocabulary attribute gets a confidence, a saliency match against the RISE map of the query w.r.t. the neighbour,
and a removal score: similarity drop when the top 15 % of its upsampled AAM is filled with the mean colour).
Rankers: random, confidence only (attr_weight = 1), matching only (attr_weight = 0), removal only, combined
(attr_weight = 0.5) and combined + removal (removal_weight = 1/3), over two candidate sets: the whole vocabulary
and the attributes *predicted* in both images (the method's default; a pair with none gets no answer, counted
wrong). Reported: top-1 / top-3 accuracy against the shared ground truth, against the removal oracle
(argmax over ground-truth shared attributes of the removal score, 7.4), and "located" (top-1 correct and the
AAM's arg-max inside a query box carrying that attribute). Random is computed exactly (expected value over the
candidate set). The matching and combined rankers are also reported with the predictor trained without L_heat
(same saliency maps).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simx.attribute_training import TrainConfig, compare_heat, split_items  # noqa: E402
from simx.attributes import AttributePredictor, expand_attribute, item_attributes, predictor_dir  # noqa: E402
from simx.data import load_image  # noqa: E402
from simx.explain import FEATURE_CACHE, PairContext, explain  # noqa: E402

SECTION = "## SANE (issue 6)"


# --------------------------------------------------------------------------------------------- data


def stamps_dir() -> Path | None:
    from simx.demo import prepare_stamps

    for cand in (ROOT / "data" / "demo" / "stamps",):
        if (cand / ".complete.json").is_file():
            return cand
    return prepare_stamps(Path(tempfile.gettempdir()) / "simx-bench-stamps", progress=False, allow_download=False)


def build(args: argparse.Namespace) -> Any:
    from simx.demo import generate_scenes
    from simx.index import build_index, open_index

    work = Path(args.work)
    stamps = None if args.procedural else stamps_dir()
    manifest = generate_scenes(work / f"scenes-{args.scenes}-{args.seed}{'-proc' if args.procedural else ''}",
                               n=args.scenes, size=320, seed=args.seed, variant="plain", stamps_dir=stamps,
                               progress=False)
    name = f"sane-{args.scenes}-{args.seed}{'-proc' if args.procedural else ''}"
    root = work / "indexes"
    try:
        index = open_index(name, root)
        if index.meta.get("source") != str(manifest) or len(index) != args.scenes:
            raise FileNotFoundError
    except Exception:  # noqa: BLE001 - (re)build when absent or stale
        build_index(str(manifest), name, model="default", root=str(root), progress=False)
        index = open_index(name, root)
    return index


def object_tokens(box: dict[str, Any]) -> set[str]:
    """Attributes one object of a scene carries (as the demo manifest lists them, every level expanded)."""
    toks = [box.get("category"), box.get("leaf")]
    toks += [f"{k}:{box[k]}" for k in ("shape", "colour", "texture", "size") if box.get(k)]
    out: set[str] = set()
    for t in toks:
        if t:
            out.update(expand_attribute(str(t)))
    return out


# --------------------------------------------------------------------------------------------- scoring


def random_topk(n_cand: int, n_good: int, k: int) -> float:
    """Expected top-k hit rate of a uniformly random ranking of n_cand candidates of which n_good are right."""
    if n_cand == 0 or n_good == 0:
        return 0.0
    k = min(k, n_cand)
    return 1.0 - math.comb(n_cand - n_good, k) / math.comb(n_cand, k)


def rank(scores: np.ndarray, cand: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """Candidates sorted by score (ties: confidence)."""
    if len(cand) == 0:
        return cand
    order = np.lexsort((-conf[cand], -scores[cand]))
    return cand[order]


def score_table(c: np.ndarray, m: np.ndarray, r: np.ndarray, cand: np.ndarray) -> dict[str, np.ndarray]:
    rr = np.zeros_like(r)
    if len(cand):
        top = float(r[cand].max())
        rr = np.clip(r / top, 0, 1) if top > 1e-12 else np.zeros_like(r)
    base = 0.5 * c + 0.5 * m
    return {"confidence": c, "matching": m, "removal": r, "combined": base,
            "combined+removal": (2 / 3) * base + (1 / 3) * rr}


# --------------------------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    index = build(args)
    model = index.model
    t_index = time.perf_counter() - t0
    cfg = TrainConfig(epochs=args.epochs, heat_images=args.heat_images, heat_refs=3, saliency="rise",
                      saliency_params={"n_samples": args.train_n_samples}, seed=args.seed,
                      heat_weight=args.heat_weight)
    t1 = time.perf_counter()
    maps_res = compare_heat(index, cfg, retrain=args.retrain, progress=not args.quiet)
    t_train = time.perf_counter() - t1
    preds = {"heat": AttributePredictor.load(predictor_dir(index, True)),
             "no_heat": AttributePredictor.load(predictor_dir(index, False))}
    vocab = preds["heat"].vocabulary
    assert vocab.names == preds["no_heat"].vocabulary.names
    names = vocab.names
    thr = preds["heat"].thresholds()
    items = index.items
    split = split_items([it.id for it in items], cfg.val_fraction, cfg.test_fraction, cfg.seed)
    test_rows = [i for i in range(len(items)) if split[i] == "test"]

    pairs = []
    for i in test_rows:
        hit = index.search_id(items[i].id, 1)
        if hit:
            pairs.append((i, index.position(hit[0].id)))
    pairs = pairs[: args.pairs]

    rankers = ["confidence", "matching", "removal", "combined", "combined+removal"]
    cand_sets = ["all", "predicted-shared"]
    acc = {cs: {rk: {"top1": [], "top3": [], "oracle1": [], "oracle3": [], "located": []} for rk in rankers + ["random"]}
           for cs in cand_sets}
    acc_plain = {cs: {rk: {"top1": [], "top3": [], "oracle1": []} for rk in ("matching", "combined")} for cs in cand_sets}
    no_gt = {"pairs": 0, "method_says_none": 0}
    with_gt_says_none = 0
    gt_sizes, cand_sizes, seconds = [], [], []
    from tqdm.auto import tqdm

    for qi, ni in tqdm(pairs, desc="pairs", disable=args.quiet):
        q_it, n_it = items[qi], items[ni]
        gt = sorted((item_attributes(q_it) & item_attributes(n_it)) & set(names))
        q_img, n_img = load_image(q_it.path), load_image(n_it.path)
        FEATURE_CACHE.clear()
        ts = time.perf_counter()
        exp = explain(model, q_img, [n_img], method="sane", predictor=preds["heat"], side="query",
                      candidates="all", max_candidates=None, n_samples=args.n_samples, seed=args.seed,
                      removal_fraction=args.removal_fraction)
        seconds.append(time.perf_counter() - ts)
        exp_p = explain(model, q_img, [n_img], method="sane", predictor=preds["no_heat"], side="query",
                        candidates="all", max_candidates=None, removal_fraction=args.removal_fraction,
                        saliency_maps={"query": exp.extras["query_saliency"]}, removal=False)
        a = len(names)
        arrays = {}
        for key, e in (("heat", exp), ("no_heat", exp_p)):
            c, co, m, r = (np.zeros(a) for _ in range(4))
            for row in e.extras["query_ranking"][0]:
                j = vocab.index(row["attribute"])
                c[j], co[j], m[j], r[j] = row["confidence"], row["confidence_other"], row["matching"], row["removal"]
            arrays[key] = (c, co, m, r)
        c, co, m, r = arrays["heat"]
        thr_p = preds["no_heat"].thresholds()
        shared_pred = np.flatnonzero((c >= thr) & (co >= thr))
        if not gt:
            no_gt["pairs"] += 1
            no_gt["method_says_none"] += int(len(shared_pred) == 0)
            continue
        with_gt_says_none += int(len(shared_pred) == 0)
        good = {vocab.index(g) for g in gt}
        gt_idx = np.array(sorted(good))
        oracle = int(gt_idx[np.argmax(r[gt_idx])])
        gt_sizes.append(len(good))
        # where: the query's boxes carrying each attribute, in model-input pixels
        scale, dx, dy = model.preprocessing.box_transform(*q_img.size)
        ctx = PairContext(model, q_img, [n_img])  # the same inputs; features come from the engine cache
        with torch.no_grad():
            aams, _ = preds["heat"].head(ctx.query_features.float())
        up = F.interpolate(aams, size=model.input_size, mode="bilinear", align_corners=False)[0]

        def located(att: int) -> bool:
            flat = int(torch.argmax(up[att]))
            y, x = divmod(flat, up.shape[-1])
            for b in q_it.boxes:
                if names[att] in object_tokens(b):
                    x0, y0 = b["x0"] * scale + dx, b["y0"] * scale + dy
                    x1, y1 = b["x1"] * scale + dx, b["y1"] * scale + dy
                    if x0 <= x <= x1 and y0 <= y <= y1:
                        return True
            return False

        for cs in cand_sets:
            cand = np.arange(a) if cs == "all" else shared_pred
            if cs == "all":
                cand_sizes.append(len(cand))
            table = score_table(c, m, r, cand)
            for rk in rankers:
                order = rank(table[rk], cand, c)
                top = [int(x) for x in order[:3]]
                res = acc[cs][rk]
                res["top1"].append(float(bool(top) and top[0] in good))
                res["top3"].append(float(any(t in good for t in top)))
                res["oracle1"].append(float(bool(top) and top[0] == oracle))
                res["oracle3"].append(float(oracle in top))
                res["located"].append(float(bool(top) and top[0] in good and located(top[0])))
            n_good = len(good & set(int(x) for x in cand))
            rnd = acc[cs]["random"]
            rnd["top1"].append(random_topk(len(cand), n_good, 1))
            rnd["top3"].append(random_topk(len(cand), n_good, 3))
            rnd["oracle1"].append(random_topk(len(cand), int(oracle in set(cand.tolist())), 1))
            rnd["oracle3"].append(random_topk(len(cand), int(oracle in set(cand.tolist())), 3))
            rnd["located"].append(float("nan"))
            # the same rankers with the predictor trained without L_heat (its own confidences and maps)
            cp, cop, mp, rp = arrays["no_heat"]
            cand_p = np.arange(a) if cs == "all" else np.flatnonzero((cp >= thr_p) & (cop >= thr_p))
            tp = score_table(cp, mp, rp, cand_p)
            for rk in ("matching", "combined"):
                order = rank(tp[rk], cand_p, cp)
                top = [int(x) for x in order[:3]]
                acc_plain[cs][rk]["top1"].append(float(bool(top) and top[0] in good))
                acc_plain[cs][rk]["top3"].append(float(any(t in good for t in top)))
                acc_plain[cs][rk]["oracle1"].append(float(bool(top) and top[0] == oracle))

    def mean(v: list[float]) -> float | None:
        v = [x for x in v if not (isinstance(x, float) and math.isnan(x))]
        return float(np.mean(v)) if v else None

    summary = {cs: {rk: {k: mean(v) for k, v in d.items()} for rk, d in acc[cs].items()} for cs in cand_sets}
    summary_plain = {cs: {rk: {k: mean(v) for k, v in d.items()} for rk, d in acc_plain[cs].items()}
                     for cs in cand_sets}
    first_map = maps_res["heat"]
    return {
        "setup": {"scenes": args.scenes, "source": str(index.meta.get("source")), "vocabulary": len(names),
                  "pairs_scored": len(gt_sizes), "pairs_without_shared_gt": no_gt["pairs"],
                  "mean_gt_shared": mean([float(g) for g in gt_sizes]),
                  "mean_candidates_all": mean([float(x) for x in cand_sizes]),
                  "rise_n_samples_explain": args.n_samples, "rise_n_samples_train": args.train_n_samples,
                  "heat_images": args.heat_images, "epochs": args.epochs, "removal_fraction": args.removal_fraction,
                  "heat_weight": args.heat_weight, "seed": args.seed,
                  "n_train": first_map.get("n_train"), "n_val": first_map.get("n_val"),
                  "n_test": first_map.get("n_test")},
        "map": {k: {kk: v.get(kk) for kk in ("test_map", "test_chance_map", "val_map", "best_epoch", "seconds",
                                              "heat_loss_final")} for k, v in maps_res.items()},
        "ranking": summary,
        "ranking_no_heat_predictor": summary_plain,
        "no_shared": {"pairs_without_shared_gt": no_gt["pairs"],
                      "of_which_method_says_nothing_shared": no_gt["method_says_none"],
                      "pairs_with_shared_gt_where_method_says_nothing_shared": with_gt_says_none},
        "timing": {"index_s": round(t_index, 1), "train_both_s": round(t_train, 1),
                   "explain_query_side_median_s": float(np.median(seconds)) if seconds else None},
        "machine": machine(),
    }


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{os.cpu_count()}-core CPU ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} threads"


# --------------------------------------------------------------------------------------------- report


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def markdown(res: dict[str, Any], command: str) -> str:
    s = res["setup"]
    lines = [SECTION, "",
             f"Command: `{command}`. Machine: {res['machine']}; the machine was shared with other jobs, so "
             "wall times are upper bounds.", "",
             f"Data: {s['scenes']} demo scenes (`simx.demo.generate_scenes`, seed {s['seed']}, plain backgrounds, "
             f"{'procedural shapes' if 'proc' in Path(str(s['source'])).parent.name else 'Tux Paint stamps'}), "
             "default model (EfficientNet-Lite0, "
             f"224 px, 7x7 maps), gallery vocabulary of {s['vocabulary']} attributes (every level of every category "
             f"path with at least 2 training scenes). Split by id hash: {s['n_train']} train / {s['n_val']} "
             f"validation / {s['n_test']} test scenes. L_heat: RISE maps ({s['rise_n_samples_train']} masks) of "
             f"{s['heat_images']} training scenes against their 3 nearest neighbours, weight {s['heat_weight']}; "
             f"{s['epochs']} epochs, best by validation mAP.", "",
             "### Attribute recognition (methods.md 7.3, test split)", "",
             "| predictor | test mAP | chance | val mAP | best epoch | train time (s) |", "|---|---|---|---|---|---|"]
    for key, label in (("heat", "with L_heat (saliency supervision)"), ("no_heat", "without L_heat")):
        m = res["map"][key]
        lines.append(f"| {label} | {_f(m['test_map'])} | {_f(m['test_chance_map'])} | {_f(m['val_map'])} | "
                     f"{m['best_epoch']} | {_f(m['seconds'])} |")
    lines += ["", "### The explaining attribute (methods.md 4.4, 7.4)", "",
              f"{s['pairs_scored']} test pairs (query = test scene, reference = its top-1 neighbour) that share at "
              f"least one attribute ({_f(s['mean_gt_shared'])} on average of {s['vocabulary']}); "
              f"{s['pairs_without_shared_gt']} further pairs share none. Saliency: RISE, "
              f"{s['rise_n_samples_explain']} masks; removal: top {int(100 * s['removal_fraction'])} % of the AAM "
              "filled with the mean colour. Accuracy = top-ranked attribute is shared by the pair (ground truth from "
              "the scene annotations); oracle = equals the shared attribute with the largest removal score (7.4); "
              "located = correct and the AAM's arg-max falls in a query box carrying it. Random is the exact "
              "expectation over the same candidates.", ""]
    for cs, title in (("all", "Candidates: the whole vocabulary"),
                      ("predicted-shared", "Candidates: attributes predicted in both images (the method's default; "
                                           "no candidate = wrong)")):
        lines += [f"**{title}**", "", "| ranker | top-1 | top-3 | oracle top-1 | oracle top-3 | located |",
                  "|---|---|---|---|---|---|"]
        for rk in ("random", "confidence", "matching", "removal", "combined", "combined+removal"):
            r = res["ranking"][cs][rk]
            label = {"confidence": "confidence only (attr_weight 1)", "matching": "matching only (attr_weight 0)",
                     "removal": "removal only", "combined": "combined (attr_weight 0.5)",
                     "combined+removal": "combined + removal (removal_weight 1/3)"}.get(rk, rk)
            lines.append(f"| {label} | {_f(r['top1'])} | {_f(r['top3'])} | {_f(r['oracle1'])} | {_f(r['oracle3'])} "
                         f"| {_f(r['located'])} |")
        p = res["ranking_no_heat_predictor"][cs]
        lines += ["", f"Same candidates with the predictor trained without L_heat: matching only top-1 "
                      f"{_f(p['matching']['top1'])} (oracle {_f(p['matching']['oracle1'])}), combined top-1 "
                      f"{_f(p['combined']['top1'])} (oracle {_f(p['combined']['oracle1'])}).", ""]
    ns = res["no_shared"]
    lines += [f"Pairs sharing nothing: on {ns['pairs_without_shared_gt']} such pairs the method reported \"no shared "
              f"attribute\" {ns['of_which_method_says_nothing_shared']} times; on pairs that do share one it wrongly "
              f"reported none {ns['pairs_with_shared_gt_where_method_says_nothing_shared']} times.", "",
              f"Timing: index {res['timing']['index_s']} s, both predictors (features, RISE maps, training) "
              f"{res['timing']['train_both_s']} s, one query-side explanation with candidates=all (RISE + one "
              f"removal forward per attribute) median {_f(res['timing']['explain_query_side_median_s'])} s.", ""]
    # reading, derived from the numbers above
    n = max(int(s["pairs_scored"] or 0), 1)
    best = {cs: max(("confidence", "matching", "removal", "combined", "combined+removal"),
                    key=lambda rk: res["ranking"][cs][rk]["top1"] or 0.0) for cs in ("all", "predicted-shared")}
    d_map = (res["map"]["heat"]["test_map"] or 0.0) - (res["map"]["no_heat"]["test_map"] or 0.0)
    se = math.sqrt(0.25 / n)
    lines += ["Reading: every ranker is far above a random attribute. The best top-1 ranker is "
              f"{best['all']} over the whole vocabulary and {best['predicted-shared']} over the predicted shared "
              f"attributes; with {n} pairs one accuracy has a standard error of up to {se:.2f}, so differences "
              f"below about {2 * se:.2f} between rankers are not resolved. Saliency supervision changed the test "
              f"mAP by {d_map:+.3f} ({'an improvement' if d_map > 0 else 'no improvement'} on this data; SANE's "
              "claim that it helps could not be checked against the paper's numbers, methods.md 7.3). The removal "
              "oracle of 7.4 favours the removal ranker by construction (whenever its top attribute is a shared one, "
              "it is the oracle). The predicted-shared filter "
              f"{'never' if ns['of_which_method_says_nothing_shared'] == 0 else 'not always'} came back empty on "
              "pairs without a shared annotation: broad attributes (top-level categories) are predicted in most "
              "scenes, so \"nothing shared\" is reported only when the predictor sees no common concept at all. "
              "The training time with L_heat is almost all RISE passes for the saliency maps.", ""]
    return "\n".join(lines)


def write_docs(text: str) -> Path:
    """Add or replace the SANE section of docs/benchmarks.md, leaving every other section untouched."""
    path = ROOT / "docs" / "benchmarks.md"
    old = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    start = old.find(SECTION)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        nxt = old.find("\n## ", start + len(SECTION))
        end = len(old) if nxt < 0 else nxt + 1
        new = old[:start] + text.rstrip("\n") + "\n" + ("\n" + old[end:] if nxt >= 0 else "")
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenes", type=int, default=500)
    p.add_argument("--pairs", type=int, default=40)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--heat-images", type=int, default=80)
    p.add_argument("--heat-weight", type=float, default=TrainConfig.heat_weight)
    p.add_argument("--train-n-samples", type=int, default=128)
    p.add_argument("--n-samples", type=int, default=200, help="RISE masks per explained pair")
    p.add_argument("--removal-fraction", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--procedural", action="store_true", help="procedural shapes instead of stamps")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--quick", action="store_true", help="150 scenes, 20 pairs, fewer masks")
    p.add_argument("--work", default=str(ROOT / ".simx-cache" / "bench_sane"))
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    p.add_argument("--write-docs", action="store_true")
    p.add_argument("--from-json", default=None, metavar="FILE",
                   help="only render (and with --write-docs record) results saved earlier with --json")
    p.add_argument("--command", default=None, help="the command line to quote in the report (with --from-json)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.scenes, args.pairs, args.heat_images, args.n_samples, args.epochs = 150, 20, 40, 150, 20
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        command = args.command or "python benchmarks/bench_sane.py"
    else:
        res = run(args)
        command = "python benchmarks/bench_sane.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(res, command.strip())
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str), encoding="utf-8")
    if args.write_docs:
        print(f"wrote {write_docs(text)}")


if __name__ == "__main__":
    main()
