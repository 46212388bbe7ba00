"""Galleries and safe image loading.

A gallery is a list of :class:`Item` (id, path, label, labels, attributes, boxes, metadata) read from a folder
(labels are the relative sub-folder path) or from a CSV/Parquet manifest (a ``label`` column, and a ``labels``
column for items with several labels: ``|``-separated in CSV, a list of strings in Parquet).

:func:`load_image` is the only way simx decodes an image: it applies EXIF orientation, converts every Pillow mode
to RGB (transparency composited on white), refuses decompression bombs before decoding, and turns every failure
into an :class:`~simx.errors.ImageLoadError` with a short reason, so a bad file is skipped and reported instead of
aborting a build.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image, ImageFile, ImageOps

from .errors import GalleryError, ImageLoadError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
#: Default pixel cap (width x height) checked from the header before any pixel is decoded.
MAX_PIXELS = 64_000_000
#: Largest accepted encoded file, in bytes.
MAX_FILE_BYTES = 256 * 1024 * 1024
#: Largest decoded size of an *upload* (a dashboard query image), in bytes: the pixels times the bytes per pixel of
#: the decoded image plus its RGB copy (see :func:`decoded_bytes`). Well below the gallery's cap (64 Mpx, >= 192 MB
#: decoded): a 7.6 KB 7900 x 7900 1-bit PNG would otherwise cost the server ~300 MB. 96 MB admits any RGB photo
#: up to ~33 Mpx (6000 x 4000 is 24), and refuses such a bomb from its header, before a pixel is decoded.
MAX_UPLOAD_DECODED_BYTES = 96 * 1024 * 1024
#: Vector formats are not decoded at all (no rasteriser is shipped); their uploads get a message that says so.
_VECTOR_SIGNS = (b"<svg", b"<?xml")

# Truncated files must fail loudly, never decode as half-grey images.
ImageFile.LOAD_TRUNCATED_IMAGES = False


#: Separator of several labels in one text cell (a CSV manifest's ``labels`` column).
LABELS_SEPARATOR = "|"


@dataclass
class Item:
    """One gallery image and what is known about it.

    ``label`` is the primary label (what lists and colours show); ``labels`` is every label of the item, the
    primary one first, and is what retrieval relevance uses (two items are relevant to each other when they
    share a label, :mod:`simx.relevance`). Either may be given: ``labels`` is completed with ``label`` and
    ``label`` defaults to the first of ``labels``, so a single-label item has ``labels == [label]``.
    """

    id: str
    path: str
    label: str | None = None
    attributes: list[str] = field(default_factory=list)
    boxes: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        label = None if self.label is None or str(self.label).strip() == "" else str(self.label)
        labels = list(dict.fromkeys(s for s in (str(v).strip() for v in (self.labels or [])) if s))
        if label is None:
            label = labels[0] if labels else None
        elif label in labels:
            labels.remove(label)
            labels.insert(0, label)
        else:
            labels.insert(0, label)
        self.label = label
        self.labels = labels


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is composited on white."""
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 0.0
        scale = 255.0 / (65535.0 if hi > 255 else max(hi, 1.0) if img.mode == "I" else 65535.0)
        img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


#: Bytes per pixel of Pillow's decoded modes (packed 1-bit images are stored one byte per pixel).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2,
               "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4, "I": 4, "F": 4}


def decoded_bytes(width: int, height: int, mode: str) -> int:
    """Memory that decoding a ``width`` x ``height`` image of Pillow ``mode`` takes: the decoded pixels, plus the
    RGB copy that :func:`load_image` makes of anything that is not RGB already."""
    per_pixel = _MODE_BYTES.get(mode, 4) + (0 if mode == "RGB" else 3)
    return int(width) * int(height) * per_pixel


def load_upload(data: bytes, max_decoded_bytes: int = MAX_UPLOAD_DECODED_BYTES) -> Image.Image:
    """Decode an uploaded image (a dashboard query) under the upload cap.

    Like :func:`load_image`, and refuses from the header, before decoding, an image whose decoded size
    (:func:`decoded_bytes`) exceeds ``max_decoded_bytes``; an SVG gets its own message (vector images are not
    supported). Raises :class:`ImageLoadError`."""
    head = bytes(data[:512]).lstrip().lower()
    if any(head.startswith(sign) for sign in _VECTOR_SIGNS) and b"<svg" in bytes(data[:4096]).lower():
        raise ImageLoadError("<upload>", "SVG (vector) images are not supported: export it as PNG or JPEG first")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = Image.open(io.BytesIO(bytes(data)))
            size, mode = probe.size, probe.mode
    except Exception:  # noqa: BLE001 - load_image gives the precise reason below
        size, mode = None, None
    if size is not None:
        need = decoded_bytes(size[0], size[1], mode)
        if need > max_decoded_bytes:
            raise ImageLoadError("<upload>", f"too large: {size[0]} x {size[1]} pixels would take "
                                             f"{need / 2**20:.0f} MB decoded (uploads are capped at "
                                             f"{max_decoded_bytes / 2**20:.0f} MB)")
    return load_image(bytes(data))


