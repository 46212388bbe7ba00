"""The ``simx`` command line.

Every command is one entry of :data:`COMMANDS`: ``(name, add_arguments, run, help)``. ``name`` may have several
words (``"index build"``): the first words are a command group (its help in :data:`GROUPS`), the last is the
command. ``add_arguments(parser)`` declares the options, ``run(args)`` does the work and returns an exit code
(None means 0). Another module adds a command by appending to :data:`COMMANDS` before :func:`build_parser` runs;
the CLI itself only calls the same public functions the dashboard uses.

Exit status: 0 on success; 1 for a runtime error simx reports on purpose (:class:`~simx.errors.SimxError`: a
missing index, bad data), printed as ``error: <message>`` on stderr with no traceback; 2 for a usage error (argparse's
own, or :class:`~simx.errors.UsageError`); 130 when interrupted. Anything else is a bug and keeps its traceback.
When the reader of the output goes away (``simx eval NAME | head``) the command stops quietly with 141, the status a
shell reports for a process ended by SIGPIPE.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import sys
import textwrap
from typing import Any, Callable

from . import __version__
from .errors import SimxError, UsageError

#: ``(name, add_arguments(parser), run(args) -> exit code, one-line help)`` for every command, in help order.
Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], "int | None"], str]
COMMANDS: list[Command] = []
#: One-line help of command groups (the first word of multi-word command names).
GROUPS: dict[str, str] = {"index": "build, update, list and inspect indexes",
                          "labels": "export and import the verdicts people gave in the dashboard"}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the line breaks of descriptions and epilogs; show a default unless the help already explains it or
    there is none to show (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal, and never with --quiet."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def _add_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", metavar="DIR", default=None,
                   help="folder holding the indexes (default: $SIMX_INDEXES, else ./indexes)")


def _print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _table(rows: list[list[Any]], header: list[str]) -> str:
    """A plain left-aligned text table."""
    cells = [header] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


# ------------------------------------------------------------------------------------------ index build


def add_index_build(p: argparse.ArgumentParser) -> None:
    from .index.embed import DEFAULT_BATCH_SIZE

    p.add_argument("source", metavar="SOURCE", help="gallery: a folder of images (labels = sub-folders) or a "
                   ".csv/.parquet manifest with a 'path' column")
    p.add_argument("--name", required=True, help="index name (a folder under the index root)")
    p.add_argument("--model", metavar="SPEC", default=None,
                   help="model spec: default, default-lite1, default-lite2, timm:ARCH[@WEIGHTS], "
                        "torchvision:ARCH[@WEIGHTS], torchscript:FILE, python:MODULE:FACTORY "
                        "(default: 'default'; with --update: the index's model)")
    p.add_argument("--layer", metavar="L", default=None,
                   help="explained layer (default: the model's last spatial block)")
    p.add_argument("--metric", choices=("cosine", "ip", "l2"), default=None,
                   help="similarity metric (default: cosine; with --update: the index's)")
    p.add_argument("--factory", metavar="FAISS_FACTORY", default=None,
                   help="faiss.index_factory string, e.g. Flat, HNSW32, IVF1024,PQ64, or 'auto' (chosen by the "
                        "number of vectors: Flat up to 20k, else IVF-HNSW with PQ fast-scan codes, an in-memory 8-bit "
                        "refine stage up to 1.3 GB of it (1M 1280-d vectors), and exact re-scoring; see "
                        "docs/benchmarks.md) (default: Flat; with --update: the index's)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N", help="images per forward pass")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="image decoding processes (default: one per CPU core, at most 4; 0 = decode in the main process)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="where the model runs (default: cuda if "
                   "available)")
    p.add_argument("--fit", choices=("pad", "crop", "squash"), default=None,
                   help="how images become squares: pad on white, centre-crop or squash (default: the model's)")
    p.add_argument("--size", type=int, default=None, metavar="PX",
                   help="input size in pixels (default: the model's; transformers such as DINOv2 resample their "
                        "position embeddings to it)")
    p.add_argument("--update", action="store_true",
                   help="re-embed only new or changed files, drop removed ones, reuse the other stored vectors "
                        "(refused if the model, layer, metric or preprocessing differ)")
    p.add_argument("--json", action="store_true",
                   help="print the new index's meta.json (counts, model, FAISS, skipped files) instead of a summary")
    eng = p.add_argument_group("embedding engine", textwrap.fill(
        "local (default) embeds in this process with decoding workers: the simplest, and the fastest for "
        "galleries embedded in about a minute, where Ray's start (~10-20 s) costs more than it saves. "
        "ray embeds on Ray Data (an actor pool, one model per actor): on one 2-core machine it embedded 2,000 "
        "images 14% faster than local, its start included (docs/benchmarks.md), and past one machine it "
        "spreads over every node of a cluster (--ray-address) or its GPUs; it writes the "
        "embeddings as shards beside the index as they complete, so a killed or failed job resumes where it "
        "stopped. Both engines give the same index.", 78))
    eng.add_argument("--engine", choices=("local", "ray"), default="local", help="where images are embedded")
    eng.add_argument("--ray-address", metavar="ADDR", default=None,
                     help="Ray cluster to run on (ray://HOST:10001, or auto for the cluster this machine is part of; "
                          "default: start a local Ray with every core)")
    eng.add_argument("--num-gpus-per-worker", type=float, default=0.0, metavar="G",
                     help="GPUs per model actor (0: CPU actors, one per core)")
    eng.add_argument("--actors", type=int, default=None, metavar="N",
                     help="model actors (default: one per CPU core, or one per --num-gpus-per-worker GPUs)")
    eng.add_argument("--shard-size", type=int, default=None, metavar="N",
                     help="images per embedding shard (default: 1024)")
    eng.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                     help="reuse the shards an earlier killed or failed Ray run completed (--no-resume: embed all)")
    _add_root(p)


def cmd_index_build(args: argparse.Namespace) -> int:
    from .index import build_index

    result = build_index(args.source, args.name, model=args.model, layer=args.layer, metric=args.metric,
                         factory=args.factory, batch_size=args.batch_size, workers=args.workers, device=args.device,
                         fit=args.fit, update=args.update, root=args.root, progress=_progress(args), size=args.size,
                         engine=args.engine, ray_address=args.ray_address,
                         num_gpus_per_worker=args.num_gpus_per_worker, actors=args.actors, resume=args.resume,
                         shard_size=args.shard_size)
    if getattr(args, "json", False):
        _print_json({"name": result.name, "path": str(result.path), **result.meta})
    else:
        print(result.summary())
    return 0


# ------------------------------------------------------------------------------------------ index list / info


def add_index_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    _add_root(p)


def cmd_index_list(args: argparse.Namespace) -> int:
    from .index import index_root, list_indexes

    entries = list_indexes(args.root)
    if args.json:
        _print_json(entries)
        return 0
    if not entries:
        print(f"no indexes in {index_root(args.root)}")
        return 0
    rows = []
    for e in entries:
        if e["ok"]:
            rows.append([e["name"], f"{e['embedded']}/{e['images']}", e["skipped"], e["dim"], e["metric"],
                         e["factory"], e["model"], e["built_at"]])
        else:
            rows.append([e["name"], "-", "-", "-", "-", "-", f"BROKEN: {e['error']}", "-"])
    print(_table(rows, ["name", "indexed", "skipped", "dim", "metric", "factory", "model", "built"]))
    return 0


def add_index_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="index name (or path to an index folder)")
    p.add_argument("--json", action="store_true", help="print the whole meta.json")
    _add_root(p)


def cmd_index_info(args: argparse.Namespace) -> int:
    from .index import open_index

    index = open_index(args.name, root=args.root)
    meta = index.meta
    if args.json:
        _print_json(meta)
        return 0
    m, f, c = meta["model"], meta["faiss"], meta["counts"]
    labels = {lab for it in index.items for lab in it.labels}
    extra = sorted({key for it in index.items for key in it.metadata})  # a manifest's other columns
    lines = [
        f"index      {index.name}  ({index.path})",
        f"source     {meta.get('source')}",
        f"model      {m['spec']}  layer {m['layer']}  metric {m['metric']}  dim {m['dim']}",
        f"input      {m['preprocessing'].get('size')} px, fit {m['preprocessing'].get('fit')}",
        f"faiss      {f['factory']}" + (f" (built as {f['factory_used']})" if f["factory_used"] != f["factory"] else "")
        + (f"  search {f['search_params']}" if f.get("search_params") else ""),
        f"images     {c['embedded']} indexed of {c['images']}, {c['skipped']} skipped, {len(labels)} labels",
        "columns    id, path, labels, attributes, boxes" + (f"; other columns: {', '.join(extra)}" if extra else ""),
        f"built      {meta.get('built_at')} in {meta.get('elapsed_s')} s  (format {meta['format_version']}, "
        + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()) + ")",
    ]
    if meta.get("update"):
        u = meta["update"]
        lines.append(f"update     {u['reused']} reused, {u['embedded']} embedded, {u['removed']} removed")
    lines += [f"note       {n}" for n in f.get("notes", [])]
    if meta.get("skipped"):
        lines.append("skipped:")
        lines += [f"  {s['path']}: {s['reason']}" for s in meta["skipped"]]
    print("\n".join(lines))
    return 0


# ------------------------------------------------------------------------------------------ search


def add_search(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="index name")
    p.add_argument("query", metavar="IMAGE_OR_ID", nargs="?", default=None,
                   help="a gallery id of the index (the item itself is excluded) or an image file")
    p.add_argument("--text", metavar="TEXT", default=None,
                   help="search with a text instead of an image (CLIP-style models: open_clip:...)")
    p.add_argument("-k", type=int, default=10, help="number of neighbours")
    p.add_argument("--json", action="store_true", help="print JSON: the query and each neighbour's rank, id, path, "
                   "label and score")
    _add_root(p)


def cmd_search(args: argparse.Namespace) -> int:
    from .index import open_index

    if (args.query is None) == (args.text is None):
        raise UsageError("give either IMAGE_OR_ID or --text TEXT")
    index = open_index(args.name, root=args.root)
    if args.text is not None:
        kind, hits, args.query = "text", index.search_text(args.text, args.k), args.text
    elif args.query in index:
        kind, hits = "id", index.search_id(args.query, args.k)
    elif os.path.exists(args.query):
        kind, hits = "image", index.search_image(args.query, args.k)
    else:
        raise SimxError(f"{args.query!r} is neither an id in index {index.name!r} nor an image file")
    if args.json:
        _print_json({"index": index.name, "query": args.query, "query_type": kind, "k": args.k,
                     "metric": index.metric, "neighbours": [h.to_dict() for h in hits]})
        return 0
    print(f"{index.name}: {len(hits)} neighbours of {kind} {args.query} ({index.metric}, higher = more similar)")
    print(_table([[h.rank, f"{h.score:.4f}", h.label, h.id, h.path] for h in hits],
                 ["rank", "score", "label", "id", "path"]))
    return 0


# ------------------------------------------------------------------------------------------ eval


def add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="index name")
    p.add_argument("-k", type=int, default=10, help="cut-off of precision@k, recall@k and mAP@k")
    p.add_argument("--level", choices=("full", "top"), default="full",
                   help="label granularity: the full label, or only its first path component")
    p.add_argument("--primary-label", action="store_true",
                   help="relevant = same primary label (the single-label definition) instead of sharing any of an "
                        "item's labels (a manifest's 'labels' column)")
    p.add_argument("--json", action="store_true", help="print overall, per-label and per-query results as JSON")
    p.add_argument("--csv", metavar="FILE", default=None, help="also write the per-query table to FILE")
    p.add_argument("--show", type=int, default=10, metavar="N", help="worst queries to print in the text report")
    p.add_argument("--queries", type=int, default=50_000, metavar="N",
                   help="evaluate every query up to N, else a seeded sample of N (each metric then comes with a "
                        "95%% confidence interval)")
    p.add_argument("--seed", type=int, default=0, help="seed of the query sample")
    _add_root(p)


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .index import evaluate, open_index

    index = open_index(args.name, root=args.root)
    with tqdm(total=None, desc=f"evaluating {index.name}", unit="query", file=sys.stderr,
              disable=not _progress(args), dynamic_ncols=True) as bar:
        result = evaluate(index, k=args.k, level=args.level, primary_only=args.primary_label,
                          queries=args.queries, seed=args.seed, progress=bar.update)
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(list(result.per_query.columns))
            for row in result.per_query.itertuples(index=False):
                w.writerow([";".join(map(str, v)) if isinstance(v, list) else v for v in row])
    if args.json:
        _print_json(result.to_dict())
        return 0
    o = result.overall
    print(f"{args.name}: leave-one-out retrieval, k={o['k']}, labels at level {o['level']!r}, "
          f"relevant = {o['relevance']}")
    print(f"  queries {o['n_queries']} of {o['n_items']} items ({o['n_labels']} labels; {o['n_skipped']} sharing "
          f"no label with another item skipped, {o['n_unlabelled']} unlabelled)")
    print(f"  precision@1 {o['precision@1']:.3f}   precision@{o['k']} {o['precision@k']:.3f}   "
          f"recall@{o['k']} {o['recall@k']:.3f}   mAP@{o['k']} {o['mAP@k']:.3f}")
    ci = o.get("ci95", {})
    if ci:
        what = (f"a seeded sample (seed {o['seed']}) of {o['n_queries']} of the {o['n_eligible']} queries"
                if o.get("sampled") else f"all {o['n_queries']} queries")
        print(f"  95% confidence intervals over {what}:")
        print("   " + "   ".join(f"{name.replace('@k', '@' + str(o['k']))} [{lo:.3f}, {hi:.3f}]"
                                 for name, (lo, hi) in ci.items()))
    fmt = lambda v: "-" if v != v else f"{v:.3f}"  # noqa: E731 - NaN for labels without queries
    print("\nper label (worst mAP first):")
    print(_table([[r.label, r.n_items, r.n_queries, fmt(r.p1), fmt(r.pk), fmt(r.rk), fmt(r.map)]
                  for r in result.per_label.itertuples(index=False)],
                 ["label", "items", "queries", "P@1", f"P@{o['k']}", f"R@{o['k']}", f"mAP@{o['k']}"]))
    if args.show > 0:
        print(f"\nworst {min(args.show, len(result.per_query))} queries:")
        print(_table([[r.id, "|".join(r.labels), f"{r.ap:.3f}", f"{r.p1:.0f}", ", ".join(r.neighbours[:5])]
                      for r in result.per_query.head(args.show).itertuples(index=False)],
                     ["id", "labels", "AP", "P@1", "first neighbours"]))
    if args.csv:
        print(f"\nper-query table written to {args.csv}")
    return 0


# ------------------------------------------------------------------------------------------ dashboard


def add_dashboard(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", metavar="NAME", default=None, help="index to open first (default: the first one)")
    p.add_argument("--port", type=int, default=None, help="port to serve on (default: Streamlit's, 8501)")
    p.add_argument("--address", default=None, help="address to listen on (default: localhost only)")
    _add_root(p)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .launch import run_dashboard

    return run_dashboard(index=args.index, root=args.root, port=args.port, address=args.address)


# ------------------------------------------------------------------------------------------ labels export / import


def add_labels_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="INDEX", help="index whose labels to export")
    p.add_argument("--format", choices=("csv", "jsonl", "triplets"), default="csv",
                   help="csv / jsonl: one row per label with every column; triplets: (query, positive, negative) "
                        "hard-negative rows for retraining (CSV, or JSON lines when --out ends in .jsonl)")
    p.add_argument("--out", metavar="FILE", default=None, help="write to FILE (atomically) instead of stdout")
    p.add_argument("--verdict", choices=("good", "bad"), default=None, help="only this verdict")
    p.add_argument("--user", action="append", default=None, metavar="NAME", help="only this labeller (repeatable)")
    p.add_argument("-k", type=int, default=10,
                   help="triplets: how many retrieved neighbours of a query may serve as same-label positives")
    p.add_argument("--to-fiftyone", metavar="DATASET", default=None,
                   help="instead of a file, write the verdicts into a FiftyOne dataset as sample tags "
                        "(simx:good / simx:bad on the neighbour; the query, labeller and reason in simx_verdicts)")
    _add_label_store(p)


def _add_label_store(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels-url", metavar="URL", default=None,
                   help="label database (default: $SIMX_LABELS_URL, else labels.sqlite beside the index)")
    _add_root(p)


def _index_and_store(args: argparse.Namespace):
    """The index named by ``args.name`` and its label store (``--labels-url`` or the default beside the index)."""
    from .index import open_index
    from .labels import open_labels

    index = open_index(args.name, root=args.root)
    return index, open_labels(index.name, root=args.root, url=args.labels_url)


def cmd_labels_export(args: argparse.Namespace) -> int:
    from .labels_io import export_labels

    index, store = _index_and_store(args)
    if args.to_fiftyone:
        from .fiftyone_io import export_verdicts

        n = export_verdicts(store, index, args.to_fiftyone, user=args.user)
        print(f"{n} verdicts of index {index.name!r} written to FiftyOne dataset {args.to_fiftyone!r} as tags",
              file=sys.stderr)
        return 0
    filters = {key: value for key, value in (("verdict", args.verdict), ("user", args.user)) if value}
    text = export_labels(store, index, args.format, target=args.out, k=args.k, **filters)
    if args.out is None:
        sys.stdout.write(text)
    else:
        rows = max(0, text.count("\n") - (0 if args.format == "jsonl" or args.out.endswith(".jsonl") else 1))
        print(f"{rows} {'triplets' if args.format == 'triplets' else 'labels'} written to {args.out}",
              file=sys.stderr)
    return 0


def add_labels_import(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="INDEX", help="index the labels belong to")
    p.add_argument("file", metavar="FILE", help="a CSV or JSONL file written by `simx labels export` or the "
                   "Labels page")
    p.add_argument("--keep-index", action="store_true",
                   help="keep each row's own index column (default: the rows become labels of INDEX)")
    _add_label_store(p)


def cmd_labels_import(args: argparse.Namespace) -> int:
    from .labels_io import read_label_file

    index, store = _index_and_store(args)
    result = store.import_labels(read_label_file(args.file), index=None if args.keep_index else index.name)
    print(f"{args.file}: {result['added']} added, {result['replaced']} replaced by newer verdicts, "
          f"{result['kept_newer']} kept (the store's verdict was newer)")
    return 0


COMMANDS.extend([
    ("dashboard", add_dashboard, cmd_dashboard, "serve the dashboard in the browser (Streamlit) on the indexes"),
    ("index build", add_index_build, cmd_index_build,
     "embed a gallery into a new index (or --update an existing one)"),
    ("index list", add_index_list, cmd_index_list, "list the indexes under the index root"),
    ("index info", add_index_info, cmd_index_info, "show how an index was built: model, FAISS, counts, skipped files"),
    ("search", add_search, cmd_search, "nearest neighbours of a gallery id or an image file"),
    ("eval", add_eval, cmd_eval, "leave-one-out retrieval metrics (P@1, P@k, R@k, mAP@k) of a labelled index"),
    ("labels export", add_labels_export, cmd_labels_export,
     "write an index's labels as CSV, JSON lines or hard-negative triplets (or into FiftyOne as tags)"),
    ("labels import", add_labels_import, cmd_labels_import,
     "merge a CSV / JSONL label export into an index's label store (newer verdicts win)"),
])



#: Commands other packages define: (name, module holding its ``COMMAND`` tuple, one-line help). A module (and with
#: it torch) is imported only when its command runs or shows its own --help, so ``simx --help``, ``simx index list``
#: and the other commands that only read metadata start without importing torch (tests/explain/test_contrast_cli.py), and each help line matches its module's.
FEATURE_COMMANDS: list[tuple[str, str, str]] = [
    ("demo", "simx.demo.build",
     "build the demo galleries (Tux Paint stamps, generated scenes) and their indexes; idempotent"),
    ("explain", "simx.explain.cli",
     "explain why a neighbour matches a query, or why a wrong one beat the right one (--versus)"),
    ("attributes", "simx.attribute_training.cli", "train SANE attribute predictors and compare them (methods.md 4, 7.3)"),
    ("train", "simx.training.cli",
     "fine-tune an index's model on its labelled matches (bad = hard negatives, good = positives)"),
    ("diff", "simx.diff.cli",
     "compare two indexes of one gallery (e.g. before/after simx train): per-query metric changes, "
     "neighbours that entered/left, labelled pairs fixed or regressed"),
    ("explain-batch", "simx.explain.batch_cli",
     "precompute explanation maps and faithfulness of the worst queries' top neighbours, stored beside the index"),
    ("duplicates", "simx.index.duplicates_cli",
     "near-duplicate groups in an index, or items leaked into another index (--across), by FAISS range search"),
]


def _feature_command(name: str, module: str, help_text: str) -> Command:
    """A :data:`COMMANDS` entry whose options and run function come from ``module`` when first needed."""

    def add_arguments(p: argparse.ArgumentParser) -> None:
        importlib.import_module(module).COMMAND[1](p)

    def run(args: argparse.Namespace) -> int | None:
        return importlib.import_module(module).COMMAND[2](args)

    return (name, add_arguments, run, help_text)


def _register_feature_commands() -> None:
    """The commands other packages define (:data:`FEATURE_COMMANDS`), added after the index commands."""
    for name, module, help_text in FEATURE_COMMANDS:
        if all(c[0] != name for c in COMMANDS):
            COMMANDS.append(_feature_command(name, module, help_text))


def _command_words(argv: list[str] | None) -> list[str] | None:
    """The words of ``argv`` that are not options (the command's name comes first); None when argv is unknown:
    every command's options are then declared."""
    if argv is None:
        return None
    return [tok for tok in argv if not tok.startswith("-")]


# ------------------------------------------------------------------------------------------ parser and main


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The argparse parser of every registered command (see :data:`COMMANDS`). Given the ``argv`` it will parse,
    only the invoked command declares its options (importing what they need); the others show their help line."""
    _register_feature_commands()
    parser = argparse.ArgumentParser(
        prog="simx",
        description="simx: a visual-search debugger. Build indexes of image galleries, search them, measure "
                    "retrieval quality and explain why neighbours are neighbours.",
        epilog="examples:\n"
               "  simx index build data/stamps --name stamps\n"
               "  simx search stamps animals/mammals/cat.png -k 5\n"
               "  simx eval stamps --level top\n"
               "run `simx COMMAND --help` for the options of a command",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"simx {__version__}")
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, Any] = {}
    wanted = _command_words(argv)
    for name, add_arguments, run, help_text in COMMANDS:
        words = name.split()
        target = top
        for depth in range(len(words) - 1):
            key = " ".join(words[: depth + 1])
            if key not in groups:
                gp = target.add_parser(words[depth], help=GROUPS.get(key, ""), description=GROUPS.get(key),
                                       formatter_class=_Formatter)
                groups[key] = gp.add_subparsers(dest=f"command_{depth + 1}", metavar="COMMAND", required=True)
            target = groups[key]
        p = target.add_parser(words[-1], help=help_text, description=help_text, formatter_class=_Formatter)
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        if wanted is None or wanted[: len(words)] == words:
            add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def _stdout_gone() -> int:
    """The reader closed the pipe: point stdout at /dev/null so the interpreter's final flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (captured in tests): nothing to silence
        pass
    return 141


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``simx`` console script; returns the exit status (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _stdout_gone()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SimxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
