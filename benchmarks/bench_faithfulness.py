"""Faithfulness beside every map (issue 12 item 7): time to the first map with its estimate, and the random-map flag.

Not a test. Run from the repository root::

    .venv/bin/python benchmarks/bench_faithfulness.py                 # 12 scene pairs, default model, CPU
    .venv/bin/python benchmarks/bench_faithfulness.py --write-docs    # also (re)write the section in docs/benchmarks.md

What the dashboard does for every method row of a pair (``app_pages/_common.py``): ``explain`` the pair on both
sides, then :func:`simx.explain.metrics.faithfulness` at :data:`~simx.explain.metrics.ESTIMATE_STEPS` steps (one
batched harness over both maps). On the default model (EfficientNet-Lite0, 224 px) and procedural demo scenes
(:func:`simx.demo.generate_scenes`, each query paired with its nearest other scene), per method:

* time to the first map with its estimate, as a person sees it after the feature prefetch (the unmasked features
  of the two images are already cached, as ``simx.explain.scheduling`` arranges): the map's own time, the
  estimate's time and forwards, their sum (median over pairs). Target: gradient / closed-form methods < 2 s on CPU.
* how often each method's maps are flagged "no better than a random map" (insertion - deletion <= RANDOM_MARGIN).

Calibration of the flag: the insertion - deletion margin of uniform random maps (:func:`random_maps`) on the same
pairs at the estimate's steps: a random map's expected margin is 0 (deleting a random fraction t keeps a random
fraction 1 - t); the margin's spread says how large RANDOM_MARGIN must be to flag random maps rarely by chance.
And the estimate's agreement with the full 101-step curve (gradcam maps).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

SECTION = "## Faithfulness beside every map (issue 12 item 7)"
TARGET_GRADIENT_S = 2.0
GRADIENT = ("gradcam", "searchcam", "simcam", "sfam")
PERTURBATION = ("sbsm", "rise", "kernelshap", "lime")


def pairs_of(n: int):
    """2 n generated demo scenes as PIL images (the queries and the candidates for their nearest neighbours)."""
    from simx.data import load_image, read_manifest
    from simx.demo import generate_scenes

    dest = Path(tempfile.mkdtemp(prefix="simx-bench-faith-")) / "scenes"
    manifest = generate_scenes(dest, n=max(2 * n, 4), seed=0, variant="plain", stamps_dir=None, progress=False)
    return [load_image(item.path) for item in read_manifest(manifest)]


def nearest_pairs(model, images, n: int):
    """(query, neighbour): each of the first ``n`` scenes with its nearest other scene under the model."""
    import torch

    x = model.preprocess_batch(images)
    with torch.inference_mode():
        e = model.normalise_embeddings(model.embed(x)).float()
    sims = (e @ e.T).numpy()
    np.fill_diagonal(sims, -np.inf)
    return [(images[i], images[int(np.argmax(sims[i]))]) for i in range(n)]


def first_map(model, pairs, method: str, params: dict) -> dict:
    """Map time, estimate time and forwards for every pair (features warmed first, as after the prefetch)."""
    from simx.explain import PairContext, explain
    from simx.explain.metrics import ESTIMATE_STEPS, faithfulness

    rows = []
    for q, nb in pairs:
        ctx = PairContext(model, q, [nb])
        ctx.query_embedding  # noqa: B018  (the prefetch's work: unmasked features of both images cached)
        t0 = time.perf_counter()
        exp = explain(model, q, [nb], method=method, side="both", **params)
        t1 = time.perf_counter()
        f = faithfulness(exp, model, steps=ESTIMATE_STEPS)
        t2 = time.perf_counter()
        flagged = sum(not f[s]["better_than_random"][0] for s in ("query", "neighbour") if s in f)
        rows.append({"map": t1 - t0, "estimate": t2 - t1, "total": t2 - t0, "forwards": f["cost"]["forward"],
                     "flagged": flagged, "maps": sum(s in f for s in ("query", "neighbour"))})
    med = {k: statistics.median(r[k] for r in rows) for k in ("map", "estimate", "total")}
    return {**med, "max_total": max(r["total"] for r in rows), "forwards": rows[0]["forwards"],
            "flagged": sum(r["flagged"] for r in rows), "maps": sum(r["maps"] for r in rows), "pairs": len(rows)}


def random_margins(model, pairs, steps: int, per_pair: int) -> np.ndarray:
    """insertion - deletion of ``per_pair`` uniform random maps on the query side of every pair."""
    from simx.explain import explain
    from simx.explain.metrics import faithfulness, random_maps

    out = []
    for i, (q, nb) in enumerate(pairs):
        exp = explain(model, q, [nb] * per_pair, method="searchcam", side="query")
        exp.query_maps = random_maps(per_pair, model.input_size, seed=i)
        f = faithfulness(exp, model, steps=steps, keep=False)
        out += f["query"]["margin"]
    return np.asarray(out, dtype=np.float64)


def estimate_vs_full(model, pairs) -> dict:
    from simx.explain import explain
    from simx.explain.metrics import ESTIMATE_STEPS, FULL_STEPS, faithfulness

    est, full = [], []
    for q, nb in pairs:
        exp = explain(model, q, [nb], method="gradcam")
        a = faithfulness(exp, model, steps=ESTIMATE_STEPS, keep=False)
        b = faithfulness(exp, model, steps=FULL_STEPS, keep=False)
        for side in ("query", "neighbour"):
            for key in ("insertion", "deletion"):
                est.append(a[side][key][0])
                full.append(b[side][key][0])
    est, full = np.asarray(est), np.asarray(full)
    return {"n": len(est), "mean_abs_diff": float(np.abs(est - full).mean()),
            "max_abs_diff": float(np.abs(est - full).max()), "corr": float(np.corrcoef(est, full)[0, 1])}


def forward_ms(model, image, batch: int = 21, repeats: int = 3) -> float:
    """Best-of-``repeats`` milliseconds per image of a batched forward (the estimate's unit of work), measured in
    the same run so the estimate's time can be read against the machine's load."""
    import torch

    x = model.preprocess_batch([image] * batch).contiguous(memory_format=torch.channels_last)
    best = float("inf")
    with torch.inference_mode():
        model.embed(x[:2])
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.embed(x)
            best = min(best, time.perf_counter() - t0)
    return best / batch * 1000


def markdown(res: dict) -> str:
    from simx.explain.metrics import ESTIMATE_STEPS, RANDOM_MARGIN

    first = next(iter(res["methods"].values()))
    lines = [f"Machine: {res['machine']}; load average before / after: {res['load_before']} / {res['load_after']} "
             "(the machine is shared: figures on a loaded CPU are upper bounds).",
             f"Default model (EfficientNet-Lite0, 224 px, fit=pad so the fill is white), {res['pairs']} procedural "
             "demo scenes each paired with its nearest other scene, both sides explained, the unmasked features "
             "cached as after the dashboard's prefetch. Estimate = insertion/deletion at "
             f"{ESTIMATE_STEPS} steps, both maps in one batched harness. Medians over the pairs. A batched forward "
             f"cost {res['forward_ms']:.1f} ms per image in this run (best of 3, batch 21), so the estimate's "
             f"forwards alone take about {first['forwards'] * res['forward_ms'] / 1000:.2f} s "
             "here; on the idle machine a forward costs 12.1 ms per image (section 'Explanations (issue 4)').", "",
             "| method | map (s) | estimate (s) | estimate forwards | first map + estimate (s) | worst pair (s) | "
             "target | maps flagged 'no better than random' |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for m, r in res["methods"].items():
        target = (f"< {TARGET_GRADIENT_S:.0f} s: {'PASS' if r['total'] < TARGET_GRADIENT_S else 'FAIL'}"
                  if m in GRADIENT else "reported")
        lines.append(f"| {m}{r.get('note', '')} | {r['map']:.2f} | {r['estimate']:.2f} | {r['forwards']} | "
                     f"{r['total']:.2f} | {r['max_total']:.2f} | {target} | {r['flagged']} / {r['maps']} |")
    rm = res["random"]
    lines += ["", f"Random-map calibration ({rm['n']} uniform random maps, query side, {ESTIMATE_STEPS} steps): "
                  f"insertion - deletion mean {rm['mean']:+.2f}, sd {rm['sd']:.2f}, 95th percentile "
                  f"{rm['p95']:+.2f}; {rm['flagged_pct']:.0f}% of them are flagged at RANDOM_MARGIN = "
                  f"{RANDOM_MARGIN:g} (a random map's expected margin is 0).",
              f"Estimate vs the full 101-step curve (gradcam, {res['agreement']['n']} AUCs): mean |difference| "
              f"{res['agreement']['mean_abs_diff']:.2f}, max {res['agreement']['max_abs_diff']:.2f}, correlation "
              f"{res['agreement']['corr']:.3f}."]
    return "\n".join(lines)


def write_docs(text: str, path: Path) -> None:
    body = f"{SECTION}\n\nGenerated by `benchmarks/bench_faithfulness.py` ({time.strftime('%Y-%m-%d')}).\n\n{text}\n"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    start = old.find(SECTION)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + body
    else:
        nxt = old.find("\n## ", start + len(SECTION))
        new = old[:start] + body + ("" if nxt < 0 else old[nxt + 1:])
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(new)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    import torch

    from simx.models import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=12, help="scene pairs timed per gradient method")
    ap.add_argument("--slow-pairs", type=int, default=2, help="pairs timed per perturbation method")
    ap.add_argument("--random-per-pair", type=int, default=8, help="random maps per pair for the calibration")
    ap.add_argument("--agreement-pairs", type=int, default=4, help="pairs for the estimate-vs-full comparison")
    ap.add_argument("--rise-samples", type=int, default=None,
                    help="RISE masks (default: the method's own, as the dashboard runs it)")
    ap.add_argument("--methods", default=",".join(GRADIENT + PERTURBATION), help="comma-separated methods")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = open("/proc/loadavg").read().split()[:3]
    model = load_model("default")
    pairs = nearest_pairs(model, pairs_of(args.pairs), args.pairs)
    from simx.explain import explain

    explain(model, pairs[0][0], [pairs[0][1]], method="gradcam")  # the first call pays the lazy set-up
    res = {"pairs": args.pairs, "methods": {}, "forward_ms": forward_ms(model, pairs[0][0]),
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
                      f"{torch.__version__}, {args.threads} threads"}
    for m in [m.strip() for m in args.methods.split(",") if m.strip()]:
        params = {"n_samples": args.rise_samples} if (m == "rise" and args.rise_samples) else {}
        use = pairs if m in GRADIENT else pairs[: args.slow_pairs]
        r = first_map(model, use, m, params)
        if params:
            r["note"] = f" ({args.rise_samples} masks)"
        res["methods"][m] = r
        print(f"{m:<11} map {r['map']:.2f} s  estimate {r['estimate']:.2f} s ({r['forwards']} fwd)  "
              f"total {r['total']:.2f} s  flagged {r['flagged']}/{r['maps']}", flush=True)
    from simx.explain.metrics import ESTIMATE_STEPS, RANDOM_MARGIN

    margins = random_margins(model, pairs, ESTIMATE_STEPS, args.random_per_pair)
    res["random"] = {"n": len(margins), "mean": float(margins.mean()), "sd": float(margins.std(ddof=1)),
                     "p95": float(np.percentile(margins, 95)),
                     "flagged_pct": float((margins <= RANDOM_MARGIN).mean() * 100)}
    print("random margins", res["random"], flush=True)
    res["agreement"] = estimate_vs_full(model, pairs[: args.agreement_pairs])
    print("estimate vs full", res["agreement"], flush=True)
    res["load_before"] = " ".join(load_before)
    res["load_after"] = " ".join(open("/proc/loadavg").read().split()[:3])
    text = markdown(res)
    print(text)
    if args.write_docs:
        write_docs(text, ROOT / "docs" / "benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
