"""Pictures as bytes: PNG encoding and ``data:`` URIs (self-contained HTML, Plotly image traces)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def png_bytes(image: np.ndarray | Image.Image) -> bytes:
    """Encode an RGB array or PIL image as PNG (lossless: a probe pixel reads back exactly)."""
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


__all__ = ["png_bytes", "data_uri"]
