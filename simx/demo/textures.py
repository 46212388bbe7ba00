"""Procedural pictures for the demo scenes: backgrounds and shape objects, from numpy + Pillow only.

Nothing here reads an external image, so the generated galleries carry no licence burden.

* :func:`plain_background`: a light random colour with a gentle linear gradient and mild pixel noise. Its job is
  to stay out of the way, so the objects drive the embedding.
* :func:`shortcut_background`: one of :data:`N_SHORTCUT_TEXTURES` strongly textured, saturated backgrounds
  (stripes, checker, blotches, dots, rings, grid, zigzag, weave). Scenes sharing one become near neighbours because
  the texture dominates the image: the "background shortcut" the shortcut demo is built to expose.
* :func:`render_shape`: a procedural object (shape x colour x fill texture) as an RGBA array with a dark outline,
  strong colours meant to read unambiguously on a light background.

All randomness comes from the ``numpy.random.Generator`` passed in, so the caller controls determinism.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

#: Shapes of procedural objects.
SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon")
#: Named colours of procedural objects (strong, distinct hues).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (214, 28, 38),
    "orange": (245, 128, 10),
    "yellow": (246, 204, 0),
    "green": (28, 150, 52),
    "blue": (28, 84, 214),
    "purple": (128, 44, 178),
    "black": (30, 30, 34),
}
#: Fill textures of procedural objects.
FILL_TEXTURES = ("solid", "striped", "dotted", "checkered")
#: Size classes of procedural objects, as the range of the longest side in fractions of the scene side.
SIZE_CLASSES: dict[str, tuple[float, float]] = {"small": (0.30, 0.38), "large": (0.42, 0.50)}

#: Number of distinct backgrounds in the shortcut variant.
N_SHORTCUT_TEXTURES = 8
# (pattern kind, colour A, colour B): kinds and colours are all different so each background is unmistakable.
_SHORTCUT_SPECS: tuple[tuple[str, tuple[int, int, int], tuple[int, int, int]], ...] = (
    ("stripes", (24, 40, 110), (235, 140, 30)),  # navy / orange diagonal stripes
    ("checker", (20, 95, 40), (150, 210, 60)),  # dark green / lime checker
    ("blotches", (110, 30, 120), (230, 120, 190)),  # purple / pink blotches
    ("dots", (0, 110, 120), (250, 220, 40)),  # teal with yellow dots
    ("rings", (120, 60, 20), (220, 170, 110)),  # brown / tan concentric rings
    ("grid", (35, 35, 45), (60, 210, 230)),  # charcoal with cyan grid lines
    ("zigzag", (150, 20, 25), (250, 170, 150)),  # dark red / salmon zigzag
    ("weave", (60, 60, 150), (190, 190, 240)),  # indigo / lavender weave
)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) as float32 arrays of shape (size, size)."""
    c = np.arange(size, dtype=np.float32) + 0.5
    return c[None, :].repeat(size, 0), c[:, None].repeat(size, 1)


