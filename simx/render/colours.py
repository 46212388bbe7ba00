"""The one colour rule of every map simx draws (dashboard, PNG figure, HTML report, CLI).

* **Diverging, centred on the baseline.** A map value v is drawn as ``v - baseline`` through a diverging colormap
  (:data:`CMAP`, red = above the baseline: argues for the match; blue = below: argues against it; white = the
  baseline). The baseline is what the method's map means by "no effect": 0 for signed attributions and gradients,
  the mean masked score for RISE (whose map is a mean similarity such as 0.51-0.53, which would otherwise paint
  a uniform red wash). Methods record it in the explanation (``Explanation.query_baseline``); nothing is guessed
  here.
* **One absolute scale for the maps being compared.** :func:`shared_limit` is the largest ``|v - baseline|`` over
  every map of a comparison (both sides of a pair, several neighbours, contrast maps), so 0.917 and 0.902 look
  different and a weak map looks weak. :func:`limits` gives per-map scales instead when the caller asks
  (``per_map=True``: the dashboard's toggle), and says so in every legend.
* **Blended by magnitude, outlined.** :func:`overlay` blends the colour over the image in proportion to
  ``|v - baseline| / limit``, so neutral regions keep the picture, and draws contours at half the scale (solid
  around positive regions, dashed around negative ones, black on a white halo), so a map stays readable on a red
  or blue image where the colour alone would vanish.
* **Real values in the legend.** :func:`legend` draws the colour bar with the map's own values at both ends and at
  the baseline.

Colours come from one 256-entry lookup table, so the same map, limit and baseline give the same bytes everywhere.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: The diverging colormap (matplotlib name): red = above the baseline, blue = below.
CMAP = "RdBu_r"
#: Default opacity of a map at full scale.
ALPHA = 0.6
#: Contours are drawn where |v - baseline| crosses this fraction of the limit.
CONTOUR_LEVEL = 0.5
#: Dash period (pixels) of the contours around negative regions.
DASH = 4


@lru_cache(maxsize=8)
def _lut(cmap: str = CMAP) -> np.ndarray:
    """(256, 3) uint8 colours of ``cmap``; index 128 is the centre (the baseline)."""
    from matplotlib import colormaps

    rgba = colormaps[cmap](np.linspace(0.0, 1.0, 256))
    return (rgba[:, :3] * 255 + 0.5).astype(np.uint8)


def _finite(heat: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def relative(heat: np.ndarray, baseline: float = 0.0) -> np.ndarray:
    """``heat - baseline`` as float32 with NaN/inf set to the baseline (drawn as neutral)."""
    h = np.asarray(heat, dtype=np.float32)
    out = h - np.float32(baseline)
    return np.where(np.isfinite(out), out, np.float32(0.0))


def map_limit(heat: np.ndarray, baseline: float = 0.0) -> float:
    """The scale of one map: max ``|v - baseline|`` (1.0 for a map with no deviation, so it draws neutral)."""
    if np.size(heat) == 0:
        return 1.0
    lim = float(np.abs(relative(heat, baseline)).max())
    return lim if np.isfinite(lim) and lim > 0 else 1.0


def shared_limit(maps: Iterable[np.ndarray | None], baselines: Iterable[float] | float | None = None) -> float:
    """One absolute scale for the maps being compared: the largest ``|v - baseline|`` over all of them.

    ``maps``: any number of (H, W) arrays (None entries are skipped); ``baselines``: one per map, or one for all
    (default 0). An all-neutral set gives 1.0.
    """
    maps = list(maps)
    if baselines is None or np.isscalar(baselines):
        bases = [float(baselines or 0.0)] * len(maps)
    else:
        bases = [float(b) for b in baselines]
        if len(bases) != len(maps):
            raise ValueError(f"shared_limit: {len(maps)} maps but {len(bases)} baselines")
    lim = 0.0
    for m, b in zip(maps, bases):
        if m is not None and np.size(m):
            lim = max(lim, float(np.abs(relative(m, b)).max()))
    return lim if np.isfinite(lim) and lim > 0 else 1.0


def limits(maps: Sequence[np.ndarray | None], baselines: Sequence[float] | float | None = None,
           per_map: bool = False) -> list[float]:
    """The scale of each map: the shared limit for all (default) or each map's own (``per_map=True``)."""
    maps = list(maps)
    bases = [float(baselines or 0.0)] * len(maps) if baselines is None or np.isscalar(baselines) else \
        [float(b) for b in baselines]
    if not per_map:
        return [shared_limit(maps, bases)] * len(maps)
    return [map_limit(m, b) if m is not None else 1.0 for m, b in zip(maps, bases)]


def _positions(rel: np.ndarray, limit: float) -> np.ndarray:
    """Lookup-table indices (uint8) of relative values at ``limit``: -limit -> 0, 0 -> 128, +limit -> 255."""
    lim = float(limit) if limit and np.isfinite(limit) and limit > 0 else 1.0
    t = np.clip(0.5 + 0.5 * rel / lim, 0.0, 1.0)
    return np.rint(t * 255).astype(np.uint8)


def colorize(heat: np.ndarray, limit: float | None = None, baseline: float = 0.0, cmap: str = CMAP) -> np.ndarray:
    """(H, W) map -> (H, W, 3) uint8 colours of ``heat - baseline`` on the scale ``[-limit, +limit]``
    (default: the map's own max ``|v - baseline|``)."""
    rel = relative(heat, baseline)
    lim = map_limit(heat, baseline) if limit is None else limit
    return _lut(cmap)[_positions(rel, lim)]


