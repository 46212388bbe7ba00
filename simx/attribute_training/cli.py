"""``simx attributes``: train SANE's attribute predictor for an index and compare it with and without L_heat.

    simx attributes train INDEX [--saliency METHOD] [--epochs N] [--no-heat] [--root DIR]
    simx attributes eval INDEX [--retrain] [--root DIR]

``train`` writes ``INDEX/attributes/predictor/`` (with saliency supervision, methods.md 4.3) or
``INDEX/attributes/predictor-no-heat/`` (``--no-heat``), reusing the cached features in ``INDEX/attributes/``.
``eval`` prints the attribute mAP of methods.md 7.3 on the held-out test split for both, training whichever is
missing. :data:`COMMAND` is the entry :mod:`simx.cli` registers.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .train import TrainConfig


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", metavar="INDEX", help="index name (or folder)")
    p.add_argument("--root", metavar="DIR", default=None,
                   help="folder holding the indexes (default: $SIMX_INDEXES, else ./indexes)")
    p.add_argument("--saliency", metavar="METHOD", default="rise",
                   help="first-order method whose maps supervise the attribute maps (default: rise)")
    p.add_argument("--n-samples", type=int, default=None, metavar="N",
                   help="n_samples for the saliency method when it takes one (default: 128 for rise)")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs, metavar="N",
                   help=f"training epochs; the best by validation mAP is kept (default: {TrainConfig.epochs})")
    p.add_argument("--heat-weight", type=float, default=TrainConfig.heat_weight, metavar="W",
                   help=f"weight of L_heat in the loss (default: {TrainConfig.heat_weight})")
    p.add_argument("--heat-images", type=int, default=TrainConfig.heat_images, metavar="N",
                   help=f"training images that get saliency maps (default: {TrainConfig.heat_images})")
    p.add_argument("--heat-refs", type=int, default=TrainConfig.heat_refs, metavar="R",
                   help=f"nearest neighbours each of them is explained against (default: {TrainConfig.heat_refs})")
    p.add_argument("--min-count", type=int, default=TrainConfig.min_count, metavar="N",
                   help=f"keep attributes carried by at least N images (default: {TrainConfig.min_count})")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the initialisation and the saliency")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``train`` and ``eval`` sub-commands."""
    sub = parser.add_subparsers(dest="attributes_command", metavar="{train,eval}")
    sub.required = True
    tr = sub.add_parser("train", help="train the attribute predictor of an index (methods.md 4.3)",
                        description="Train SANE's attribute head on the index model's cached features.")
    _add_common(tr)
    tr.add_argument("--no-heat", action="store_true", help="train without saliency supervision (L_heat)")
    ev = sub.add_parser("eval", help="attribute mAP with and without saliency supervision (methods.md 7.3)",
                        description="Attribute mAP on the test split with and without L_heat; trains what is missing.")
    _add_common(ev)
    ev.add_argument("--retrain", action="store_true", help="retrain both predictors even if they exist")


def _config(args: argparse.Namespace, heat: bool = True) -> TrainConfig:
    params: dict[str, Any] = {}
    if args.n_samples is not None:
        params["n_samples"] = int(args.n_samples)
    return TrainConfig(epochs=args.epochs, heat=heat, heat_weight=args.heat_weight, saliency=args.saliency,
                       saliency_params=params, heat_images=args.heat_images, heat_refs=args.heat_refs,
                       min_count=args.min_count, seed=args.seed)


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and v != v) else f"{v:.3f}" if isinstance(v, float) else str(v)


def run(args: argparse.Namespace) -> int:
    """Run ``simx attributes train|eval``; :class:`~simx.errors.SimxError` propagates to the CLI's handler."""
    from ..explain import METHODS
    from ..index import open_index
    from .train import compare_heat, train_for_index

    if args.saliency not in METHODS or args.saliency == "sane":
        from ..errors import UsageError

        raise UsageError(f"unknown saliency method {args.saliency!r}; choose one of "
                        f"{', '.join(m for m in METHODS if m != 'sane')}")
    index = open_index(args.index, args.root)
    progress = not args.quiet
    if args.attributes_command == "train":
        res = train_for_index(index, _config(args, heat=not args.no_heat), progress=progress)
        m = res.metrics
        if args.json:
            json.dump({"path": str(res.path), **{k: v for k, v in m.items() if k != "history"}}, sys.stdout,
                      indent=2, default=str)
            sys.stdout.write("\n")
            return 0
        sal = res.predictor.training.get("saliency_info") or {}
        print(f"attribute predictor for {index.name!r}: {len(res.predictor.vocabulary)} attributes, "
              f"{m['n_train']} train / {m['n_val']} val / {m['n_test']} test images -> {res.path}")
        if sal:
            print(f"saliency supervision: {sal['maps']} {sal['method']} maps on {sal['images']} images "
                  f"({json.dumps(sal['params'])})")
        else:
            print("saliency supervision: none")
        print(f"test mAP {_fmt(m.get('test_map'))} (chance {_fmt(m.get('test_chance_map'))}), "
              f"val mAP {_fmt(m.get('val_map'))}, best epoch {m['best_epoch']}, {m['seconds']:.1f} s")
        return 0
    res = compare_heat(index, _config(args), retrain=args.retrain, progress=progress)
    if args.json:
        json.dump({k: {kk: vv for kk, vv in v.items() if kk not in ("history", "test_ap")} for k, v in res.items()},
                  sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    rows = []
    for key, label in (("heat", "with L_heat (saliency supervision)"), ("no_heat", "without L_heat")):
        m = res[key]
        rows.append([label, _fmt(m.get("test_map")), _fmt(m.get("val_map")), _fmt(m.get("test_chance_map")),
                     m.get("n_test"), (m.get("saliency") or {}).get("method", "-")])
    header = ["predictor", "test mAP", "val mAP", "chance", "n_test", "saliency"]
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print(f"attribute recognition on {index.name!r} (methods.md 7.3)")
    for r in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    d = res["heat"].get("test_map", float("nan")) - res["no_heat"].get("test_map", float("nan"))
    print(f"difference (with - without): {_fmt(d)}")
    return 0


COMMAND = ("attributes", add_arguments, run, "train SANE attribute predictors and compare them (methods.md 4, 7.3)")
