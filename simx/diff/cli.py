"""``simx diff INDEX_A INDEX_B``: the command-line face of :func:`simx.diff.compare_indexes`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def _table(rows: list[list[Any]], header: list[str]) -> str:
    """A plain left-aligned text table."""
    cells = [header] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _write_atomically(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", metavar="INDEX_A", help="the index before (e.g. the original model)")
    p.add_argument("b", metavar="INDEX_B", help="the index after (e.g. built with the fine-tuned model)")
    p.add_argument("-k", type=int, default=10, help="cut-off of P@k, AP@k and of the neighbour lists")
    p.add_argument("--level", choices=("full", "top"), default="full",
                   help="label granularity of the metrics: the full label, or only its first path component")
    p.add_argument("--show", type=int, default=10, metavar="N", help="worst queries and moved pairs to print")
    p.add_argument("--json", action="store_true", help="print the whole comparison as JSON")
    p.add_argument("--html", metavar="FILE", default=None,
                   help="also write the stakeholder summary (table, plot, worst queries, pairs) as one HTML file")
    p.add_argument("--pair", nargs=2, metavar=("QUERY", "NEIGHBOUR"), default=None,
                   help="with --html: add this pair's explanation under both models (same method)")
    p.add_argument("--method", default="gradcam", help="explanation method of --pair")
    p.add_argument("--root", metavar="DIR", default=None,
                   help="folder holding the indexes (default: $SIMX_INDEXES, else ./indexes)")


def run(args: argparse.Namespace) -> int:
    from ..index import open_index
    from .core import compare_indexes
    from .html import diff_report_html, summary_rows

    d = compare_indexes(open_index(args.a, root=args.root), open_index(args.b, root=args.root), k=args.k,
                        level=args.level)
    if args.html:
        pair = None
        if args.pair:
            from .core import explain_both, pair_pictures

            exp_a, exp_b = explain_both(open_index(args.a, root=args.root), open_index(args.b, root=args.root),
                                        args.pair[0], args.pair[1], method=args.method)
            pair = {"query": args.pair[0], "neighbour": args.pair[1], "method": args.method,
                    "pictures": pair_pictures(exp_a, exp_b)}
        _write_atomically(args.html, diff_report_html(d, pair=pair))
    if args.json:
        json.dump(d.to_dict(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    print(f"{d.a} ({d.models['a']})  ->  {d.b} ({d.models['b']}), {d.overall['n_items']} items, k={d.k}")
    for note in d.notes:
        print(f"  note: {note}")
    print(_table([list(r[:4]) for r in summary_rows(d)], ["measure", "A", "B", "change"]))
    if args.show > 0:
        worst = d.worst(args.show)
        if len(worst):
            print(f"\nworst {len(worst)} queries:")
            if d.has_metrics:
                print(_table([[r.id, f"{r.ap_a:.3f}", f"{r.ap_b:.3f}", f"{r.d_ap:+.3f}", f"{r.d_p1:+.0f}",
                               ", ".join(r.entered[:3]), ", ".join(r.left[:3])] for r in worst.itertuples(index=False)],
                             ["id", "AP A", "AP B", "change", "P@1", "entered", "left"]))
            else:
                print(_table([[r.id, f"{r.overlap:.2f}", ", ".join(r.entered[:3]), ", ".join(r.left[:3])]
                              for r in worst.itertuples(index=False)], ["id", "overlap", "entered", "left"]))
        moved = d.pairs[d.pairs["rank_a"] != d.pairs["rank_b"]].head(args.show)
        if len(moved):
            print("\nlabelled pairs that moved (regressions first):")
            print(_table([[r.query, r.neighbour, r.verdict, r.rank_a, r.rank_b, r.status]
                          for r in moved.itertuples(index=False)],
                         ["query", "neighbour", "verdict", "rank A", "rank B", "status"]))
    if args.html:
        print(f"\nHTML summary written to {args.html}")
    return 0


COMMAND = ("diff", add_arguments, run,
           "compare two indexes of one gallery (e.g. before/after simx train): per-query metric changes, "
           "neighbours that entered/left, labelled pairs fixed or regressed")
