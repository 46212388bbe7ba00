"""``simx explain INDEX QUERY NEIGHBOUR... --method M[,M2...] [--versus RIGHT]``: explain matches from the command line.

QUERY and the NEIGHBOURs are gallery ids of the index or image files; the model is the one that built the index
(recorded in its ``meta.json``). Several neighbours share one explanation per method (the query's passes are
computed once for all of them); several methods (comma-separated) run one after the other. Prints the
similarity, the cost and (by default) the insertion/deletion AUC of each map; ``--out`` writes the figure(s) as
PNG, ``--json`` prints a JSON summary with the maps as lists (or, with ``--save-maps FILE.npz``, stores them
there), ``--no-faithfulness`` skips the scoring (the 202 extra forwards per map).

With ``--versus RIGHT`` (repeatable; ``auto`` proposes the best-ranked neighbour with the query's label, or the
one labelled good), each NEIGHBOUR is a *wrong* neighbour and the command answers "why did it beat the right
one?": the map of the margin s(q, wrong) - s(q, right) on the query, the pair maps on both neighbours, the
smallest regions whose removal puts the right one first (verified by forward passes), the grey check and a
one-line reading. Wired into ``simx`` through :data:`COMMAND` (see :data:`simx.cli.FEATURE_COMMANDS`).
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
  simx explain scenes scene_0001 scene_0042 scene_0007 --method gradcam,searchcam --json --save-maps maps.npz
  simx explain scenes scene_0001 scene_0042 --versus scene_0107 --method searchcam --out why.png
  simx explain scenes scene_0001 scene_0042 --versus auto --method sbsm --json
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
    p.add_argument("neighbours", metavar="NEIGHBOUR", nargs="+",
                   help="gallery id(s) in the index, or image file(s); with --versus: the wrong neighbour(s)")
    p.add_argument("--method", "-m", required=True, metavar="M[,M2...]",
                   help="explanation method(s), comma-separated (gradcam, searchcam, simcam, sfam, sbsm, rise, "
                        "kernelshap, lime, ...)")
    p.add_argument("--versus", action="append", default=None, metavar="RIGHT",
                   help="the neighbour that should have ranked first (repeat for several; 'auto': the best-ranked "
                        "item with the query's label, or the one labelled good): explain the margin "
                        "s(q, NEIGHBOUR) - s(q, RIGHT)")
    p.add_argument("--counterfactual", action=argparse.BooleanOptionalAction, default=True,
                   help="with --versus: search the smallest regions whose removal puts the right one first "
                        "(up to 128 forwards per side)")
    p.add_argument("--side", choices=("both", "query", "neighbour"), default="both",
                   help="which image(s) to explain: the query w.r.t. the neighbour, the neighbour w.r.t. the query, "
                        "or both")
    p.add_argument("--out", metavar="FILE.png", default=None,
                   help="write the figure (PNG) here; with several neighbours or methods, FILE.METHOD.K.png")
    p.add_argument("--json", action="store_true",
                   help="print a JSON summary instead of text, maps included as lists (unless --save-maps)")
    p.add_argument("--save-maps", metavar="FILE.npz", default=None,
                   help="store every map (float32) in this .npz file, keys METHOD/SIDE/K (see the JSON 'maps')")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of masks, samples and superpixels")
    p.add_argument("--n-samples", type=int, default=None, metavar="N",
                   help="number of masks / coalitions / samples for sampling methods (default: the method's)")
    p.add_argument("--segmentation", default=None, metavar="SPEC",
                   help="superpixels of lime, kernelshap and shapleytaylor as one spec, e.g. slic:n=50,compactness=20 "
                        "or quickshift:kernel_size=4,max_dist=200,ratio=0.2 (default: the method's)")
    p.add_argument("--baseline", default=None, metavar="FILL",
                   help="fill of masked pixels for perturbation methods: black, white, grey, mean, blur, "
                        "segment_mean (superpixel methods) or a grey level in [0, 1] (default: the method's)")
    p.add_argument("--faithfulness", action=argparse.BooleanOptionalAction, default=True,
                   help="score each map by insertion/deletion AUC (methods.md 7.1; 202 forwards per map; "
                        "--no-faithfulness skips it)")
    p.add_argument("--background", default=None, metavar="FILL",
                   help="fill of removed pixels for the faithfulness scores: black, white, grey, mean, blur or a "
                        "grey level in [0, 1] (default: the model's padding colour, white for fit=pad, else black)")
    p.add_argument("--per-map", action="store_true",
                   help="--out: scale each map to its own largest value (default: the maps share one scale)")
    p.add_argument("--point", metavar="X,Y", default=None,
                   help="joint methods: project this query point onto the neighbour (pixels of the query's source "
                        "image unless --coords input)")
    p.add_argument("--box", metavar="X0,Y0,X1,Y1", default=None,
                   help="joint methods: project this query box onto the neighbour (source-image pixels unless "
                        "--coords input)")
    p.add_argument("--coords", choices=("source", "input"), default="source",
                   help="--point/--box are pixels of the query's image file (source) or of the model input")
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
    for option in ("segmentation", "baseline"):
        value = getattr(args, option, None)
        if value is None:
            continue
        if option not in inspect.signature(REGISTRY[method].fn).parameters:
            raise UsageError(f"method {method!r} takes no --{option}")
        numeric = option == "baseline" and value.replace(".", "", 1).isdigit()  # a grey level such as 0.5
        params[option] = float(value) if numeric else value
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


def _methods(value: str) -> list[str]:
    """``--method a,b`` -> ["a", "b"] (each registered, no repeats) or a usage error naming the known ones."""
    from . import METHODS

    names = [m.strip() for m in value.split(",") if m.strip()]
    if not names:
        raise UsageError("--method needs at least one method name")
    for name in names:
        if name not in METHODS:
            raise UsageError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return list(dict.fromkeys(names))


def source_to_input(preprocessing: Any, size: tuple[int, int], values: tuple[float, ...]) -> tuple[float, ...]:
    """Source-image pixel coordinates (x, y, x, y, ...) of an image of ``size`` (width, height) -> model-input
    pixels, by the preprocessing's own geometry (letterbox, centre crop or squash)."""
    w, h = size
    if preprocessing.fit == "squash":
        sx, sy, dx, dy = preprocessing.size / w, preprocessing.size / h, 0.0, 0.0
    else:
        sx, dx, dy = preprocessing.box_transform(w, h)
        sy = sx
    return tuple(v * sx + dx if i % 2 == 0 else v * sy + dy for i, v in enumerate(values))


