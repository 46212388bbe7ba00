"""Pictures of a pair view for people: saliency overlays, a PNG figure and a self-contained HTML report.

Used by the dashboard (which only draws what these return) and usable from scripts:

* :func:`overlay`: a map on the image the model saw, RGB uint8; diverging colormap symmetric about zero, scaled by
  the map's maximum absolute value (methods.md rule 5), blended in proportion to |value| so that neutral regions
  keep the picture;
* :func:`pair_png`: a PNG of a pair with one row per method (``simx.explain.figures.pair_figure`` per method when
  that module exists, stacked; else a :class:`matplotlib.figure.Figure` drawn here, without pyplot);
* :func:`pair_report_html`: one HTML file with every image inlined as base64 PNG, the similarity, each method's
  maps and faithfulness scores, the items' labels and attributes, the SANE attributes and the human label.

Inputs are "pair views": objects with the attributes of :class:`simx.explain.Explanation` for one pair
(``method``, ``similarities``, ``query_maps``, ``neighbour_maps``, ``query_image``, ``neighbour_images``), or the
plain dicts the dashboard caches (:func:`pair_view_dict`).
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image


# --------------------------------------------------------------------------------------------- maps and images


def map_limit(heat: np.ndarray) -> float:
    """The display scale of a map: its maximum absolute value (1.0 for an all-zero map)."""
    lim = float(np.nanmax(np.abs(heat))) if np.size(heat) else 0.0
    return lim if np.isfinite(lim) and lim > 0 else 1.0


def colorize(heat: np.ndarray, cmap: str = "RdBu_r", limit: float | None = None) -> np.ndarray:
    """(H, W) map -> (H, W, 3) uint8 colours, symmetric about 0, scaled by ``limit`` (default max |map|)."""
    from matplotlib import colormaps

    heat = np.nan_to_num(np.asarray(heat, dtype=np.float32))
    lim = map_limit(heat) if limit is None else float(limit) or 1.0
    rgba = colormaps[cmap](np.clip(0.5 + 0.5 * heat / lim, 0.0, 1.0))
    return (rgba[..., :3] * 255 + 0.5).astype(np.uint8)


def _resize_map(heat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if heat.shape == shape:
        return heat
    img = Image.fromarray(np.asarray(heat, dtype=np.float32), mode="F").resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def overlay(image: np.ndarray | Image.Image, heat: np.ndarray | None, alpha: float = 0.6, cmap: str = "RdBu_r",
            limit: float | None = None) -> np.ndarray:
    """The image with ``heat`` blended on top (alpha x |value| / limit per pixel); uint8 (H, W, 3).

    ``alpha`` = 0 returns the image, 1 the colours where the map is strongest. A map of another size is resized
    bilinearly to the image.
    """
    img = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.uint8)
    if heat is None:
        return img.copy()
    heat = _resize_map(np.nan_to_num(np.asarray(heat, dtype=np.float32)), img.shape[:2])
    lim = map_limit(heat) if limit is None else float(limit) or 1.0
    colours = colorize(heat, cmap, lim).astype(np.float32)
    w = (float(np.clip(alpha, 0.0, 1.0)) * np.clip(np.abs(heat) / lim, 0.0, 1.0))[..., None]
    out = img.astype(np.float32) * (1.0 - w) + colours * w
    return (out + 0.5).clip(0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray | Image.Image) -> bytes:
    """Encode an RGB array or PIL image as PNG."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # fast: these are small pictures, made per interaction
    return buf.getvalue()


def data_uri(image: np.ndarray | Image.Image, fmt: str = "png", quality: int = 90) -> str:
    """A ``data:`` URI of an image: lossless PNG (default), or JPEG (``fmt="jpeg"``), several times smaller for
    photographs, for pictures re-sent on every interaction (the dashboard's joint view)."""
    if fmt == "png":
        return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")
    if fmt != "jpeg":
        raise ValueError(f"data_uri: fmt must be 'png' or 'jpeg', not {fmt!r}")
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=int(quality))
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail(image: Image.Image, size: int = 160) -> np.ndarray:
    """A square-padded thumbnail (white background) of a PIL image, uint8 (size, size, 3)."""
    img = image.convert("RGB")
    scale = size / max(img.width, img.height)
    resample = Image.NEAREST if scale >= 2 else Image.LANCZOS  # small pictures stay crisp when enlarged
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return np.asarray(canvas)


