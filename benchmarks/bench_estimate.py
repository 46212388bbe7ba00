"""How close is the cost a slow method announces before it runs to what the run then costs? (issue 12 item 8)

    .venv/bin/python benchmarks/bench_estimate.py            # rise, sbsm, lime, kernelshap, shapleytaylor
    .venv/bin/python benchmarks/bench_estimate.py --quick    # fewer samples (smoke run)

For each method, the cost the dashboard announces, :func:`simx.explain.scored.estimate_scored` with the pair
(passes of the map and of its faithfulness estimate, the superpixel methods' images segmented first, and seconds at
the model's measured speed on this machine), is taken right before :func:`simx.explain.scored.explain_scored` runs
the same call on two demo scenes (a query and one neighbour, both sides) with the default model
(EfficientNet-Lite0, 224 px); "bound" is the figure without the pair (the superpixels asked for). The first estimate
of the process is the calibrated one (8 bare forwards); later ones use the time per pass of the runs before them.
The feature cache is cleared before each run, so every run pays its unperturbed passes as the estimate counts them.

Prints a Markdown table for ``docs/benchmarks.md`` with the load average before and after (the machine is shared).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simx.data import load_image, read_manifest  # noqa: E402
from simx.demo import generate_scenes  # noqa: E402
from simx.explain import FEATURE_CACHE  # noqa: E402
from simx.explain.engine import PairContext  # noqa: E402
from simx.explain.progress import Progress  # noqa: E402
from simx.explain.scored import estimate_scored, explain_scored  # noqa: E402
from simx.models import load_model  # noqa: E402


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer samples per method")
    args = p.parse_args(argv)
    scale = 0.5 if args.quick else 1.0
    runs = [("rise", {"n_samples": int(300 * scale)}), ("sbsm", {}), ("lime", {"n_samples": int(200 * scale)}),
            ("kernelshap", {"n_samples": int(200 * scale), "segmentation": "slic:n=30"}),
            ("kernelshap", {"n_samples": 300, "segmentation": "slic:n=8"}),
            ("shapleytaylor", {"n_samples": int(128 * scale)}), ("rise", {"n_samples": int(300 * scale)})]
    with tempfile.TemporaryDirectory(prefix="simx-bench-estimate-") as tmp:
        manifest = generate_scenes(Path(tmp) / "scenes", n=2, seed=0, stamps_dir=None, progress=False)
        items = read_manifest(manifest)
        query, neighbour = load_image(items[0].path), load_image(items[1].path)
        model = load_model("default")
        before = load_average()
        rows = []
        for method, params in runs:
            FEATURE_CACHE.clear()
            bound = estimate_scored(model, method, k=1, **params)
            est = estimate_scored(model, method, pair=PairContext(model, query, [neighbour]), **params)
            progress = Progress()
            t0 = time.perf_counter()
            exp = explain_scored(model, query, [neighbour], method=method, progress=progress, **params)
            seconds = time.perf_counter() - t0
            scoring = exp.scores["faithfulness_estimate"]["cost"]
            actual = exp.cost.forward + exp.cost.backward + scoring["forward"] + scoring["backward"]
            rows.append((method, params, bound, est, actual, progress.total, seconds))
        after = load_average()
    print("## Cost estimates before a run (issue 12 item 8)\n")
    print(f"Default model (EfficientNet-Lite0, 224 px), one query and one neighbour, both sides, with the "
          f"faithfulness estimate of the maps (what the dashboard runs), CPU; load average {before} before and "
          f"{after} after (2 cores, shared). `announced` = `estimate_scored` with the pair right before the run, "
          "`bound` the same without the pair; the first row is timed from the 8-pass calibration, later rows from "
          "the runs before them.\n")
    print("| method | parameters | bound | announced passes (scoring) | actual passes | progress total | "
          "estimated time | actual time | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method, params, bound, est, actual, total, seconds in rows:
        shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"
        print(f"| {method} | {shown} | {'at most ' if bound.upper_bound else ''}{bound.passes} | {est.passes} "
              f"({est.faithfulness}) | {actual} | {total} | {est.seconds:.1f} s | {seconds:.1f} s | "
              f"{seconds / est.seconds:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