def _input_geometry(args: argparse.Namespace, model: Any, query_path: str, point, box):
    """--point/--box in model-input pixels (converted from source pixels unless --coords input), range-checked."""
    if point is None and box is None:
        return None, None
    from ..data import load_image

    size = model.input_size
    if args.coords == "source":
        with load_image(query_path) as img:
            src = img.size
        for name, nums in (("--point", point), ("--box", box)):
            if nums is not None and any(not 0 <= v <= src[i % 2] for i, v in enumerate(nums)):
                raise UsageError(f"{name} {','.join(f'{v:g}' for v in nums)} lies outside the query image "
                                 f"({src[0]} x {src[1]} px)")
        point = None if point is None else source_to_input(model.preprocessing, src, point)
        box = None if box is None else source_to_input(model.preprocessing, src, box)
    for name, nums in (("--point", point), ("--box", box)):
        if nums is not None and any(not 0 <= v <= size[1 - i % 2] for i, v in enumerate(nums)):
            raise UsageError(f"{name} lies outside the model input ({size[1]} x {size[0]} px)")
    return point, box


def _rights(index: Any, q_id: str | None, versus: list[str], root: Any, exclude: str | None) -> list[tuple]:
    """(id, path) of each --versus value; 'auto' proposes one (the label store's 'good', else the query's label)."""
    from .contrast import propose_right

    out = []
    for value in versus:
        if value != "auto":
            out.append(resolve_image(index, value, "RIGHT"))
            continue
        if q_id is None:
            raise UsageError("--versus auto needs the query to be a gallery id of the index")
        labels = _label_store(index.name, root)
        hit = propose_right(index, q_id, labels=labels, exclude=exclude)
        if hit is None:
            raise SimxError(f"no right neighbour to propose for {q_id!r}: no item with its label "
                            f"({index.item(q_id).label!r}) nor one labelled good among its first neighbours")
        out.append((hit.id, str(hit.path)))
    return out


def _label_store(index_name: str, root: Any):
    """The index's label store when one exists (nothing is created), else None."""
    from ..labels import URL_ENV, default_url, open_labels

    url = default_url(index_name, root)
    if not os.environ.get(URL_ENV) and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    return open_labels(index_name, root=root)


def _figure_path(out: str, method: str, k: int, many: bool) -> Path:
    path = Path(out)
    return path if not many else path.with_name(f"{path.stem}.{method}.{k}{path.suffix or '.png'}")


