"""``simx explain INDEX QUERY NEIGHBOUR --method M``: explain one match from the command line.

QUERY and NEIGHBOUR are gallery ids of the index or image files; the model is the one that built the index
(recorded in its ``meta.json``). Prints the similarity, the cost and (by default) the insertion/deletion AUC of
each map; ``--out`` writes the pair figure as a PNG, ``--json`` prints a JSON summary instead of text.
Wired into ``simx`` through :data:`COMMAND` (see :data:`simx.cli.COMMANDS`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import SimxError, UsageError

EPILOG = """examples:
  simx explain stamps animals/cat.png animals/lion.png --method gradcam --out pair.png
  simx explain scenes scene_0001 scene_0042 --method rise --n-samples 1000 --side query --json
  simx explain scenes scene_0001 scene_0042 --method jointcam --out lines.png
  simx explain scenes scene_0001 scene_0042 --method jointcam --point 120,96 --out point.png
  simx explain scenes scene_0001 scene_0042 --method shapleytaylor --box 40,40,120,140 --out box.png
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``simx explain``."""
    p.epilog = EPILOG
    p.add_argument("index", metavar="INDEX", help="index name (its model explains the pair)")
    p.add_argument("query", metavar="QUERY", help="gallery id in the index, or an image file")
    p.add_argument("neighbour", metavar="NEIGHBOUR", help="gallery id in the index, or an image file")
    p.add_argument("--method", "-m", required=True, metavar="M",
                   help="explanation method (gradcam, searchcam, simcam, sfam, sbsm, rise, kernelshap, lime, ...)")
    p.add_argument("--side", choices=("both", "query", "neighbour"), default="both",
                   help="which image(s) to explain: the query w.r.t. the neighbour, the neighbour w.r.t. the query, "
                        "or both")
    p.add_argument("--out", metavar="FILE.png", default=None, help="write the pair figure (PNG) here")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of masks, samples and superpixels")
    p.add_argument("--n-samples", type=int, default=None, metavar="N",
                   help="number of masks / coalitions / samples for sampling methods (default: the method's)")
    p.add_argument("--faithfulness", action=argparse.BooleanOptionalAction, default=True,
                   help="score each map by insertion/deletion AUC (methods.md 7.1; 202 forwards per map)")
    p.add_argument("--background", default="black", metavar="FILL",
                   help="fill of removed pixels for the faithfulness scores: black, white, grey, mean, blur or a "
                        "grey level in [0, 1]")
    p.add_argument("--point", metavar="X,Y", default=None,
                   help="joint methods: project this query point (model-input pixels) onto the neighbour")
    p.add_argument("--box", metavar="X0,Y0,X1,Y1", default=None,
                   help="joint methods: project this query box (model-input pixels) onto the neighbour")
    p.add_argument("--top-k", type=int, default=12, metavar="N",
                   help="joint methods: number of correspondence lines drawn without --point/--box")
    p.add_argument("--root", metavar="DIR", default=None,
                   help="folder holding the indexes (default: $SIMX_INDEXES, else ./indexes)")


def resolve_image(index: Any, value: str, what: str) -> tuple[str | None, str]:
    """``(id, path)`` of QUERY/NEIGHBOUR: a gallery id of ``index`` (its path), else an existing image file
    (id None), else a :class:`SimxError` saying neither was found."""
    try:
        item = index.item(value)
    except SimxError:
        item = None
    except KeyError:
        item = None
    if item is not None:
        return item.id, str(item.path)
    if os.path.isfile(value):
        return None, str(Path(value))
    raise SimxError(f"{what} {value!r} is neither an id in index {getattr(index, 'name', '?')!r} nor an image file")


def _background(value: str) -> str | float:
    try:
        return float(value)
    except ValueError:
        return value


def _method_params(method: str, args: argparse.Namespace) -> dict[str, Any]:
    from .base import REGISTRY

    params: dict[str, Any] = {}
    if args.n_samples is not None:
        sig = inspect.signature(REGISTRY[method].fn)
        accepts = "n_samples" in sig.parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
        if not accepts:
            raise UsageError(f"method {method!r} takes no --n-samples (it does not sample)")
        if args.n_samples < 1:
            raise UsageError("--n-samples must be at least 1")
        params["n_samples"] = int(args.n_samples)
    return params


def _numbers(value: str | None, count: int, option: str) -> tuple[float, ...] | None:
    """Parse ``--point X,Y`` / ``--box X0,Y0,X1,Y1``."""
    if value is None:
        return None
    try:
        nums = tuple(float(v) for v in value.split(","))
    except ValueError:
        nums = ()
    if len(nums) != count:
        raise UsageError(f"{option} takes {count} comma-separated numbers, got {value!r}")
    return nums


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def run(args: argparse.Namespace) -> int:
    """Explain QUERY vs NEIGHBOUR with the index's model; raises :class:`SimxError` for user errors."""
    from ..data import load_image
    from ..index import open_index
    from . import METHODS, explain
    from .base import REGISTRY
    from .figures import explanation_to_json, pair_figure
    from .views import draw_joint

    if args.method not in METHODS:
        raise UsageError(f"unknown method {args.method!r}; choose one of {', '.join(sorted(METHODS))}")
    params = _method_params(args.method, args)
    point = _numbers(args.point, 2, "--point")
    box = _numbers(args.box, 4, "--box")
    is_joint = REGISTRY[args.method].kind == "joint"
    if (point or box) and not is_joint:
        raise UsageError(f"--point/--box apply to joint methods ({', '.join(n for n, s in REGISTRY.items() if s.kind == 'joint')})")
    if point and box:
        raise UsageError("give --point or --box, not both")
    index = open_index(args.index, root=args.root)
    q_id, q_path = resolve_image(index, args.query, "QUERY")
    n_id, n_path = resolve_image(index, args.neighbour, "NEIGHBOUR")
    model = index.model
    exp = explain(model, load_image(q_path), [load_image(n_path)], method=args.method, side=args.side,
                  seed=args.seed, **params)
    fkw = {} if args.background == "black" else {"background": _background(args.background)}
    if args.faithfulness:
        exp.faithfulness(**fkw)
    if args.out:
        out = Path(args.out)
        if out.parent and not out.parent.exists():
            raise SimxError(f"--out: folder {out.parent} does not exist")
        if is_joint:
            draw_joint(exp, 0, point=point, box=box, top_k=args.top_k, path=out)
        else:
            pair_figure(exp, 0, path=out)
    if args.json:
        summary = explanation_to_json(exp, k=0)
        summary.update({
            "index": index.name,
            "model": {"spec": model.spec, "layer": model.layer, "metric": model.metric},
            "query": {"id": q_id, "path": q_path},
            "neighbour": {"id": n_id, "path": n_path},
            "figure": str(args.out) if args.out else None,
        })
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"method      {exp.method}  ({METHODS[exp.method]})")
    print(f"model       {model.spec}  layer {model.layer}, metric {model.metric}")
    print(f"query       {q_id or q_path}")
    print(f"neighbour   {n_id or n_path}")
    print(f"similarity  {float(exp.similarities[0]):.4f}")
    print(f"cost        {exp.cost.forward} forward, {exp.cost.backward} backward, {exp.cost.seconds:.2f} s")
    shown = {k: v for k, v in exp.params.items() if k not in ("batch_size",)}
    print("params      " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    if args.faithfulness:
        fs = exp.faithfulness(**fkw)
        print(f"faithfulness (methods.md 7.1, background {fs['background']}, {fs['steps']} steps; insertion: higher "
              "is better, deletion: lower is better)")
        for side in ("query", "neighbour"):
            if side in fs:
                print(f"  {side:<9} insertion AUC {_fmt(fs[side]['insertion'][0])}   "
                      f"deletion AUC {_fmt(fs[side]['deletion'][0])}")
    if args.out:
        print(f"figure      {args.out}")
    return 0


COMMAND = ("explain", add_arguments, run, "explain why a neighbour matches a query (saliency maps on both images)")


def main(argv: list[str] | None = None) -> int:
    """``python -m simx.explain.cli ...``: the same as ``simx explain ...`` (same exit statuses)."""
    from ..cli import main as simx_main

    return simx_main(["explain", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
