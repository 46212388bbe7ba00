"""``simx train INDEX --out DIR``: the command-line face of :func:`simx.training.train_index`."""

from __future__ import annotations

import argparse
import shlex
import sys

from .train import TrainConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("name", metavar="INDEX", help="index whose model is fine-tuned on its labelled matches")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for weights.safetensors, spec.txt (the model spec) and training.json")
    p.add_argument("--epochs", type=int, default=d.epochs, metavar="N", help="maximum number of epochs")
    p.add_argument("--patience", type=int, default=d.patience, metavar="N",
                   help="stop after N epochs without a better validation loss")
    p.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N", help="triplets per step")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--margin", type=float, default=d.margin, help="triplet margin, in standard deviations of each query's similarities")
    p.add_argument("--unfreeze", type=int, default=None, metavar="N",
                   help="number of last groups of the network that train (default: the last groups holding a fifth "
                        "of the embedding path's weights, e.g. EfficientNet's last stage and head)")
    p.add_argument("--val-share", type=float, default=d.val_share, metavar="F",
                   help="share of the labelled queries held out for early stopping")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the split, the order and the initialisation")
    p.add_argument("--no-same-label", dest="same_label", action="store_false",
                   help="positives only from 'good' labels (default: also the query's top neighbours that share its "
                        "class label)")
    p.add_argument("--sm", type=float, nargs="?", const=0.5, default=0.0, metavar="GAMMA", dest="sm_weight",
                   help="add Zheng et al.'s similarity-mining constraint L_sm with weight GAMMA (0.5 when given "
                        "without a value; about 3-4x slower per step)")
    p.add_argument("--sm-batch", type=int, default=None, metavar="N",
                   help="triplets per step that get L_sm (default: all; fewer bounds its cost)")
    p.add_argument("--user", action="append", default=None, metavar="USER",
                   help="only this user's labels (repeatable; default: everyone's)")
    p.add_argument("--labels-url", default=None, metavar="URL",
                   help="SQLAlchemy URL of the label store (default: $SIMX_LABELS_URL, else the index's labels.sqlite)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="where training runs (default: cuda if "
                   "available)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--build", metavar="NAME", default=None,
                   help="then embed the index's gallery with the new model into index NAME (same layer, metric, "
                        "FAISS factory and fit)")
    p.add_argument("--root", metavar="DIR", default=None,
                   help="folder holding the indexes (default: $SIMX_INDEXES, else ./indexes)")


def run(args: argparse.Namespace) -> int:
    from .train import train_index

    cfg = TrainConfig(epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, lr=args.lr,
                      margin=args.margin, unfreeze=args.unfreeze, val_share=args.val_share, seed=args.seed,
                      same_label=args.same_label, sm_weight=args.sm_weight, sm_batch=args.sm_batch, users=args.user, device=args.device)
    progress = not args.quiet and sys.stderr.isatty()
    result = train_index(args.name, args.out, cfg, root=args.root, labels_url=args.labels_url, force=args.force,
                         progress=progress, command=shlex.join(["simx", *sys.argv[1:]]) if sys.argv[1:] else None)
    print(result.summary())
    if args.build:
        from ..index import build_index, open_index

        index = open_index(args.name, root=args.root)
        m, f = index.meta["model"], index.meta["faiss"]
        built = build_index(index.meta["source"], args.build, model=result.spec, layer=m["layer"], metric=m["metric"],
                            factory=f["factory"], fit=m["preprocessing"].get("fit"), root=args.root,
                            device=args.device, progress=progress)
        print(built.summary())
        print(f"compare with: simx diff {shlex.quote(args.name)} {shlex.quote(args.build)}")
    return 0


COMMAND = ("train", add_arguments, run,
           "fine-tune an index's model on its labelled matches (bad = hard negatives, good = positives)")