def _noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Grey (luminance) Gaussian pixel noise, HxWx1: looks like sensor grain and, unlike per-channel noise,
    keeps PNG encoding about twice as fast and the files half as big."""
    return rng.standard_normal((size, size, 1), dtype=np.float32) * np.float32(sigma)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def plain_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A light, low-saturation random colour with a gentle linear gradient and sigma=6 grey noise (uint8 HxWx3)."""
    h, s, v = rng.uniform(0, 1), rng.uniform(0.05, 0.22), rng.uniform(0.86, 0.96)
    base = np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255
    angle = rng.uniform(0, 2 * math.pi)
    amp = rng.uniform(8, 22)
    x, y = _grid(size)
    ramp = ((x * math.cos(angle) + y * math.sin(angle)) / size - 0.5 * (math.cos(angle) + math.sin(angle))) * amp
    tint = rng.uniform(0.6, 1.0, 3).astype(np.float32)
    img = base[None, None, :] + ramp[..., None] * tint[None, None, :] + _noise(rng, size, 6.0)
    return _to_uint8(img)


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field in [0, 1] made by bicubic upsampling of a coarse random grid."""
    coarse = (rng.uniform(0, 255, (cells, cells))).astype(np.uint8)
    up = Image.fromarray(coarse, mode="L").resize((size, size), Image.BICUBIC)
    return np.asarray(up, dtype=np.float32) / 255.0


def _pattern(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Mix weights in [0, 1] (HxW) of colour B over colour A for one shortcut texture kind.

    The period and orientation are fixed per kind and only the phase is random, so every instance of one kind
    reads as the same texture.
    """
    x, y = _grid(size)
    px, py = rng.uniform(0, 64, 2).astype(np.float32)
    x, y = x + px, y + py
    if kind == "stripes":
        u = (x + y) / math.sqrt(2)
        return (np.sin(u * (2 * math.pi / 28)) > 0).astype(np.float32)
    if kind == "checker":
        return ((np.floor(x / 32) + np.floor(y / 32)) % 2).astype(np.float32)
    if kind == "blotches":
        field = _smooth_field(rng, size, 7)
        return np.clip((field - 0.5) * 6 + 0.5, 0, 1)
    if kind == "dots":
        p = 26.0
        dx, dy = (x % p) - p / 2, (y % p) - p / 2
        return (dx * dx + dy * dy < (p * 0.3) ** 2).astype(np.float32)
    if kind == "rings":
        cx, cy = rng.uniform(0, size, 2)
        r = np.hypot(x - px - cx, y - py - cy)
        return (np.sin(r * (2 * math.pi / 22)) > 0).astype(np.float32)
    if kind == "grid":
        p, w = 30.0, 4.0
        return (((x % p) < w) | ((y % p) < w)).astype(np.float32)
    if kind == "zigzag":
        p = 36.0
        tri = np.abs((x % p) - p / 2) * (2 * 14 / p)
        return (np.sin((y + tri) * (2 * math.pi / 20)) > 0).astype(np.float32)
    if kind == "weave":
        cell = 24.0
        horiz = ((np.floor(x / cell) + np.floor(y / cell)) % 2) == 0
        lines = np.where(horiz, np.sin(y * (2 * math.pi / 8)), np.sin(x * (2 * math.pi / 8)))
        return (lines > 0.2).astype(np.float32)
    raise ValueError(f"unknown texture kind {kind!r}")


def shortcut_background(rng: np.random.Generator, size: int, texture: int) -> np.ndarray:
    """Strongly textured background number ``texture`` (0..7) with a random phase and mild noise (uint8 HxWx3)."""
    kind, a, b = _SHORTCUT_SPECS[texture % N_SHORTCUT_TEXTURES]
    w = _pattern(kind, rng, size)[..., None]
    jitter = rng.uniform(-6, 6, 3).astype(np.float32)
    ca = np.array(a, dtype=np.float32) + jitter
    cb = np.array(b, dtype=np.float32) + jitter
    img = ca[None, None, :] * (1 - w) + cb[None, None, :] * w + _noise(rng, size, 4.0)
    return _to_uint8(img)


def shortcut_texture_name(texture: int) -> str:
    """The pattern kind of shortcut background number ``texture`` (e.g. ``stripes``)."""
    return _SHORTCUT_SPECS[texture % N_SHORTCUT_TEXTURES][0]


# --------------------------------------------------------------------------------------------- shapes

_SUPERSAMPLE = 4


def _polygon(n: int, r: float, c: float, rot: float, inner: float | None = None) -> list[tuple[float, float]]:
    """Vertices of a regular polygon (or a star when ``inner`` radius is given) centred on (c, c)."""
    pts = []
    k = 2 * n if inner is not None else n
    for i in range(k):
        rad = (inner if inner is not None and i % 2 else r)
        t = rot + i * 2 * math.pi / k
        pts.append((c + rad * math.cos(t), c + rad * math.sin(t)))
    return pts


