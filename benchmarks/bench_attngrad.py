"""Where attngrad's time goes (issue 13): its parts timed one by one against the floor of the gradient methods.

Not a test. Run from the repository root (random weights are fine: the cost does not depend on them)::

    .venv/bin/python benchmarks/bench_attngrad.py --model timm:vit_base_patch16_224 --threads 2

One query and 8 neighbours (random images, seeded), maps on both sides. Timed, best of ``--repeats`` each:

* ``floor``: one batched forward of the 9 images in inference mode (what gradcam is measured against);
* ``forward_graph``: the forwards attngrad makes, query (1) and neighbours (8) with the autograd graph and every
  block's attention probabilities recorded (explicit softmax);
* ``forward_graph_fused``: the same forwards with the graph but the fused attention kernel and nothing recorded
  (what recording the attention maps costs on top of a plain graph forward);
* ``backward_neighbours``: the neighbour side's one backward pass (8 images, one cotangent);
* ``backward_query_batched``: the query side's batched backward (1 image, 8 cotangents, ``is_grads_batched``);
* ``backward_query_loop``: the same 8 gradients as 8 backward calls (the alternative the batched call replaces);
* ``rollout``: A and dS/dA from the records, and the gradient-weighted rollout read out, for the 16 maps;
* ``explain``: the whole ``explain(..., method="attngrad", side="both")`` call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simx.explain import FEATURE_CACHE, explain  # noqa: E402
from simx.explain.engine import PairContext  # noqa: E402
from simx.explain.methods import attngrad  # noqa: E402
from simx.explain.methods.gradcam import row_similarity  # noqa: E402
from simx.models import load_model  # noqa: E402
from simx.models.attention_record import graph_targets, probabilities_and_gradients  # noqa: E402
from simx.models.tokens import unfused  # noqa: E402


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def parts(model, images: torch.Tensor, repeats: int) -> dict[str, float]:
    q, nbs = images[0], list(images[1:])
    out: dict[str, float] = {}

    def floor():
        with torch.inference_mode():
            model.embed(images.contiguous(memory_format=torch.channels_last))

    floor()
    out["floor"] = best_of(floor, repeats)

    def recorded_ctx() -> PairContext:
        ctx = PairContext(model, q, nbs)
        ctx.recorded("query")
        return ctx

    out["forward_graph"] = best_of(recorded_ctx, repeats)

    def fused():
        for x in (images[:1], images[1:]):
            with torch.enable_grad(), unfused(model.net, False):
                model.run_from_input(x.clone().requires_grad_(True))

    out["forward_graph_fused"] = best_of(fused, repeats)

    def neighbour_backward():
        ctx = recorded_ctx()
        emb, records, _ = ctx.recorded("neighbours")
        other = ctx.query_embedding.expand(ctx.k, -1)
        with torch.enable_grad():
            total = row_similarity(model, emb.float(), other).sum()
        t = time.perf_counter()
        torch.autograd.grad(total, graph_targets(records))
        return time.perf_counter() - t

    out["backward_neighbours"] = min(neighbour_backward() for _ in range(repeats))

    def query_backward(batched: bool):
        ctx = recorded_ctx()
        emb, records, _ = ctx.recorded("query")
        targets = graph_targets(records)
        with torch.enable_grad():
            sims = model.similarity(emb.float(), ctx.neighbour_embeddings.float())[0]
        t = time.perf_counter()
        if batched:
            grads = torch.autograd.grad(sims, targets, grad_outputs=torch.eye(ctx.k), is_grads_batched=True)
        else:
            grads = [torch.autograd.grad(sims[k], targets, retain_graph=True) for k in range(ctx.k)]
        return time.perf_counter() - t, ctx, records, grads

    out["backward_query_batched"] = min(query_backward(True)[0] for _ in range(repeats))
    out["backward_query_loop"] = min(query_backward(False)[0] for _ in range(repeats))

    _, ctx, records, grads = query_backward(True)
    grads = [g[:, 0] for g in grads]
    grid = ctx.recorded("query")[2]

    def rollout():  # A and dS/dA from the records, then the rollout read out, for both sides' 8 maps
        for _side in range(2):
            attn, dattn = probabilities_and_gradients(records, grads)
            attngrad._maps(ctx, [a.expand(ctx.k, *a.shape[1:]) for a in attn], dattn, grid)

    out["rollout"] = best_of(rollout, repeats)

    def whole():
        FEATURE_CACHE.clear()
        explain(model, q, nbs, method="attngrad", side="both")

    out["explain"] = best_of(whole, repeats)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="timm:vit_base_patch16_224", help="a token model spec with global attention")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs per part")
    ap.add_argument("--json-out", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu", cache=False)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(9, 3, *model.input_size, generator=g)
    load_start = list(os.getloadavg())
    res = parts(model, images, args.repeats)
    floor = res["floor"]
    report = {"model": args.model, "layer": model.layer, "threads": torch.get_num_threads(),
              "load_average_start": load_start, "load_average_end": list(os.getloadavg()),
              "seconds": res, "x_floor": {k: v / floor for k, v in res.items()}}
    for k, v in res.items():
        print(f"{k:<24} {v:8.2f} s   x{v / floor:5.2f} floor")
    print(f"load average {load_start} -> {report['load_average_end']}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