def load_image(source: str | os.PathLike | bytes | Image.Image, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an image safely and return it as RGB.

    ``source`` is a path, the encoded bytes (an upload) or an already open PIL image. Raises
    :class:`ImageLoadError` with a one-line reason for a missing or empty file, a non-image, a truncated stream,
    or more than ``max_pixels`` pixels (checked from the header, before decoding).
    """
    name = "<upload>" if isinstance(source, (bytes, bytearray)) else str(getattr(source, "filename", "") or source)
    if isinstance(source, Image.Image):
        img = source
    else:
        if isinstance(source, (bytes, bytearray)):
            data = bytes(source)
        else:
            path = Path(source)
            if not path.exists():
                raise ImageLoadError(name, "file not found")
            if not path.is_file():
                raise ImageLoadError(name, "not a regular file")
            size = path.stat().st_size
            if size == 0:
                raise ImageLoadError(name, "empty file")
            if size > MAX_FILE_BYTES:
                raise ImageLoadError(name, f"file too large ({size} bytes > {MAX_FILE_BYTES})")
            data = path.read_bytes()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageLoadError(name, f"too many pixels (decompression bomb guard): {exc}") from None
        except Image.DecompressionBombWarning:
            raise ImageLoadError(name, "too many pixels (decompression bomb guard)") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file
            raise ImageLoadError(name, f"not a readable image ({type(exc).__name__})") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ImageLoadError(name, f"too many pixels ({w}x{h} > {max_pixels} cap)")
    if w == 0 or h == 0:
        raise ImageLoadError(name, "zero-sized image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
            img = ImageOps.exif_transpose(img)
            img = _to_rgb(img)
    except Exception as exc:  # noqa: BLE001
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower() or isinstance(exc, (OSError, SyntaxError)):
            raise ImageLoadError(name, f"truncated or corrupt image data ({reason})") from None
        raise ImageLoadError(name, f"cannot decode ({type(exc).__name__}: {reason})") from None
    return img


def file_fingerprint(path: str | os.PathLike) -> str:
    """A cheap change detector for ``--update``: size, mtime in ns and a hash of the first 64 KiB."""
    p = Path(path)
    st = p.stat()
    with open(p, "rb") as fh:
        head = fh.read(65536)
    return f"{st.st_size}:{st.st_mtime_ns}:{hashlib.blake2b(head, digest_size=8).hexdigest()}"


# --------------------------------------------------------------------------------------------- galleries


def _folder_items(root: Path) -> list[Item]:
    items = []
    # regular files, and dangling symlinks (reported as missing by the loader instead of silently left out);
    # directories, FIFOs and devices named like images are not images and are never opened (a FIFO would block)
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                       and (p.is_file() or (p.is_symlink() and not p.exists()))):
        rel = path.relative_to(root)
        label = rel.parent.as_posix() if rel.parent != Path(".") else None
        meta: dict[str, Any] = {}
        txt = path.with_suffix(".txt")
        if txt.is_file():
            first = txt.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            if first:
                meta["description"] = first[0].strip()
        items.append(Item(id=rel.as_posix(), path=str(path), label=label, metadata=meta))
    return items


def _parse_attributes(value: Any, row: int) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v).strip() for v in value if str(v).strip()]
    if not isinstance(value, str):
        raise GalleryError(f"manifest row {row}: 'attributes' must be a ';'-separated string, got {type(value).__name__}")
    return [a.strip() for a in value.split(";") if a.strip()]


def _parse_labels(value: Any, row: int) -> list[str]:
    """A manifest ``labels`` cell: ``a|b`` text (CSV), a list of strings (Parquet), or empty."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v).strip() for v in value if v is not None and str(v).strip()]
    if not isinstance(value, str):
        raise GalleryError(f"manifest row {row}: 'labels' must be a '{LABELS_SEPARATOR}'-separated string or a list "
                           f"of strings, got {type(value).__name__}")
    return [v.strip() for v in value.split(LABELS_SEPARATOR) if v.strip()]


def _parse_boxes(value: Any, row: int) -> list[dict[str, Any]]:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return []
    try:
        boxes = json.loads(value) if isinstance(value, str) else list(value)
    except json.JSONDecodeError as exc:
        raise GalleryError(f"manifest row {row}: 'boxes' is not valid JSON ({exc.msg})") from None
    if not isinstance(boxes, list):
        raise GalleryError(f"manifest row {row}: 'boxes' must be a JSON list of {{x0,y0,x1,y1,label}}")
    out = []
    for b in boxes:
        if not isinstance(b, dict) or not {"x0", "y0", "x1", "y1"} <= set(b):
            raise GalleryError(f"manifest row {row}: every box needs x0, y0, x1, y1 (got {b!r})")
        out.append({**b, **{k: float(b[k]) for k in ("x0", "y0", "x1", "y1")}})
    return out


def read_manifest(path: str | os.PathLike) -> list[Item]:
    """Read a CSV or Parquet manifest: ``path`` (required, relative to the manifest's folder or absolute),
    optional ``id``, ``label``, ``labels`` (several labels: ``|``-separated text, or a list of strings in
    Parquet; relevance = sharing one), ``attributes`` (``;``-separated), ``boxes`` (JSON list); other columns
    are metadata."""
    import pandas as pd

    mpath = Path(path)
    if not mpath.is_file():
        raise GalleryError(f"manifest not found: {mpath}")
    try:
        df = pd.read_parquet(mpath) if mpath.suffix.lower() in (".parquet", ".pq") else pd.read_csv(mpath)
    except Exception as exc:  # noqa: BLE001
        raise GalleryError(f"cannot read manifest {mpath}: {exc}") from None
    if "path" not in df.columns:
        raise GalleryError(f"manifest {mpath} has no 'path' column (columns: {', '.join(map(str, df.columns))})")
    base = mpath.parent
    known = {"id", "path", "label", "labels", "attributes", "boxes"}
    items, seen = [], set()
    for i, row in enumerate(df.to_dict(orient="records")):
        raw = row["path"]
        if not isinstance(raw, str) or not raw.strip():
            raise GalleryError(f"manifest row {i}: empty 'path'")
        p = Path(raw)
        full = p if p.is_absolute() else base / p
        item_id = str(row["id"]) if "id" in row and row["id"] is not None and str(row["id"]) != "nan" else raw
        if item_id in seen:
            raise GalleryError(f"manifest row {i}: duplicate id {item_id!r}")
        seen.add(item_id)
        label = row.get("label")
        label = None if label is None or (isinstance(label, float) and np.isnan(label)) else str(label)
        meta = {k: _plain(v) for k, v in row.items() if k not in known}
        items.append(
            Item(
                id=item_id,
                path=str(full),
                label=label,
                labels=_parse_labels(row.get("labels"), i),
                attributes=_parse_attributes(row.get("attributes"), i),
                boxes=_parse_boxes(row.get("boxes"), i),
                metadata=meta,
            )
        )
    return items


def _plain(v: Any) -> Any:
    """Make a manifest cell JSON-safe (numpy scalars, NaN)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


def open_gallery(source: str | os.PathLike) -> list[Item]:
    """Items of a folder, a manifest (``.csv``, ``.parquet``) or a FiftyOne dataset (``fiftyone:NAME``, see
    :mod:`simx.fiftyone_io`). Raises :class:`GalleryError` if it is none of these or holds no image."""
    if isinstance(source, str) and source.startswith("fiftyone:"):
        from .fiftyone_io import gallery_records

        return [Item(**record) for record in gallery_records(source)]
    src = Path(source)
    if src.is_dir():
        items = _folder_items(src)
    elif src.is_file() and src.suffix.lower() in (".csv", ".parquet", ".pq"):
        items = read_manifest(src)
    elif not src.exists():
        raise GalleryError(f"gallery source not found: {src}")
    else:
        raise GalleryError(f"gallery source must be a folder or a .csv/.parquet manifest: {src}")
    if not items:
        raise GalleryError(f"no images in {src} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return items


def gallery_source(source: str | os.PathLike) -> str | Path:
    """``source`` as an index records it: a ``fiftyone:NAME`` string as it is, a path made absolute."""
    if isinstance(source, str) and source.startswith("fiftyone:"):
        return source
    return Path(os.path.abspath(os.fspath(source)))


def items_to_records(items: Iterable[Item]) -> list[dict[str, Any]]:
    """Rows for the index manifest (JSON-safe)."""
    return [
        {
            "id": it.id,
            "path": it.path,
            "label": it.label,
            "labels": list(it.labels),
            "attributes": ";".join(it.attributes),
            "boxes": json.dumps(it.boxes),
            "metadata": json.dumps(it.metadata, default=str),
        }
        for it in items
    ]


def records_to_items(rows: Iterable[dict[str, Any]]) -> list[Item]:
    """Inverse of :func:`items_to_records`. Rows without ``labels`` (format-1 index manifests) give single-label
    items."""
    out = []
    for r in rows:
        attrs = r.get("attributes") or ""
        out.append(
            Item(
                id=str(r["id"]),
                path=str(r["path"]),
                label=r.get("label") if r.get("label") not in ("", None) else None,
                labels=_parse_labels(r.get("labels"), 0),
                attributes=[a for a in str(attrs).split(";") if a],
                boxes=json.loads(r.get("boxes") or "[]"),
                metadata=json.loads(r.get("metadata") or "{}"),
            )
        )
    return out