def resize_map(heat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A map resized bilinearly to ``shape`` (H, W) (feature-resolution maps onto their image)."""
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape == tuple(shape):
        return heat
    img = Image.fromarray(_finite(heat), mode="F").resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def _edges(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (the region's inner boundary)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def _grow(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:, :] |= mask[:-1, :]
    out[:-1, :] |= mask[1:, :]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def contour_masks(rel: np.ndarray, limit: float, level: float = CONTOUR_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """(line, halo) boolean masks of the contours at ``+-level * limit``: solid around regions above the
    baseline, dashed (period :data:`DASH`) around regions below it; the halo is the line grown by one pixel."""
    lim = float(limit) if limit and limit > 0 else 1.0
    pos = _edges(rel >= level * lim)
    neg = _edges(rel <= -level * lim)
    yy, xx = np.indices(rel.shape)
    neg &= ((xx + yy) // DASH) % 2 == 0
    line = pos | neg
    return line, _grow(line) & ~line


def overlay(image: np.ndarray | Image.Image, heat: np.ndarray | None, *, limit: float | None = None,
            baseline: float = 0.0, alpha: float = ALPHA, outline: bool = True, cmap: str = CMAP) -> np.ndarray:
    """The image with a map drawn on it by the one colour rule; uint8 (H, W, 3).

    Each pixel's colour (from :func:`colorize`) is blended with weight ``alpha * |v - baseline| / limit``
    (clipped to [0, alpha]), so ``alpha = 0`` returns the image and neutral pixels keep it. ``limit`` is the
    comparison's shared scale (:func:`shared_limit`); the map's own by default. A map of another size is resized
    bilinearly to the image. With ``outline`` (and ``alpha > 0``), contours at half the scale (see
    :func:`contour_masks`) are drawn in black on a white halo. Everything after the map is keyword-only, so a
    scale can never be passed where an opacity was meant.
    """
    img = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if heat is None:
        return img.copy()
    heat = resize_map(heat, img.shape[:2])
    rel = relative(heat, baseline)
    lim = map_limit(heat, baseline) if limit is None else (float(limit) if limit and limit > 0 else 1.0)
    a = float(np.clip(alpha, 0.0, 1.0))
    colours = _lut(cmap)[_positions(rel, lim)].astype(np.float32)
    w = (a * np.clip(np.abs(rel) / lim, 0.0, 1.0))[..., None]
    out = ((img.astype(np.float32) * (1.0 - w) + colours * w) + 0.5).clip(0, 255).astype(np.uint8)
    if outline and a > 0:
        line, halo = contour_masks(rel, lim)
        out[halo] = 255
        out[line] = 0
    return out


def format_value(v: float) -> str:
    """A map value for a legend: 3 significant digits, no exponent for ordinary magnitudes."""
    v = float(v)
    if v == 0:
        return "0"
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 else f"{v:.2e}"


def scale_note(limit: float, baseline: float = 0.0, per_map: bool = False) -> str:
    """One line that says how a map is scaled, for captions and titles."""
    span = f"{format_value(baseline - limit)} .. {format_value(baseline + limit)}"
    centre = f"centred on the baseline {format_value(baseline)}" if baseline else "centred on 0"
    return f"{span}, {centre}, " + ("scaled per map" if per_map else "one scale for the maps compared")


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType's sized default font
        return ImageFont.load_default()


def legend(limit: float, baseline: float = 0.0, width: int = 320, low: str = "against the match",
           high: str = "for the match", per_map: bool = False, cmap: str = CMAP) -> np.ndarray:
    """The colour bar of a map as an RGB uint8 picture: the gradient from ``baseline - limit`` to
    ``baseline + limit`` with those real values and the baseline written under it, what each end means
    (``low`` / ``high``), and whether the scale is shared or per map."""
    width = max(int(width), 160)
    font = _font(12)
    bar_h, pad = 14, 4
    height = bar_h + 3 * 16 + 3 * pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    inner = width - 2 * pad
    ramp = _lut(cmap)[np.rint(np.linspace(0, 255, inner)).astype(np.uint8)]
    canvas.paste(Image.fromarray(np.repeat(ramp[None], bar_h, axis=0)), (pad, pad))
    draw.rectangle([pad - 1, pad - 1, pad + inner, pad + bar_h], outline=(80, 80, 80))
    y = pad + bar_h + 2
    for x, value, anchor in ((pad, baseline - limit, "la"), (pad + inner // 2, baseline, "ma"),
                             (pad + inner, baseline + limit, "ra")):
        draw.line([x, pad + bar_h, x, pad + bar_h + 3], fill=(80, 80, 80))
        draw.text((x, y + 2), format_value(value), fill=(20, 20, 20), font=font, anchor=anchor)
    draw.text((pad, y + 18), low, fill=(33, 102, 172), font=font, anchor="la")
    draw.text((pad + inner, y + 18), high, fill=(178, 24, 43), font=font, anchor="ra")
    draw.text((pad + inner // 2, y + 34), "scaled per map" if per_map else "one scale for the maps compared",
              fill=(90, 90, 90), font=font, anchor="ma")
    return np.asarray(canvas)


__all__ = ["CMAP", "ALPHA", "relative", "map_limit", "shared_limit", "limits", "colorize", "resize_map", "overlay",
           "contour_masks", "legend", "format_value", "scale_note"]
