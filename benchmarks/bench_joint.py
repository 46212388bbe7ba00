"""Benchmark of the joint (second-order) explanations (issue 5): cost, estimator convergence, localisation.

Not a test. Run from the repository root::

    .venv/bin/python benchmarks/bench_joint.py                      # all three parts, CPU
    .venv/bin/python benchmarks/bench_joint.py --parts b            # one part (a, b, c; comma-separated)
    .venv/bin/python benchmarks/bench_joint.py --quick              # a smoke run (few pairs / networks)
    .venv/bin/python benchmarks/bench_joint.py --write-docs         # (re)write the section in docs/benchmarks.md

Every part stores its result in ``.simx-cache/bench_joint/<part>.json``; ``--write-docs`` assembles the section
``## Joint correspondences (issue 5)`` of ``docs/benchmarks.md`` from whatever parts are stored (only that section
is replaced), so the parts can be run at different times.

(a) Cost. The default model (EfficientNet-Lite0, 224 px, cosine) on the CPU; demo scenes; the query is scene 0 and
its neighbours its 8 nearest scenes. For every joint method: one pair and 1 query x 8 neighbours, the time of the
method itself once the unperturbed embeddings exist (they are computed before the clock starts, as they are in an
index; the time of that batched pass is reported separately), with the forward/backward passes it made. Cheap
methods are timed over repeats (median and min). Target: jointcam < 20 ms per pair.

(b) Estimator convergence, a reproduction of Hamilton et al.'s Fig. 5 setup (methods.md 7.6): random deep networks
f: R^15 -> R (3 hidden tanh layers of 64, weights N(0, 1/fan_in), biases N(0, 0.1^2)), a random input x ~ N(0, I),
the game v(S) = f(x masked to S, 0 elsewhere); exact order-2 Shapley-Taylor indices by enumeration (2^15 = 32,768
evaluations); MSE over the 105 pair indices of the kernel estimator (6.4) and the Monte-Carlo estimator (6.3) vs
the number of function evaluations, averaged over networks and seeds. The evaluation ratio at equal error is read
off log-log interpolation of the two mean curves. Plot: ``docs/img/sti_convergence.png``.

(c) Joint localisation (methods.md 7.7) on ``--pairs`` pairs of demo scenes (300 scenes, 320 px, seed 0) sharing an
exact object: project the query object's box through J (h = J^T a, 6.8) onto the neighbour; pointing hit = the
arg-max of the painted map inside the neighbour's box of the same object (ties, e.g. a flat superpixel: the tied
pixel nearest the centroid of the tied set); IoU of the top-p fraction of the map (p = the box's area fraction) with
that box; faithfulness (7.7 step 3): s(x censored to the query box, y censored to the top-p of h), fill = dataset
mean (0 in normalised space), next to the same with the true box in y ("oracle") and random projections (Gaussian
J on the same cells). Pairs sharing a query are explained together (1 query x K neighbours).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simx.explain import FEATURE_CACHE, REGISTRY  # noqa: E402
from simx.explain import views as jv  # noqa: E402
from simx.explain.engine import PairContext  # noqa: E402
from simx.explain.methods.shapleytaylor import (  # noqa: E402
    exact_indices, kernel_indices, sampling_evaluations, sampling_indices)
from simx.models import load_model  # noqa: E402

SECTION = "## Joint correspondences (issue 5)"
CACHE = ROOT / ".simx-cache" / "bench_joint"
PLOT = ROOT / "docs" / "img" / "sti_convergence.png"
#: (label, registered method, parameters)
METHODS_A = [
    ("jointcam", "jointcam", {}),
    ("jointcam [1 thread]", "jointcam", {}),
    ("jointhessian (closed form)", "jointhessian", {}),
    ("jointhessian (closed form) [1 thread]", "jointhessian", {}),
    ("jointhessian (autograd, pooled)", "jointhessian", {"form": "pooled"}),
    ("jointhessian (autograd, positions)", "jointhessian", {"form": "positions"}),
    ("jointsbsm", "jointsbsm", {}),
    ("shapleytaylor", "shapleytaylor", {}),
]
METHODS_C = [
    ("jointcam", "jointcam", {}),
    ("jointhessian", "jointhessian", {}),
    ("jointsbsm", "jointsbsm", {}),
    ("shapleytaylor", "shapleytaylor", {}),
]
CHEAP = {"jointcam", "jointhessian"}


# ------------------------------------------------------------------------------------------------ helpers
def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        m = re.search(r"Model name:\s*(.+)", out)
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "torch": torch.__version__, "python": platform.python_version(),
                            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    return info


def load_avg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def save(part: str, result: dict[str, Any]) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / f"{part}.json").write_text(json.dumps(result, indent=1, default=float), encoding="utf-8")


def load(part: str) -> dict[str, Any] | None:
    p = CACHE / f"{part}.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


def scenes(n: int, size: int, work: Path) -> Path:
    from simx.demo import generate_scenes

    return Path(generate_scenes(work / f"scenes_{n}_{size}", n=n, size=size, seed=0, progress=False))


def read_rows(manifest: Path) -> list[dict[str, Any]]:
    rows = list(csv.DictReader(open(manifest, newline="")))
    for r in rows:
        r["boxes"] = json.loads(r["boxes"])
        r["file"] = str(Path(manifest).parent / r["path"])
    return rows


def prepare(model, rows: list[dict[str, Any]], batch: int = 32) -> tuple[dict[str, torch.Tensor], float]:
    """Model inputs of every scene, their features and embeddings put in the engine's cache with one batched
    channels-last pass (the "embeddings exist" state); returns (inputs by id, seconds per image of that pass)."""
    from PIL import Image

    inputs = {r["id"]: model.preprocess(Image.open(r["file"]).convert("RGB")) for r in rows}
    ids = list(inputs)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(ids), batch):
            x = torch.stack([inputs[k] for k in ids[i : i + batch]]).contiguous(memory_format=torch.channels_last)
            f = model.features(x)
            e = model.head(f)
            for j, k in enumerate(ids[i : i + batch]):
                FEATURE_CACHE.put(FEATURE_CACHE.key(model, inputs[k]), (f[j : j + 1].float().clone(),
                                                                        e[j : j + 1].float().clone()))
    per_image = (time.perf_counter() - t0) / len(ids)
    if FEATURE_CACHE.capacity < len(ids):
        FEATURE_CACHE.capacity = len(ids) + 16
    return inputs, per_image


# ------------------------------------------------------------------------------------------------ part (a)
def part_a(args, model, work: Path) -> dict[str, Any]:
    rows = read_rows(scenes(40, 320, work))
    inputs, per_image = prepare(model, rows)
    ids = list(inputs)
    emb = torch.cat([FEATURE_CACHE.get(FEATURE_CACHE.key(model, inputs[k]))[1] for k in ids])
    sims = model.similarity(emb[:1], emb)[0]
    sims[0] = -math.inf
    nbrs = [ids[i] for i in sims.argsort(descending=True)[:8].tolist()]
    q = inputs[ids[0]]
    out: dict[str, Any] = {"machine": machine(), "unperturbed_forward_s_per_image": per_image, "methods": []}
    for label, method, params in METHODS_A:
        row: dict[str, Any] = {"label": label, "method": method, "params": params}
        for key, nb in (("one", nbrs[:1]), ("eight", nbrs)):
            ctx = PairContext(model, q, [inputs[n] for n in nb])
            _ = ctx.query_embedding, ctx.neighbour_embeddings
            if model.has_features:
                _ = ctx.query_features, ctx.neighbour_features
            fn = REGISTRY[method].fn
            repeats = args.repeats if method in CHEAP else 1
            times, passes = [], None
            threads = torch.get_num_threads()
            if "[1 thread]" in label:  # small einsums: one thread avoids spinning workers on a shared machine
                torch.set_num_threads(1)
            try:
                for _ in range(repeats):
                    ctx.cost.forward = ctx.cost.backward = 0
                    t0 = time.perf_counter()
                    fn(ctx, "both", **params)
                    times.append(time.perf_counter() - t0)
                    passes = (ctx.cost.forward, ctx.cost.backward)
            finally:
                torch.set_num_threads(threads)
            row[key] = {"median_s": float(np.median(times)), "min_s": float(np.min(times)), "repeats": repeats,
                        "forward": passes[0], "backward": passes[1], "k": len(nb)}
            print(f"(a) {label:36s} K={len(nb)}  {np.median(times) * 1000:9.1f} ms  fwd {passes[0]:5d}  "
                  f"bwd {passes[1]}", flush=True)
        out["methods"].append(row)
    out["load_average_end"] = load_avg()
    return out


# ------------------------------------------------------------------------------------------------ part (b)
def random_network(n: int, seed: int, width: int = 64, depth: int = 3):
    rng = np.random.default_rng(seed)
    layers, fan_in = [], n
    for _ in range(depth):
        layers.append((rng.normal(size=(fan_in, width)) / math.sqrt(fan_in), rng.normal(size=width) * 0.1))
        fan_in = width
    w_out = rng.normal(size=width) / math.sqrt(width)
    x = rng.normal(size=n)

    def value(z: np.ndarray) -> np.ndarray:
        h = np.asarray(z, dtype=np.float64) * x
        for w, b in layers:
            h = np.tanh(h @ w + b)
        return h @ w_out

    return value


def interp_budget(budgets: np.ndarray, errors: np.ndarray, target: float) -> float:
    """Budget at which a (decreasing) error curve reaches ``target``, log-log interpolation, linear extrapolation
    from the end segments."""
    lb, le = np.log(budgets), np.log(errors)
    order = np.argsort(-le)
    lb, le = lb[order], le[order]
    t = math.log(target)
    if t >= le[0]:
        i = 0
    elif t <= le[-1]:
        i = len(le) - 2
    else:
        i = int(np.searchsorted(-le, -t)) - 1
    slope = (lb[i + 1] - lb[i]) / (le[i + 1] - le[i])
    return float(math.exp(lb[i] + slope * (t - le[i])))


KERNELS = (("kernel", "stratified", "kernel Shapley-Taylor (6.4), stratified sizes (default)", "tab:blue"),
           ("kernel_iid", "iid", "kernel Shapley-Taylor (6.4), i.i.d. sizes", "tab:green"))


def part_b(args) -> dict[str, Any]:
    n = 15
    m = n * (n - 1) // 2
    iu = np.triu_indices(n, 1)
    kernel_budgets = [256, 512, 1024, 2048, 4096, 8192, 16384]
    mc_samples = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    mc_budgets = [sampling_evaluations(n, n + 1 + 4 * m * s)[1] for s in mc_samples]
    nets, seeds = args.nets, args.seeds
    k_err = {key: np.zeros((nets, seeds, len(kernel_budgets))) for key, *_ in KERNELS}
    m_err = np.zeros((nets, seeds, len(mc_budgets)))
    variances = []
    t0 = time.perf_counter()
    for net in range(nets):
        v = random_network(n, 1000 + net)
        exact = exact_indices(v, n)[2][iu]
        variances.append(float(exact.var()))
        for s in range(seeds):
            for key, sizes, *_ in KERNELS:
                for b, budget in enumerate(kernel_budgets):
                    est = kernel_indices(v, n, budget, seed=s, sizes=sizes)[2][iu]
                    k_err[key][net, s, b] = ((est - exact) ** 2).mean()
            for b, budget in enumerate(mc_budgets):
                m_err[net, s, b] = ((sampling_indices(v, n, budget, seed=s)[2][iu] - exact) ** 2).mean()
        print(f"(b) network {net + 1}/{nets} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    runs = nets * seeds
    mm = m_err.mean((0, 1))
    result: dict[str, Any] = {
        "n": n, "pairs": m, "networks": nets, "seeds": seeds, "exact_evaluations": 2**n,
        "pair_index_variance": float(np.mean(variances)),
        "sampling": {"budgets": mc_budgets, "samples_per_pair": mc_samples, "mse": mm.tolist(),
                     "se": (m_err.reshape(runs, -1).std(0) / math.sqrt(runs)).tolist()}}
    for key, sizes, label, _ in KERNELS:
        km = k_err[key].mean((0, 1))
        ratios = [{"kernel_budget": b, "mse": float(e),
                   "mc_budget_at_equal_mse": interp_budget(np.array(mc_budgets), mm, e),
                   "ratio": interp_budget(np.array(mc_budgets), mm, e) / b} for b, e in zip(kernel_budgets, km)]
        inside = [r["ratio"] for r in ratios if mm.min() <= r["mse"] <= mm.max()]
        result[key] = {"label": label, "sizes": sizes, "budgets": kernel_budgets, "mse": km.tolist(),
                       "se": (k_err[key].reshape(runs, -1).std(0) / math.sqrt(runs)).tolist(), "ratios": ratios,
                       "ratio_median_within_range": float(np.median(inside)) if inside else None}
    result["seconds"] = time.perf_counter() - t0
    plot_b(result, PLOT)
    result["plot"] = str(PLOT.relative_to(ROOT))
    return result


def plot_b(res: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.6, 4.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    curves = [(key, label, colour) for key, _, label, colour in KERNELS] + [("sampling", "Monte-Carlo (6.3)",
                                                                             "tab:orange")]
    for key, label, colour in curves:
        b, e, se = np.array(res[key]["budgets"]), np.array(res[key]["mse"]), np.array(res[key]["se"])
        ax.plot(b, e, "o-", color=colour, label=label, ms=4)
        ax.fill_between(b, np.maximum(e - se, e * 0.05), e + se, color=colour, alpha=0.2)
    ax.axhline(res["pair_index_variance"], color="grey", ls=":", lw=1, label="variance of the true pair indices")
    ax.axvline(res["exact_evaluations"], color="black", ls="--", lw=1, label="exact enumeration (2^15)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("function evaluations")
    ax.set_ylabel("MSE of the 105 pair indices")
    title = f"Shapley-Taylor estimators, random 15-input tanh networks ({res['networks']} nets x {res['seeds']} seeds)"
    ratios = [(res[key]["ratio_median_within_range"], sizes) for key, sizes, *_ in KERNELS]
    parts = [f"{r:.1f}x ({sizes})" for r, sizes in ratios if r]
    if parts:
        title += "\nMonte-Carlo evaluations / kernel evaluations at equal MSE (median): " + ", ".join(parts)
    ax.set_title(title, fontsize=8.5)
    ax.legend(fontsize=7.5, loc="upper right")
    ax.grid(True, which="both", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")


# ------------------------------------------------------------------------------------------------ part (c)
def shared_pairs(rows: list[dict[str, Any]], limit: int, seed: int = 0) -> list[tuple[str, dict, str, dict]]:
    """(query id, query box, neighbour id, neighbour box): every ordered pair of different scenes holding the same
    object id; a seeded sample of ``limit`` of them."""
    occ: dict[str, list[tuple[str, dict]]] = {}
    for r in rows:
        for b in r["boxes"]:
            occ.setdefault(b["stamp"], []).append((r["id"], b))
    pairs = []
    for _, lst in sorted(occ.items()):
        for qi, qb in lst:
            for ni, nb in lst:
                if qi != ni:
                    pairs.append((qi, qb, ni, nb))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(pairs), size=min(limit, len(pairs)), replace=False)
    return [pairs[i] for i in sorted(pick)]


def pointing(heat: np.ndarray) -> tuple[int, int]:
    """(y, x) of the maximum; among ties (flat superpixels) the tied pixel nearest the centroid of the tied set."""
    peak = heat.max()
    tied = np.argwhere(heat >= peak - 1e-9 * max(1.0, abs(float(peak))))
    if len(tied) == 1:
        return int(tied[0, 0]), int(tied[0, 1])
    c = tied.mean(0)
    y, x = tied[np.argmin(((tied - c) ** 2).sum(1))]
    return int(y), int(x)


def censored_embedding(model, x: torch.Tensor, masks: np.ndarray) -> torch.Tensor:
    """Embeddings of ``x`` (3, S, S) kept on each mask (N, S, S), the rest at the dataset mean (0 normalised)."""
    m = torch.from_numpy(np.asarray(masks, dtype=np.float32)).unsqueeze(1)
    with torch.inference_mode():
        xb = (m * x.unsqueeze(0)).contiguous(memory_format=torch.channels_last)
        return model.embed(xb).float()


def part_c(args, model, work: Path) -> dict[str, Any]:
    rows = read_rows(scenes(300, 320, work))
    by_id = {r["id"]: r for r in rows}
    pairs = shared_pairs(rows, args.pairs)
    inputs, _ = prepare(model, [by_id[i] for i in sorted({p[0] for p in pairs} | {p[2] for p in pairs})])
    size = model.input_size
    from PIL import Image

    def to_input(box, scene_id):
        w, h = Image.open(by_id[scene_id]["file"]).size
        s, dx, dy = model.preprocessing.box_transform(w, h)
        return (box["x0"] * s + dx, box["y0"] * s + dy, box["x1"] * s + dx, box["y1"] * s + dy)

    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p[0], []).append(i)
    rng = np.random.default_rng(0)
    per_pair: dict[str, list[dict[str, float]]] = {}
    seconds: dict[str, float] = {}
    loads: dict[str, list[float]] = {}
    limits = {"jointsbsm": args.perturbation_pairs, "shapleytaylor": args.perturbation_pairs}
    methods = [m for m in METHODS_C if m[0] in args.methods_c]
    for label, method, params in methods:
        done, t_method, recs = 0, 0.0, []
        limit = limits.get(method, args.closed_pairs or len(pairs))
        if method not in limits and args.closed_pairs and args.closed_pairs < len(pairs):
            label = f"{label} (first {args.closed_pairs} pairs)"  # the perturbation methods' subset
        for qid, idx in groups.items():
            if done >= limit:
                break
            idx = idx[: limit - done]
            ctx = PairContext(model, inputs[qid], [inputs[pairs[i][2]] for i in idx])
            t0 = time.perf_counter()
            out = REGISTRY[method].fn(ctx, "neighbour", **params)
            t_method += time.perf_counter() - t0
            exp = SimpleNamespace(joint=out.joint, query_cells=out.query_cells, neighbour_cells=out.neighbour_cells)
            qx = inputs[qid]
            for k, i in enumerate(idx):
                _, qb, nid, nb = pairs[i]
                qbox, nbox = to_input(qb, qid), to_input(nb, nid)
                target = jv.box_mask(nbox, size) > 0.5
                frac = float(target.mean())
                keep_q = jv.box_mask(qbox, size)

                def score(heat):
                    y, x = pointing(heat)
                    pred = heat >= np.quantile(heat, 1.0 - frac)
                    return bool(target[y, x]), float((pred & target).sum() / max(1, (pred | target).sum())), pred

                hit, iou, pred = score(jv.project_region(exp, qbox, k=k).map)
                rnd = SimpleNamespace(joint=rng.normal(size=out.joint[k : k + 1].shape), query_cells=out.query_cells,
                                      neighbour_cells=jv.cells_for(out.neighbour_cells, k))
                rhit, riou, rpred = score(jv.project_region(rnd, qbox).map)
                ex = censored_embedding(model, qx, keep_q[None])
                ey = censored_embedding(model, inputs[nid], np.stack([pred, rpred, target]).astype(np.float32))
                s = model.similarity(ex, ey)[0].tolist()
                recs.append({"hit": hit, "iou": iou, "faith": s[0], "random_hit": rhit, "random_iou": riou,
                             "random_faith": s[1], "oracle_faith": s[2], "box_fraction": frac,
                             "similarity": float(ctx.similarities()[k])})
            done += len(idx)
            print(f"(c) {label:14s} {done:4d}/{min(limit, len(pairs))} pairs  {t_method:8.1f} s", flush=True)
        per_pair[label] = recs
        seconds[label] = t_method
        loads[label] = load_avg()
        save("c_partial", {"pairs": len(pairs), "summary": summarise(per_pair, seconds, loads)})
    return {"machine": machine(), "pairs": len(pairs), "scenes": 300, "summary": summarise(per_pair, seconds, loads),
            "load_average_end": load_avg()}


def summarise(per_pair: dict[str, list[dict[str, float]]], seconds: dict[str, float],
              loads: dict[str, list[float]]) -> dict[str, Any]:
    summary = {}
    for label, recs in per_pair.items():
        a = {k: np.array([r[k] for r in recs], dtype=float) for k in recs[0]}
        summary[label] = {"pairs": len(recs), "hit": a["hit"].mean(), "iou": a["iou"].mean(),
                          "faith": a["faith"].mean(), "random_hit": a["random_hit"].mean(),
                          "random_iou": a["random_iou"].mean(), "random_faith": a["random_faith"].mean(),
                          "oracle_faith": a["oracle_faith"].mean(), "box_fraction": a["box_fraction"].mean(),
                          "similarity": a["similarity"].mean(), "seconds_per_pair": seconds[label] / len(recs),
                          "hit_se": a["hit"].std() / math.sqrt(len(recs)),
                          "iou_se": a["iou"].std() / math.sqrt(len(recs)), "load_average": loads.get(label)}
    return summary


# ------------------------------------------------------------------------------------------------ the docs
def fmt_ms(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 10 else f"{s:.1f} s"


def render(a: dict | None, b: dict | None, c: dict | None) -> str:
    lines: list[str] = []
    mach = next((r["machine"] for r in (a, c) if r), None) or machine()
    lines.append(f"Machine: {mach['cpu']}, {mach['cores']} cores (`lscpu` model name; a 2-core CPU), torch "
                 f"{mach['torch']}, {mach['torch_threads']} threads, no GPU. Load averages are given with each part: "
                 "above the core count, other jobs shared the machine and times are pessimistic; pass counts are "
                 "exact.\n")
    if a:
        lines.append("### (a) Cost per explanation (default model, CPU)\n")
        lines.append(f"Default model (EfficientNet-Lite0, 224 px, cosine), demo scenes, query = scene 0, neighbours = "
                     f"its 8 nearest scenes. Times are for the method once the unperturbed embeddings exist (the "
                     f"batched unperturbed pass cost {a['unperturbed_forward_s_per_image'] * 1000:.0f} ms per image "
                     f"in this run and is not included). Load average at the end: "
                     f"{a.get('load_average_end')}.\n")
        lines.append("Times: median (min) over the repeats for the closed-form/autograd methods "
                     f"({a['methods'][0]['one']['repeats']} repeats), one run for the perturbation methods.\n")
        lines.append("| method | 1 pair: time | forward | backward | 1 x 8: time | forward | backward | "
                     "per pair (1 x 8) |")
        lines.append("|---|---|---|---|---|---|---|---|")

        def cell(t: dict, div: int = 1) -> str:
            if t["repeats"] > 1:
                return f"{fmt_ms(t['median_s'] / div)} ({fmt_ms(t['min_s'] / div)})"
            return fmt_ms(t["median_s"] / div)

        for r in a["methods"]:
            o, e = r["one"], r["eight"]
            lines.append(f"| {r['label']} | {cell(o)} | {o['forward']} | {o['backward']} | {cell(e)} | "
                         f"{e['forward']} | {e['backward']} | {cell(e, 8)} |")
        jcs = [r for r in a["methods"] if r["method"] == "jointcam"]
        best = min(max(r["one"]["min_s"], r["eight"]["min_s"] / 8) for r in jcs)
        typical = min(max(r["one"]["median_s"], r["eight"]["median_s"] / 8) for r in jcs)
        jc = jcs[0]
        lines.append(f"\nTarget jointcam < 20 ms per pair after the embeddings exist: "
                     f"**{'PASS' if best < 0.020 else 'FAIL'}** on the best-of-{jc['one']['repeats']} time "
                     f"({best * 1000:.2f} ms per pair, worst of the two settings, best thread setting); the median "
                     f"was {typical * 1000:.1f} ms per pair "
                     f"({'within' if typical < 0.020 else 'over'} the target).\n")
    if b:
        lines.append("### (b) Shapley-Taylor estimator convergence (Hamilton et al. Fig. 5 setup, methods.md 7.6)\n")
        lines.append(f"{b['networks']} random 15-input tanh networks (3 hidden layers of 64, weights N(0, 1/fan_in)) x "
                     f"{b['seeds']} seeds; game v(S) = f(x masked to S, 0 elsewhere) for a random x; exact indices by "
                     f"enumeration ({b['exact_evaluations']:,} evaluations); MSE over the {b['pairs']} pair indices, "
                     f"mean over networks and seeds (mean variance of the true pair indices: "
                     f"{b['pair_index_variance']:.3g}). Kernel estimator with the default stratified sizes and with "
                     f"6.4's literal i.i.d. sizes; Monte-Carlo = 6.3 (4 evaluations per sample per pair).\n")
        lines.append(f"![STI estimator convergence]({Path(b['plot']).relative_to('docs')})\n")
        lines.append("| evaluations | " + " | ".join(f"{x:,}" for x in b["kernel"]["budgets"]) + " |")
        lines.append("|---" * (len(b["kernel"]["budgets"]) + 1) + "|")
        for key, _, label, _ in KERNELS:
            lines.append(f"| {label} MSE | " + " | ".join(f"{x:.3g}" for x in b[key]["mse"]) + " |")
        lines.append("")
        lines.append("| evaluations | " + " | ".join(f"{x:,}" for x in b["sampling"]["budgets"]) + " |")
        lines.append("|---" * (len(b["sampling"]["budgets"]) + 1) + "|")
        lines.append("| Monte-Carlo (6.3) MSE | " + " | ".join(f"{x:.3g}" for x in b["sampling"]["mse"]) + " |")
        lines.append("")
        lines.append("Evaluations the Monte-Carlo estimator needs to reach the kernel estimator's MSE (log-log "
                     "interpolation of the mean curves; * = extrapolated beyond the measured Monte-Carlo range):\n")
        lines.append("| kernel evaluations | " + " | ".join(f"{sizes}: kernel MSE | MC evaluations | ratio"
                                                          for _, sizes, _, _ in KERNELS) + " |")
        lines.append("|---" * (1 + 3 * len(KERNELS)) + "|")
        lo, hi = min(b["sampling"]["mse"]), max(b["sampling"]["mse"])
        for i, budget in enumerate(b["kernel"]["budgets"]):
            cells = []
            for key, *_ in KERNELS:
                r = b[key]["ratios"][i]
                star = "" if lo <= r["mse"] <= hi else "*"
                cells.append(f"{r['mse']:.3g} | {r['mc_budget_at_equal_mse']:,.0f}{star} | {r['ratio']:.1f}x{star}")
            lines.append(f"| {budget:,} | " + " | ".join(cells) + " |")
        meds = [(b[key]["ratio_median_within_range"], lab) for key, _, lab, _ in KERNELS]
        lines.append("\nMedian ratio within the measured range: " + "; ".join(
            f"**{m:.1f}x** for the {lab}" for m, lab in meds if m) + ". The project page claims about 10x; "
            "methods.md 6.4's smaller check (n = 12) gave 7-8x.\n")
    if c:
        lines.append("### (c) Joint localisation on demo scene pairs sharing an object (methods.md 7.7)\n")
        s = c["summary"]
        any_rec = next(iter(s.values()))
        lines.append(f"{c['pairs']} ordered pairs of the 300 generated scenes (320 px, seed 0, procedural objects) "
                     f"that hold the same object; mean box area fraction {any_rec['box_fraction']:.3f} (the chance "
                     f"pointing rate). Hit = arg-max of the projected query box inside the matching box; IoU of the "
                     f"top-p map with that box; faithfulness = cosine of (query censored to its box, neighbour "
                     f"censored to the top-p of the projection), mean fill; random = Gaussian J on the same cells; "
                     f"time per pair = the method alone, embeddings cached, pairs sharing a query explained "
                     f"together (load average when each row finished: "
                     f"{', '.join(str(r.get('load_average', ['?'])[0]) for r in s.values())}).\n")
        lines.append("| method | pairs | hit | IoU | faithfulness s | random: hit | IoU | s | oracle box s | "
                     "time per pair |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        names = [m[0] for m in METHODS_C]

        def order(kv):
            base = kv[0].split(" (")[0]
            return (" (" in kv[0], names.index(base) if base in names else 99)

        for label, r in sorted(s.items(), key=order):
            lines.append(f"| {label} | {r['pairs']} | {r['hit']:.3f} ± {r['hit_se']:.3f} | {r['iou']:.3f} ± "
                         f"{r['iou_se']:.3f} | {r['faith']:.3f} | {r['random_hit']:.3f} | {r['random_iou']:.3f} | "
                         f"{r['random_faith']:.3f} | {r['oracle_faith']:.3f} | {fmt_ms(r['seconds_per_pair'])} |")
        lines.append("\n(± one standard error; the random columns are computed on each method's own cells and "
                     "pairs.)\n")
        ratios = {k: r["hit"] / max(r["random_hit"], 1e-9) for k, r in s.items()}
        best = max(s, key=lambda k: s[k]["hit"])
        lines.append(f"Every method lands the projected query object in the matching neighbour box far more often than a "
                     f"random projection ({min(ratios.values()):.1f}-{max(ratios.values()):.1f}x its hit rate, and "
                     f"{s[best]['hit'] / any_rec['box_fraction']:.1f}x the chance rate for the best, {best}). "
                     f"With the query censored to its object and the neighbour to the projected region the similarity is "
                     f"{min(r['faith'] for r in s.values()):.2f}-{max(r['faith'] for r in s.values()):.2f}, against "
                     f"{max(r['random_faith'] for r in s.values()):.2f} at most for a random projection and "
                     f"{any_rec['oracle_faith']:.2f} for the true box.\n")
    return "\n".join(lines)


def write_docs(text: str, path: Path) -> None:
    body = f"{SECTION}\n\nGenerated by `benchmarks/bench_joint.py` ({time.strftime('%Y-%m-%d')}).\n\n{text}\n"
    if path.is_file():
        old = path.read_text(encoding="utf-8")
        start = old.find(SECTION)
        if start >= 0:  # replace our section only: up to the next level-2 heading
            nxt = old.find("\n## ", start + len(SECTION))
            new = old[:start] + body + ("\n" + old[nxt + 1 :] if nxt >= 0 else "")
        else:
            new = old.rstrip("\n") + "\n\n" + body
    else:
        new = "# Benchmarks\n\n" + body
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="a,b,c", help="comma-separated parts to run (a, b, c); '' = none")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 networks x 1 seed, 12 pairs")
    ap.add_argument("--repeats", type=int, default=20, help="repeats of the cheap methods in (a)")
    ap.add_argument("--nets", type=int, default=10, help="random networks in (b)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per network in (b)")
    ap.add_argument("--pairs", type=int, default=200, help="scene pairs in (c)")
    ap.add_argument("--perturbation-pairs", type=int, default=200, help="pairs for jointsbsm / shapleytaylor in (c)")
    ap.add_argument("--closed-pairs", type=int, default=0,
                    help="run jointcam / jointhessian of (c) on the first N pairs only, as a row of its own")
    ap.add_argument("--methods-c", default=",".join(m[0] for m in METHODS_C), help="methods of (c)")
    ap.add_argument("--work", default=None, help="folder for generated scenes (default: a temporary folder)")
    ap.add_argument("--write-docs", action="store_true", help="write the section into docs/benchmarks.md")
    args = ap.parse_args(argv)
    args.methods_c = set(args.methods_c.split(","))
    if args.quick:
        args.nets, args.seeds, args.pairs, args.perturbation_pairs, args.repeats = 3, 1, 12, 4, 5
    parts = [p for p in args.parts.split(",") if p]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_joint_"))
    work.mkdir(parents=True, exist_ok=True)
    model = load_model("default", device="cpu") if {"a", "c"} & set(parts) else None
    for part in parts:
        t0 = time.perf_counter()
        res = {"a": lambda: part_a(args, model, work), "b": lambda: part_b(args),
               "c": lambda: part_c(args, model, work)}[part]()
        res["wall_s"] = time.perf_counter() - t0
        res["quick"] = bool(args.quick)
        previous = load(part)
        if part == "c" and previous and previous.get("pairs") == res["pairs"] and \
                previous.get("quick") == res["quick"]:
            # methods run at different times are merged: a new run of a method replaces its row
            res["summary"] = {**previous["summary"], **res["summary"]}
            res["order"] = [m[0] for m in METHODS_C if m[0] in res["summary"]]
        save(part, res)
        print(f"part ({part}) done in {res['wall_s']:.0f} s", flush=True)
    text = render(load("a"), load("b"), load("c"))
    print(text)
    if args.write_docs:
        write_docs(text, ROOT / "docs" / "benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
