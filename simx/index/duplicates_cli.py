"""``simx duplicates INDEX [--threshold T] [--across OTHER]``: near-duplicate groups, or leaks between indexes."""

from __future__ import annotations

import argparse
import json
import sys

HELP = ("near-duplicate groups in an index, or items leaked into another index (--across), by FAISS range search")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .duplicates import DEFAULT_THRESHOLD

    p.add_argument("name", metavar="INDEX", help="index name (or path to an index folder)")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help=f"similarity at or above which two items are near-duplicates, in the index's score units "
                        f"(default {DEFAULT_THRESHOLD} for cosine indexes: resized and re-encoded copies score above "
                        "it, distinct demo images below)")
    p.add_argument("--across", metavar="OTHER", default=None,
                   help="report the items of INDEX with a near-duplicate in OTHER (e.g. test gallery vs train)")
    p.add_argument("--nprobe", type=int, default=16, metavar="N",
                   help="IVF lists probed per item for galleries above 50k (exact search below)")
    p.add_argument("--show", type=int, default=20, metavar="N", help="groups (or leaks) to print")
    p.add_argument("--csv", metavar="FILE", default=None, help="also write every pair (a, b, score) to FILE")
    p.add_argument("--json", action="store_true", help="print pairs, groups, leaks and counts as JSON")
    p.add_argument("--root", metavar="DIR", default=None,
                   help="folder holding the indexes (default: $SIMX_INDEXES, else ./indexes)")


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .duplicates import find_duplicates, save
    from .search import open_index

    index = open_index(args.name, root=args.root)
    other = open_index(args.across, root=args.root) if args.across else None
    quiet = getattr(args, "quiet", False) or not sys.stderr.isatty()
    with tqdm(total=len(index), desc="range search", unit="item", file=sys.stderr, disable=quiet,
              dynamic_ncols=True) as bar:
        result = find_duplicates(index, threshold=args.threshold, other=other, nprobe=args.nprobe,
                                 progress=bar.update)
    save(result, index, other)
    if args.csv:
        result.pairs.to_csv(args.csv, index=False)
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    s = result.stats
    if other is None:
        print(f"{index.name}: {s['pairs']} near-duplicate pairs (score >= {result.threshold:g}) in {s['groups']} "
              f"groups covering {s['in_groups']} of {s['n_items']} items ({s['method']}, {s['seconds']:.1f} s)")
        for g in result.groups[: args.show]:
            print(f"  {g['size']} items, scores {g['min_score']:.4f}-{g['max_score']:.4f}: " + ", ".join(g["ids"]))
    else:
        print(f"{index.name} -> {other.name}: {s['leaked']} of {s['n_items']} items have a near-duplicate among the "
              f"{s['n_other']} items of {other.name} (score >= {result.threshold:g}; {s['pairs']} pairs; "
              f"{s['method']}, {s['seconds']:.1f} s)")
        for a, b, score in result.pairs.head(args.show).itertuples(index=False):
            print(f"  {a}  ~  {b}  ({score:.4f})")
    hidden = (len(result.groups) if other is None else len(result.pairs)) - args.show
    if hidden > 0:
        print(f"  ... and {hidden} more (--show, --csv or --json for all)")
    if args.csv:
        print(f"pairs written to {args.csv}")
    return 0


COMMAND = ("duplicates", add_arguments, run, HELP)
