"""Pictures and tables about a gallery for people: thumbnails and the label confusion of a search's failures.

Maps are drawn by :mod:`simx.render` (the one renderer: overlays, the PNG figure and the HTML report of a pair
view); the PNG / data-URI encoders live there too and are re-exported here for the pages that encode thumbnails.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from PIL import Image

from .render.encode import data_uri, png_bytes


def thumbnail(image: Image.Image, size: int = 160) -> np.ndarray:
    """A square-padded thumbnail (white background) of a PIL image, uint8 (size, size, 3)."""
    img = image.convert("RGB")
    scale = size / max(img.width, img.height)
    resample = Image.NEAREST if scale >= 2 else Image.LANCZOS  # small pictures stay crisp when enlarged
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return np.asarray(canvas)


# --------------------------------------------------------------------------------------------- failure summaries


def label_confusion(per_query: Any, item_labels: Mapping[str, Any], normalise: bool = True):
    """Query label (rows) x neighbour label (columns) over the retrieved neighbours of an evaluation table: the one
    definition is :func:`simx.index.evaluation.label_confusion` (multi-label aware; plain counts for one label per
    item, rows summing to 1 with ``normalise``, unlabelled neighbours as ``(none)``)."""
    from .index.evaluation import label_confusion as confusion

    return confusion(per_query, dict(item_labels), normalise=normalise)


__all__ = ["label_confusion", "thumbnail", "png_bytes", "data_uri"]