def save_maps(path: str | os.PathLike, maps: dict[str, Any]) -> None:
    """Write ``maps`` (key -> float32 array) to an .npz file atomically (a temporary file renamed into place)."""
    import numpy as np

    target = Path(path)
    if target.parent and not target.parent.exists():
        raise SimxError(f"--save-maps: folder {target.parent} does not exist")
    tmp = target.with_name(f".{target.name}.tmp.npz")
    np.savez_compressed(tmp, **{k: np.asarray(v, dtype=np.float32) for k, v in maps.items()})
    os.replace(tmp, target)


class PassBar:
    """A tqdm bar of the passes of each explanation (the engine's :class:`~simx.explain.progress.Progress`: passes
    done of the estimated total, time left), on a terminal, for slow methods only (perturbation and joint
    black-box methods, counterfactual searches); never with --quiet or when stderr is not a terminal."""

    def __init__(self, args: argparse.Namespace, slow: bool):
        self.enabled = slow and not getattr(args, "quiet", False) and sys.stderr.isatty()
        self._bar = None

    def progress(self, desc: str):
        """A fresh engine progress object drawing into a bar labelled ``desc`` (None when disabled)."""
        if not self.enabled:
            return None
        from tqdm.auto import tqdm

        from .progress import Progress

        self.close()
        self._bar = bar = tqdm(total=None, desc=desc, unit="pass", file=sys.stderr, leave=False)

        def draw(p: Progress) -> None:
            if p.total and bar.total != p.total:
                bar.total = p.total
            bar.n = min(p.done, p.total or p.done)
            bar.refresh()

        return Progress(callback=draw)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _maps_entry(maps: dict[str, Any], store: bool, key: str, value: Any) -> Any:
    """A map for the JSON: the nested list, or (with --save-maps) its key in the .npz file."""
    from .metrics import _jsonable

    if value is None:
        return None
    if store:
        maps[key] = value
        return key
    return _jsonable(value)


def run(args: argparse.Namespace) -> int:
    """Explain QUERY vs each NEIGHBOUR (or, with --versus, why each wrong NEIGHBOUR beat RIGHT) with the index's
    model; raises :class:`SimxError` for user errors."""
    from ..data import load_image
    from ..index import open_index
    from . import METHODS
    from .base import REGISTRY

    methods = _methods(args.method)
    params = {m: _method_params(m, args) for m in methods}
    point = _numbers(args.point, 2, "--point")
    box = _numbers(args.box, 4, "--box")
    joint = [n for n, s in REGISTRY.items() if s.kind == "joint"]
    if (point or box) and any(REGISTRY[m].kind != "joint" for m in methods):
        raise UsageError(f"--point/--box apply to joint methods ({', '.join(joint)})")
    if point and box:
        raise UsageError("give --point or --box, not both")
    if args.versus and any(m in joint for m in methods):
        raise UsageError(f"--versus needs first-order methods; {', '.join(m for m in methods if m in joint)} "
                         "explain pairs jointly")
    index = open_index(args.index, root=args.root)
    q_id, q_path = resolve_image(index, args.query, "QUERY")
    neighbours = [resolve_image(index, n, "NEIGHBOUR") for n in args.neighbours]
    model = index.model
    point, box = _input_geometry(args, model, q_path, point, box)
    rights = _rights(index, q_id, args.versus, args.root, neighbours[0][0]) if args.versus else []
    q_img = load_image(q_path)
    n_imgs = [load_image(path) for _, path in neighbours]
    r_imgs = [load_image(path) for _, path in rights]
    fkw = {} if args.background is None else {"background": _background(args.background)}
    slow = bool(rights and args.counterfactual) or any(REGISTRY[m].kind in ("perturbation", "joint") for m in methods)
    units = len(methods) * (len(neighbours) if rights else 1)
    bar = PassBar(args, slow)
    header = {"index": index.name, "model": {"spec": model.spec, "layer": model.layer, "metric": model.metric},
              "query": {"id": q_id, "path": q_path}}
    stored: dict[str, Any] = {}
    results = []
    try:
        for method in methods:
            if rights:
                for k, wrong in enumerate(n_imgs):
                    progress = bar.progress(f"{method} {k + 1}/{len(neighbours)}")
                    known = _stored_embeddings(index, [neighbours[k][0]] + [i for i, _ in rights])
                    results.append(_contrast_one(args, model, method, params[method], q_img, wrong, r_imgs, k,
                                                 neighbours[k], rights, units > 1, stored, fkw, progress, known))
            else:
                results.append(_plain_one(args, model, method, params[method], q_img, n_imgs, neighbours, point,
                                          box, units > 1 or len(neighbours) > 1, stored, fkw,
                                          bar.progress(method)))
    finally:
        bar.close()
    if args.save_maps:
        save_maps(args.save_maps, stored)
    if args.json:
        for r in results:
            r.pop("_text", None)
            r.update(header)
            if args.save_maps:
                r["maps_file"] = str(args.save_maps)
        doc = results[0] if len(results) == 1 else {**header, "explanations": results,
                                                    "maps_file": args.save_maps}
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"model       {model.spec}  layer {model.layer}, metric {model.metric}")
    print(f"query       {q_id or q_path}")
    for r in results:
        print()
        print(f"method      {r['method']}  ({METHODS[r['method']]})")
        print("\n".join(r["_text"]))
    if args.save_maps:
        print(f"\nmaps        {args.save_maps} ({len(stored)} arrays)")
    return 0