# --------------------------------------------------------------------------------------------- pair views


def pair_view_dict(explanation: Any, k: int = 0) -> dict[str, Any]:
    """Pair ``k`` of an :class:`~simx.explain.Explanation` as a plain, picklable dict (what the dashboard caches):
    method, similarity, query/neighbour map and image, joint matrix and cells, params, extras, cost."""

    def pick(arr):
        return None if arr is None else np.asarray(arr)[k]

    joint = getattr(explanation, "joint", None)
    cells = getattr(explanation, "neighbour_cells", None)
    if isinstance(cells, dict) and cells.get("kind") == "segments" and np.asarray(cells["segments"]).ndim == 3:
        from .explain.cells import cells_for

        cells = cells_for(cells, k)
    extras = {}
    n = int(np.asarray(explanation.similarities).shape[0])
    for key, value in (getattr(explanation, "extras", None) or {}).items():
        if isinstance(value, (list, tuple)) and len(value) == n:
            extras[key] = value[k]  # per-pair lists (rankings, best attribute, messages)
        elif isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == n:
            extras[key] = value[k]
        elif isinstance(value, (int, float, str, bool, np.generic)) or value is None:
            extras[key] = value
    cost = getattr(explanation, "cost", None)
    return {
        "method": explanation.method,
        "similarity": float(np.asarray(explanation.similarities)[k]),
        "query_map": pick(explanation.query_maps),
        "neighbour_map": pick(explanation.neighbour_maps),
        "query_image": np.asarray(explanation.query_image),
        "neighbour_image": np.asarray(explanation.neighbour_images)[k],
        "joint": None if joint is None else np.asarray(joint)[k : k + 1],
        "query_cells": getattr(explanation, "query_cells", None),
        "neighbour_cells": cells,
        "params": dict(getattr(explanation, "params", {}) or {}),
        "extras": extras,
        "cost": cost.to_dict() if hasattr(cost, "to_dict") else {},
    }


def as_explanation(view: Mapping[str, Any] | Any) -> Any:
    """A one-pair object with :class:`~simx.explain.Explanation`'s attribute names from a pair-view dict (what
    :mod:`simx.explain.views` and ``figures`` take); an Explanation is returned unchanged."""
    if not isinstance(view, Mapping):
        return view

    def one(a):
        return None if a is None else np.asarray(a)[None]

    return SimpleNamespace(
        method=view["method"], similarities=np.asarray([view["similarity"]], np.float32),
        query_maps=one(view.get("query_map")), neighbour_maps=one(view.get("neighbour_map")),
        query_image=view["query_image"], neighbour_images=one(view["neighbour_image"]),
        joint=view.get("joint"), query_cells=view.get("query_cells"), neighbour_cells=view.get("neighbour_cells"),
        params=view.get("params", {}), extras=view.get("extras", {}), k=1, scores={},
        cost=SimpleNamespace(**{"forward": 0, "backward": 0, "seconds": 0.0, **(view.get("cost") or {})}),
        query_feature_maps=None, neighbour_feature_maps=None,
    )


def _view(v: Mapping[str, Any] | Any, k: int = 0) -> dict[str, Any]:
    return dict(v) if isinstance(v, Mapping) else pair_view_dict(v, k)


# --------------------------------------------------------------------------------------------- PNG figure


def _figures_module():
    try:
        from .explain import figures  # being written alongside; optional
    except Exception:  # noqa: BLE001
        return None
    return figures if hasattr(figures, "pair_figure") else None