def shape_mask(shape: str, side: int) -> np.ndarray:
    """Anti-aliased coverage (float32 in [0, 1], side x side) of ``shape`` filling the square."""
    big = side * _SUPERSAMPLE
    img = Image.new("L", (big, big), 0)
    d = ImageDraw.Draw(img)
    c, r = big / 2, big / 2 - 1
    if shape == "circle":
        d.ellipse([c - r, c - r, c + r, c + r], fill=255)
    elif shape == "square":
        m = big * 0.06
        d.rectangle([m, m, big - m, big - m], fill=255)
    elif shape == "triangle":
        d.polygon([(c, 1), (big - 1, big - 1), (1, big - 1)], fill=255)
    elif shape == "star":
        d.polygon(_polygon(5, r, c, -math.pi / 2, inner=r * 0.42), fill=255)
    elif shape == "ring":
        d.ellipse([c - r, c - r, c + r, c + r], fill=255)
        ri = r * 0.52
        d.ellipse([c - ri, c - ri, c + ri, c + ri], fill=0)
    elif shape == "cross":
        t = big * 0.17
        d.rectangle([c - t, 1, c + t, big - 1], fill=255)
        d.rectangle([1, c - t, big - 1, c + t], fill=255)
    elif shape == "diamond":
        d.polygon([(c, 1), (big - 1, c), (c, big - 1), (1, c)], fill=255)
    elif shape == "hexagon":
        d.polygon(_polygon(6, r, c, 0.0), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r} (known: {', '.join(SHAPES)})")
    small = img.resize((side, side), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _fill_pattern(texture: str, side: int) -> np.ndarray:
    """Where (1.0) the light second colour of a fill texture shows, in object coordinates (scale invariant)."""
    x, y = _grid(side)
    u, v = x / side, y / side
    if texture == "solid":
        return np.zeros((side, side), dtype=np.float32)
    if texture == "striped":
        return (((u + v) * 6) % 1 < 0.45).astype(np.float32)
    if texture == "dotted":
        p = 1 / 6
        du, dv = (u % p) - p / 2, (v % p) - p / 2
        return (du * du + dv * dv < (p * 0.28) ** 2).astype(np.float32)
    if texture == "checkered":
        return ((np.floor(u * 6) + np.floor(v * 6)) % 2).astype(np.float32)
    raise ValueError(f"unknown fill texture {texture!r} (known: {', '.join(FILL_TEXTURES)})")


def _erode(mask: np.ndarray, k: int) -> np.ndarray:
    """Binary erosion by a k x k square (separable min over shifted views); outside the array counts as empty,
    so a shape touching the border gets an outline there too."""
    r = k // 2
    padded = np.pad(mask, r, constant_values=False)
    h, w = mask.shape
    rows = padded[:, 0:w].copy()
    for d in range(1, k):
        rows &= padded[:, d: d + w]
    out = rows[0:h].copy()
    for d in range(1, k):
        out &= rows[d: d + h]
    return out


def render_shape(shape: str, colour: str, texture: str, side: int) -> np.ndarray:
    """A procedural object as RGBA uint8 (side x side x 4): ``shape`` filled with ``colour`` in the ``texture``
    pattern (second colour a light tint of the first) and outlined in a dark shade, on a transparent ground.

    The pattern scales with the object, so one (shape, colour, texture) looks the same at every size.
    """
    if colour not in PALETTE:
        raise ValueError(f"unknown colour {colour!r} (known: {', '.join(PALETTE)})")
    side = max(int(side), 8)
    cov = shape_mask(shape, side)
    base = np.array(PALETTE[colour], dtype=np.float32)
    light = base * 0.35 + 255 * 0.65
    dark = base * 0.45 if colour != "black" else np.array((0, 0, 0), dtype=np.float32)
    pat = _fill_pattern(texture, side)[..., None]
    fill = base[None, None, :] * (1 - pat) + light[None, None, :] * pat
    # Outline: the part of the shape outside its erosion, a few pixels wide whatever the size.
    k = max(3, (side // 40) * 2 + 1)
    inner = _erode(cov > 0.5, k).astype(np.float32)[..., None]
    rgb = fill * inner + dark[None, None, :] * (1 - inner)
    out = np.empty((side, side, 4), dtype=np.uint8)
    out[..., :3] = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    out[..., 3] = np.clip(cov * 255 + 0.5, 0, 255).astype(np.uint8)
    return out