def _faithfulness_lines(fs: dict[str, Any], k: int) -> list[str]:
    """The faithfulness of pair ``k`` as text: both AUCs per side with their direction, and the flags (a map no
    better than a random map, a map whose mass sits on the padding)."""
    lines = [f"faithfulness (methods.md 7.1, fill {fs['background']}, {fs['steps']} steps; {fs['direction']})"]
    for side in ("query", "neighbour"):
        if side in fs:
            flags = "" if fs[side]["better_than_random"][k] else "   NO BETTER THAN A RANDOM MAP"
            if fs[side]["padding_warning"][k]:
                flags += f"   {fs[side]['padding_share'][k]:.0%} OF THE MAP IS ON THE PADDING"
            lines.append(f"  {side:<9} insertion AUC {_fmt(fs[side]['insertion'][k])}   "
                         f"deletion AUC {_fmt(fs[side]['deletion'][k])}{flags}")
    return lines


def _plain_one(args, model, method, params, q_img, n_imgs, neighbours, point, box, many, stored, fkw,
               progress=None) -> dict:
    """One method over all neighbours (one explanation: the query's passes are shared)."""
    from . import explain
    from .base import REGISTRY
    from ..render import pair_png
    from .metrics import faithfulness
    from .summary import explanation_to_json
    from .views import draw_joint

    exp = explain(model, q_img, n_imgs, method=method, side=args.side, seed=args.seed, progress=progress, **params)
    fs = faithfulness(exp, model, **fkw) if args.faithfulness else None
    figures = []
    if args.out:
        out = Path(args.out)
        if out.parent and not out.parent.exists():
            raise SimxError(f"--out: folder {out.parent} does not exist")
        for k in range(exp.k):
            path = _figure_path(args.out, method, k, many)
            if REGISTRY[method].kind == "joint":
                draw_joint(exp, k, point=point, box=box, top_k=args.top_k, path=path)
            else:
                pair_png([exp], k, per_map=args.per_map, path=path,
                         title=f"{method}: {neighbours[k][0] or neighbours[k][1]}")
            figures.append(str(path))
    summary = explanation_to_json(exp, k=None, maps=False)
    store = bool(args.save_maps)
    for k, pair in enumerate(summary["pairs"]):
        pair["id"], pair["path"] = neighbours[k]
        for side, maps in (("query", exp.query_maps), ("neighbour", exp.neighbour_maps)):
            if maps is not None and (args.json or store):
                pair[f"{side}_map"] = _maps_entry(stored, store, f"{method}/{side}/{k}", maps[k])
    summary["neighbour"] = {"id": neighbours[0][0], "path": neighbours[0][1]}
    summary["neighbours"] = [{"id": i, "path": p} for i, p in neighbours]
    summary["figure"] = figures[0] if len(figures) == 1 else (figures or None)
    text = []
    for k, (n_id, n_path) in enumerate(neighbours):
        text.append(f"neighbour   {n_id or n_path}")
        text.append(f"similarity  {float(exp.similarities[k]):.4f}")
        if fs is not None:
            text += _faithfulness_lines(fs, k)
    text.append(f"cost        {exp.cost.forward} forward, {exp.cost.backward} backward, {exp.cost.seconds:.2f} s")
    shown = {k: v for k, v in exp.params.items() if k not in ("batch_size",)}
    text.append("params      " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    text += [f"figure      {f}" for f in figures]
    summary["_text"] = text
    return summary


def _stored_embeddings(index: Any, ids: list[str | None]) -> Any:
    """The index's stored vectors of gallery ids (None when one of them is an outside file): a query-side contrast
    then makes one forward pass, the query's (:func:`simx.explain.explain`'s ``known_embeddings``)."""
    if any(i is None for i in ids):
        return None
    return index.embeddings[[index.position(i) for i in ids]]


def _contrast_one(args, model, method, params, q_img, wrong, r_imgs, k, wrong_ref, rights, many, stored,
                  fkw, progress=None, known=None) -> dict:
    """Why wrong neighbour ``k`` beat the right one(s) with one method: contrast maps, counterfactuals, reading."""
    from .contrast import why_not
    from .contrast_view import contrast_figure
    from .engine import explain
    from .metrics import _jsonable, faithfulness

    if args.counterfactual:
        # steps=0: the CLI scores the pair maps itself below (full curves, or not at all with --no-faithfulness)
        result = why_not(model, q_img, wrong, r_imgs, method=method, seed=args.seed,
                         wrong_side=args.side != "query", progress=progress, steps=0, **params)
        contrast = result.contrast
    else:
        result = contrast = explain(model, q_img, wrong, versus=r_imgs, method=method, side=args.side,
                                    seed=args.seed, progress=progress, known_embeddings=known, **params)
    store = bool(args.save_maps)
    summary: dict[str, Any] = {
        "method": method, "wrong": {"id": wrong_ref[0], "path": wrong_ref[1]},
        "rights": [{"id": i, "path": p} for i, p in rights],
        "similarities": _jsonable(contrast.similarities), "margins": _jsonable(contrast.margins),
        "params": _jsonable(contrast.pair.params), "query_params": _jsonable(contrast.query_params),
        "cost": contrast.cost.to_dict(),
    }
    if args.json or store:
        qm = contrast.query_maps
        summary["contrast_maps"] = None if qm is None else [
            _maps_entry(stored, store, f"{method}/contrast/{k}/{j}", qm[j]) for j in range(len(qm))]
        nm = contrast.pair.neighbour_maps
        summary["neighbour_maps"] = None if nm is None else [
            _maps_entry(stored, store, f"{method}/neighbour/{k}/{i}", nm[i]) for i in range(len(nm))]
    if args.counterfactual:
        summary.update({key: v for key, v in result.to_dict(with_masks=False).items()
                        if key in ("query_region", "wrong_region", "grey", "reading", "reason")})
        if store:
            summary["query_region"]["mask"] = _maps_entry(stored, True, f"{method}/query_region/{k}",
                                                          result.query_region.mask)
    fs = faithfulness(contrast.pair, model, **fkw) if args.faithfulness else None
    if fs is not None:
        summary["faithfulness"] = _jsonable({side: {"insertion": fs[side]["insertion"],
                                                    "deletion": fs[side]["deletion"]}
                                             for side in ("query", "neighbour") if side in fs})
    figure = None
    if args.out:
        out = Path(args.out)
        if out.parent and not out.parent.exists():
            raise SimxError(f"--out: folder {out.parent} does not exist")
        figure = str(_figure_path(args.out, method, k, many))
        contrast_figure(result, figure)
    summary["figure"] = figure
    s = contrast.similarities
    text = [f"wrong       {wrong_ref[0] or wrong_ref[1]}   s = {s[0]:.4f}"]
    for j, (r_id, r_path) in enumerate(rights):
        text.append(f"right       {r_id or r_path}   s = {s[1 + j]:.4f}   margin {contrast.margins[j]:+.4f}")
    if args.counterfactual:
        text.append(f"reading     {result.reading}")
        for name, region in (("query", result.query_region), ("wrong", result.wrong_region)):
            if region is not None:
                state = "flips the order" if region.found else "no flip up to"
                text.append(f"{name + ' region':<12}{region.area:.0%} of the image {state}: margin "
                            f"{region.margin_before:+.4f} -> {region.margin_after:+.4f} ({region.forwards} forwards)")
        g = result.grey
        text.append(f"grey check  margin in grey {max(g['grey_margin']):+.4f} "
                    f"({'colour decides' if g['colour_decides'] else 'not colour alone'})")
        if result.reason:
            text.append(f"reason      {result.reason.replace('_', ' ')}")
    c = contrast.cost
    text.append(f"cost        {c.forward} forward, {c.backward} backward, {c.seconds:.2f} s (contrast maps and pair maps)")
    if fs is not None:
        text += _faithfulness_lines(fs, 0)
    if figure:
        text.append(f"figure      {figure}")
    summary["_text"] = text
    return summary


COMMAND = ("explain", add_arguments, run,
           "explain why a neighbour matches a query, or why a wrong one beat the right one (--versus)")


def main(argv: list[str] | None = None) -> int:
    """``python -m simx.explain.cli ...``: the same as ``simx explain ...`` (same exit statuses)."""
    from ..cli import main as simx_main

    return simx_main(["explain", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
