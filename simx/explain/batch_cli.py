"""``simx explain-batch INDEX --worst 500 --top 8 --method sbsm``: precompute explanations beside the index."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "precompute explanation maps and faithfulness of the worst queries' top neighbours, stored beside the index"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="INDEX", help="index name (or path to an index folder)")
    p.add_argument("--worst", type=int, default=500, metavar="N", help="queries to explain, worst AP@k first")
    p.add_argument("--top", type=int, default=8, metavar="K", help="first neighbours explained per query")
    p.add_argument("--method", default="sbsm", help="explanation method (see `simx explain --help`)")
    p.add_argument("--side", choices=("both", "query", "neighbour"), default="both", help="which images get maps")
    p.add_argument("-k", type=int, default=10, help="cut-off of the AP@k that ranks the queries")
    p.add_argument("--queries", type=int, default=50_000, metavar="N",
                   help="queries evaluated to find the worst (a seeded sample above N)")
    p.add_argument("--seed", type=int, default=0, help="seed of the method and of the query sample")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a method parameter (JSON value), repeatable, e.g. --param n_masks=500")
    p.add_argument("--no-faithfulness", action="store_true", help="skip the insertion/deletion scores")
    eng = p.add_argument_group("engine", "local (default) explains the queries one after another in this process; "
                               "ray spreads them over a Ray actor pool (one model per actor), a local Ray or the "
                               "cluster at --ray-address, whose workers must see the index and the images at the "
                               "same paths. Both store the same result. On one machine Ray pays only when a run "
                               "is long enough to hide its start-up; past one machine it scales with the nodes.")
    eng.add_argument("--engine", choices=("local", "ray"), default="local", help="where the maps are computed")
    eng.add_argument("--ray-address", metavar="ADDR", default=None,
                     help="Ray cluster to run on (ray://HOST:10001, or auto); default: start a local Ray")
    eng.add_argument("--actors", type=int, default=None, metavar="N",
                     help="Ray actors (default: one per CPU, or one per --num-gpus-per-worker GPUs)")
    eng.add_argument("--num-gpus-per-worker", type=float, default=0.0, metavar="G",
                     help="GPUs per Ray actor (default 0: CPU actors)")
    p.add_argument("--root", metavar="DIR", default=None,
                   help="folder holding the indexes (default: $SIMX_INDEXES, else ./indexes)")


def _params(items: list[str]) -> dict:
    from ..errors import UsageError

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--param wants NAME=VALUE, got {item!r}")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..index import open_index
    from .batch import explain_worst

    index = open_index(args.name, root=args.root)
    quiet = getattr(args, "quiet", False) or not sys.stderr.isatty()
    with tqdm(total=args.worst, desc=f"explaining ({args.method})", unit="query", file=sys.stderr, disable=quiet,
              dynamic_ncols=True) as bar:
        folder = explain_worst(index, worst=args.worst, top=args.top, method=args.method, side=args.side, k=args.k,
                               seed=args.seed, queries=args.queries, faithfulness=not args.no_faithfulness,
                               params=_params(args.param), progress=bar.update, engine=args.engine,
                               ray_address=args.ray_address, actors=args.actors,
                               num_gpus_per_worker=args.num_gpus_per_worker)
    meta = json.loads((folder / "params.json").read_text(encoding="utf-8"))
    print(f"{index.name}: {meta['method']} maps of {meta['pairs']} pairs ({meta['queries']} worst queries x up to "
          f"{meta['top']} neighbours) in {meta['seconds']:.1f} s on the {meta['engine']} engine -> {folder}")
    return 0


COMMAND = ("explain-batch", add_arguments, run, HELP)
