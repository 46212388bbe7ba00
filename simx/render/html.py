"""The self-contained HTML report of a pair view: a jinja2 template with autoescaping.

Every value a user typed (item ids, labels, descriptions, notes, user names, index names) reaches the page as
text: the template escapes it (``autoescape=True``), nothing passes through a Markdown renderer, and every
picture is inlined as a base64 PNG (no request leaves the file). The maps are the same overlays, colour bars and
notes as the dashboard and the PNG figure (:func:`simx.render.panels.pair_panels`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np

from .colours import ALPHA, format_value, overlay
from .encode import data_uri
from .panels import rows_of

TEMPLATE = "pair_report.html.j2"


@lru_cache(maxsize=1)
def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(loader=PackageLoader("simx.render", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _item(item: Any) -> dict[str, str] | None:
    if item is None:
        return None
    meta = getattr(item, "metadata", None) or {}
    return {"id": str(item.id), "label": "" if item.label is None else str(item.label),
            "attributes": ", ".join(str(a) for a in (getattr(item, "attributes", None) or [])) or "none",
            "description": str(meta.get("description", "") or "")}


def _number(v: Any) -> str:
    return "" if v is None else f"{float(v):.4f}"


def report_html(explanations: Sequence[Any], k: int = 0, query_item: Any = None, neighbour_item: Any = None,
                index_name: str = "", model_spec: str = "", rank: int | None = None, score: float | None = None,
                sane: Mapping[str, Any] | None = None, label: Mapping[str, Any] | None = None,
                per_map: bool = False, alpha: float = ALPHA) -> str:
    """The HTML page of pair ``k`` of one or more explanations (one row per method).

    The faithfulness numbers come from each explanation's ``scores`` (:func:`simx.explain.metrics.faithfulness`
    stores them there) with their direction and flags. ``sane``: ``{"attributes": [(name, score), ...],
    "map": (H, W) or None, "image": (H, W, 3)}``; ``label``: the human verdict (``verdict``, ``reason``,
    ``note``, ``user``).
    """
    from .reading import DIRECTION

    rows = []
    for explanation, panels in zip(explanations, rows_of(explanations, k, per_map=per_map)):
        cost = explanation.cost
        rows.append({
            "method": explanation.method,
            "similarity": f"{panels[0].similarity:.4f}",
            "cost": f"{cost.forward} forward, {cost.backward} backward passes, {cost.seconds:.2f} s",
            "query_image": data_uri(panels[0].image),
            "neighbour_image": data_uri(panels[1].image),
            "panels": [{"title": p.title, "picture": data_uri(p.picture(alpha)),
                        "legend": data_uri(p.legend()) if p.heat is not None else None,
                        "scale": p.scale, "notes": p.notes} for p in panels],
        })
    sane_view = None
    if sane:
        sane_view = {"attributes": [(str(n), format_value(float(v))) for n, v in sane.get("attributes", [])],
                     "picture": None, "caption": ""}
        if sane.get("map") is not None and sane.get("image") is not None:
            heat = np.asarray(sane["map"], dtype=np.float32)
            sane_view["picture"] = data_uri(overlay(sane["image"], heat, alpha=alpha))
            sane_view["caption"] = "the best shared attribute's map on the neighbour (scaled to its own maximum)"
    similarity = rows[0]["similarity"] if rows else _number(score)
    label_view = None if not label else {key: "" if label.get(key) is None else str(label.get(key))
                                         for key in ("verdict", "reason", "note", "user")}
    return _environment().get_template(TEMPLATE).render(
        index_name=index_name, model_spec=model_spec,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        items=[("Query", _item(query_item)), ("Neighbour", _item(neighbour_item))],
        similarity=similarity, rank="" if rank is None else int(rank), score=_number(score), label=label_view,
        rows=rows, sane=sane_view, direction=DIRECTION,
        scale_rule=("Each map is scaled to its own largest deviation (per-map scaling)." if per_map else
                    "Within a method, the maps shown share one absolute scale."),
    )


__all__ = ["report_html"]