def pair_figure(views: Sequence[Mapping[str, Any] | Any], title: str = "", alpha: float = 0.6,
                label: Mapping[str, Any] | None = None):
    """A :class:`matplotlib.figure.Figure` (Agg canvas, no pyplot): one row per method with the query, the
    query overlay, the neighbour and the neighbour overlay; the similarity and method in each row's title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    views = [_view(v) for v in views]
    rows = max(1, len(views))
    fig = Figure(figsize=(12, 3.2 * rows + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(rows, 4, squeeze=False))
    for r, v in enumerate(views):
        panels = [("query", v["query_image"]), (f"{v['method']} on query", overlay(v["query_image"], v["query_map"],
                                                                                   alpha)),
                  ("neighbour", v["neighbour_image"]),
                  (f"{v['method']} on neighbour", overlay(v["neighbour_image"], v["neighbour_map"], alpha))]
        for c, (name, img) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(name, fontsize=9)
        axes[r, 0].set_ylabel(f"{v['method']}\ns = {v['similarity']:.4f}", fontsize=9)
    sup = title or "pair view"
    if label:
        sup += f"  |  label: {label.get('verdict', '')}" + (f" ({label['reason']})" if label.get("reason") else "")
    fig.suptitle(sup + "  (maps: diverging, scaled per map by max |value|)", fontsize=10)
    return fig


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def pair_png(views: Sequence[Mapping[str, Any] | Any], title: str = "", alpha: float = 0.6,
             label: Mapping[str, Any] | None = None) -> bytes:
    """PNG bytes of the pair view; uses ``simx.explain.figures.pair_figure`` per method when available."""
    figures = _figures_module()
    if figures is not None and views:
        try:
            parts = [Image.open(io.BytesIO(figure_png(figures.pair_figure(as_explanation(v), k=0))))
                     .convert("RGB") for v in views]
        except Exception:  # noqa: BLE001 - fall back to the figure drawn here
            parts = []
        if parts:
            head = title + (f"   |   label: {label.get('verdict', '')}" + (f" ({label['reason']})"
                                                                         if label.get("reason") else "")
                            if label else "")
            band = 28 if head else 0
            width = max(p.width for p in parts)
            canvas = Image.new("RGB", (width, band + sum(p.height for p in parts)), (255, 255, 255))
            if head:
                from PIL import ImageDraw, ImageFont

                try:
                    font = ImageFont.load_default(size=15)
                except TypeError:  # older Pillow without sized default fonts
                    font = ImageFont.load_default()
                ImageDraw.Draw(canvas).text((10, 6), head, fill=(20, 20, 20), font=font)
            y = band
            for p in parts:
                canvas.paste(p, (0, y))
                y += p.height
            return png_bytes(canvas)
    return figure_png(pair_figure(views, title=title, alpha=alpha, label=label))


# --------------------------------------------------------------------------------------------- HTML report


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def _item_block(role: str, item: Any) -> str:
    if item is None:
        return f"<div><b>{role}</b>: uploaded image</div>"
    attrs = ", ".join(getattr(item, "attributes", []) or []) or "none"
    desc = (getattr(item, "metadata", {}) or {}).get("description", "")
    return (f"<div><b>{role}</b>: <code>{html.escape(str(item.id))}</code><br>label: "
            f"{html.escape(str(item.label))}<br>attributes: {html.escape(attrs)}"
            + (f"<br>description: {html.escape(str(desc))}" if desc else "") + "</div>")


def pair_report_html(views: Sequence[Mapping[str, Any] | Any], query_item: Any = None, neighbour_item: Any = None,
                     index_name: str = "", model_spec: str = "", rank: int | None = None, score: float | None = None,
                     faithfulness: Mapping[str, Mapping[str, Any]] | None = None,
                     sane: Mapping[str, Any] | None = None, label: Mapping[str, Any] | None = None,
                     alpha: float = 0.6) -> str:
    """A self-contained HTML page of the pair view (no external resource: every image is a base64 PNG).

    ``faithfulness``: method -> the dict ``Explanation.faithfulness()`` returned; ``sane``: ``{"attributes":
    [(name, score), ...], "map": (H, W) or None, "image": (H, W, 3)}``; ``label``: the human verdict.
    """
    views = [_view(v) for v in views]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sim = views[0]["similarity"] if views else score
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>simx pair report</title><style>",
        "body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}img{width:224px;height:auto;"
        "image-rendering:pixelated;border:1px solid #ddd}.row{display:flex;gap:12px;align-items:flex-start;"
        "margin:8px 0}.cap{font-size:12px;color:#555}.meta{display:flex;gap:40px}",
        "</style></head><body>",
        "<h1>simx pair report</h1>",
        f"<p class='cap'>index <code>{html.escape(index_name)}</code> &middot; model <code>{html.escape(model_spec)}"
        f"</code> &middot; generated {now}</p>",
        "<div class='meta'>", _item_block("Query", query_item), _item_block("Neighbour", neighbour_item), "</div>",
        "<table><tr><th>similarity</th><th>rank</th><th>search score</th></tr>",
        f"<tr><td>{_fmt(sim) if sim is not None else ''}</td><td>{'' if rank is None else rank}</td>"
        f"<td>{'' if score is None else _fmt(float(score))}</td></tr></table>",
    ]
    if label:
        parts.append("<h2>Label</h2><table><tr><th>verdict</th><th>reason</th><th>note</th><th>user</th></tr>"
                     f"<tr><td>{_fmt(label.get('verdict', ''))}</td><td>{_fmt(label.get('reason') or '')}</td>"
                     f"<td>{_fmt(label.get('note') or '')}</td><td>{_fmt(label.get('user') or '')}</td></tr></table>")
    parts.append("<h2>Saliency</h2><p class='cap'>Maps use a diverging colormap symmetric about zero (red = raises "
                 "the similarity, blue = lowers it), scaled per map by its maximum absolute value.</p>")
    for v in views:
        cap = f"{html.escape(v['method'])} &middot; s = {v['similarity']:.4f}"
        f = (faithfulness or {}).get(v["method"])
        if f:
            cap += " &middot; " + ", ".join(f"{html.escape(str(k))}: {_fmt(val)}" for k, val in _flat(f).items())
        parts.append(f"<h3>{cap}</h3><div class='row'>")
        for name, img in (("query", v["query_image"]), ("query map", overlay(v["query_image"], v["query_map"], alpha)),
                          ("neighbour", v["neighbour_image"]),
                          ("neighbour map", overlay(v["neighbour_image"], v["neighbour_map"], alpha))):
            parts.append(f"<figure><img alt='{name}' src='{data_uri(img)}'><figcaption class='cap'>{name}"
                         "</figcaption></figure>")
        parts.append("</div>")
    if sane:
        parts.append("<h2>Attributes (SANE)</h2><table><tr><th>attribute</th><th>score</th></tr>")
        for name, val in sane.get("attributes", []):
            parts.append(f"<tr><td>{html.escape(str(name))}</td><td>{_fmt(float(val))}</td></tr>")
        parts.append("</table>")
        if sane.get("map") is not None and sane.get("image") is not None:
            parts.append(f"<div class='row'><img alt='best attribute map' "
                         f"src='{data_uri(overlay(sane['image'], sane['map'], alpha))}'></div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalars of a nested dict with dotted keys (arrays of one value become that value)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (int, float, np.floating, np.integer)):
            out[key] = float(v)
        elif isinstance(v, np.ndarray) and v.size == 1:
            out[key] = float(v.reshape(-1)[0])
    return out


# --------------------------------------------------------------------------------------------- failure summaries


def label_confusion(per_query: Any, item_labels: Mapping[str, Any], normalise: bool = True):
    """Query label (rows) x neighbour label (columns) over the retrieved neighbours of an evaluation table: the one
    definition is :func:`simx.index.evaluation.label_confusion` (multi-label aware; plain counts for one label per
    item, rows summing to 1 with ``normalise``, unlabelled neighbours as ``(none)``)."""
    from .index.evaluation import label_confusion as confusion

    return confusion(per_query, dict(item_labels), normalise=normalise)


__all__ = ["label_confusion", "overlay", "colorize", "map_limit", "png_bytes", "data_uri", "thumbnail", "pair_view_dict",
           "as_explanation", "pair_figure", "figure_png", "pair_png", "pair_report_html"]
