"""Pictures of a contrastive explanation, drawn by the one renderer (:mod:`simx.render`).

:func:`contrast_panels` gives the three pictures of the "Why not the right one?" view as uint8 arrays: the query
with the margin map (red: argues for the wrong neighbour, blue: for the right one) and the counterfactual region
outlined, the wrong neighbour and the right one each with its pair map (one scale shared by the two, so the
stronger match looks stronger) and the wrong neighbour's counterfactual region. :func:`contrast_figure` lays them
out with titles and legends as one PNG (the CLI's ``--out`` with ``--versus``); the dashboard shows the panels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..render import format_value, legend, overlay, shared_limit
from ..render.panels import faithfulness_notes
from .base import ContrastExplanation

#: Colour of the outline of a counterfactual region (green: neither end of the red/blue map colours).
REGION_COLOUR = (0, 170, 60)


def outline(image: np.ndarray, mask: np.ndarray | None, colour: tuple[int, int, int] = REGION_COLOUR,
            width: int = 2) -> np.ndarray:
    """``image`` with the boundary of ``mask`` (H, W) drawn ``width`` pixels wide in ``colour``."""
    out = np.asarray(image, np.uint8).copy()
    if mask is None or not np.any(mask):
        return out
    m = np.asarray(mask, bool)
    if m.shape != out.shape[:2]:
        m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(out.shape[1::-1], Image.NEAREST)) > 127
    edge = np.zeros_like(m)
    for _ in range(width):
        grown = m.copy()
        grown[1:] |= m[:-1]
        grown[:-1] |= m[1:]
        grown[:, 1:] |= m[:, :-1]
        grown[:, :-1] |= m[:, 1:]
        edge |= grown & ~m
        m = grown
    out[edge] = colour
    return out


def _parts(result: Any) -> tuple[ContrastExplanation, Any, Any]:
    """(contrast, query region, wrong region) of a :class:`~simx.explain.contrast.WhyNot` or a bare contrast."""
    if isinstance(result, ContrastExplanation):
        return result, None, None
    return result.contrast, result.query_region, result.wrong_region


def contrast_panels(result: Any, j: int = 0, per_map: bool = False) -> dict[str, Any]:
    """The pictures of rival ``j``: ``query``, ``wrong``, ``right`` (uint8 (H, W, 3)), their legends and limits,
    and the faithfulness lines of the two pair maps (``wrong_notes``, ``right_notes``: (text, warning) pairs).

    ``result`` is a :class:`~simx.explain.contrast.WhyNot` (regions outlined) or a :class:`ContrastExplanation`.
    The margin map has its own scale (it is a difference of similarities); the two pair maps share one, unless
    ``per_map``."""
    c, q_region, w_region = _parts(result)
    cmap = None if c.query_maps is None else c.query_maps[j]
    # each map is drawn about its baseline (its "no effect" value, e.g. RISE's mean masked score); the margin map
    # is already centred (the engine subtracts the pair maps' baselines), so its "no effect" value is 0
    q_base = 0.0
    q_limit = shared_limit([cmap], q_base) if cmap is not None else 1.0
    pair = c.pair.neighbour_maps
    wrong_map = None if pair is None else pair[0]
    right_map = None if pair is None else pair[1 + j]
    w_base, r_base = (c.pair.baseline("neighbour", 0), c.pair.baseline("neighbour", 1 + j)) if pair is not None \
        else (0.0, 0.0)
    p_limit = shared_limit([wrong_map, right_map], [w_base, r_base]) if pair is not None else 1.0
    query = overlay(c.query_image, cmap, limit=q_limit, baseline=q_base)
    wrong = overlay(c.wrong_image, wrong_map, limit=None if per_map else p_limit, baseline=w_base)
    right = overlay(c.right_images[j], right_map, limit=None if per_map else p_limit, baseline=r_base)
    if q_region is not None and q_region.found:
        query = outline(query, q_region.mask)
    if w_region is not None and w_region.found:
        wrong = outline(wrong, w_region.mask)
    return {
        "query": query, "wrong": wrong, "right": right, "query_limit": q_limit, "pair_limit": p_limit,
        "query_legend": legend(q_limit, q_base, low="for the right one", high="for the wrong one"),
        "pair_legend": legend(p_limit, w_base, per_map=per_map),  # values of the wrong one's map
        # the faithfulness estimate of each pair map (kept on the pair by why_not), as (text, warning) lines
        "wrong_notes": [(n.text, n.warning) for n in faithfulness_notes(c.pair, "neighbour", 0)],
        "right_notes": [(n.text, n.warning) for n in faithfulness_notes(c.pair, "neighbour", 1 + j)],
    }


def _titled(picture: np.ndarray, title: str, width: int) -> Image.Image:
    pic = Image.fromarray(picture)
    if pic.width != width:
        pic = pic.resize((width, round(pic.height * width / pic.width)), Image.BILINEAR)
    canvas = Image.new("RGB", (width, pic.height + 22), (255, 255, 255))
    ImageDraw.Draw(canvas).text((4, 4), title, fill=(20, 20, 20))
    canvas.paste(pic, (0, 22))
    return canvas


def contrast_figure(result: Any, path: str | os.PathLike | None = None, j: int = 0, width: int = 320,
                    per_map: bool = False) -> Image.Image:
    """One PNG of rival ``j``: query | wrong | right (maps overlaid, regions outlined), legends underneath, and
    the margin. Written atomically to ``path`` when given; returns the PIL image."""
    c, q_region, _ = _parts(result)
    panels = contrast_panels(result, j, per_map=per_map)
    s = c.similarities
    cols = [
        _titled(panels["query"], f"query: margin {format_value(c.margins[j])} ({c.method})", width),
        _titled(panels["wrong"], f"wrong: s = {s[0]:.4f}", width),
        _titled(panels["right"], f"right: s = {s[1 + j]:.4f}", width),
    ]
    legends = [Image.fromarray(panels["query_legend"]), Image.fromarray(panels["pair_legend"])]
    height = max(col.height for col in cols) + max(lg.height for lg in legends) + 8
    canvas = Image.new("RGB", (3 * width + 16, height + (18 if q_region is not None else 0)), (255, 255, 255))
    for i, col in enumerate(cols):
        canvas.paste(col, (i * (width + 8), 0))
    y = max(col.height for col in cols) + 4
    canvas.paste(legends[0].resize((width, legends[0].height)), (0, y))
    canvas.paste(legends[1].resize((2 * width + 8, legends[1].height)), (width + 8, y))
    if q_region is not None:
        ImageDraw.Draw(canvas).text((4, height), getattr(result, "reading", ""), fill=(20, 20, 20))
    if path is not None:
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp")
        canvas.save(tmp, format="PNG")
        os.replace(tmp, target)
    return canvas
