"""Generated multi-object scenes with ground-truth boxes: the gallery for explanation checks (pointing game).

:func:`generate_scenes` writes ``n`` square PNG scenes plus a ``manifest.csv`` that
:func:`simx.data.open_gallery` reads. Each scene holds 2 or 3 objects (half the scenes each), alpha-composited on
a procedural background, each object scaled so its longest side is 30-50% of the scene and placed so that any two
object boxes have IoU < 0.1. Everything is fixed by ``seed``: scene ``i`` draws its background and layout from
``numpy.random.default_rng([seed, 0, i])``, the object plan comes from ``default_rng([seed, 1])`` and the
shortcut background assignment from ``default_rng([seed, 2])``, so the same call writes the same bytes.

Objects
    With a stamps folder (see :mod:`simx.demo.stamps`), objects are Tux Paint stamps: object id = stamp id
    (``animals/birds/blackbird``), category = top folder (``animals``), leaf = folder path (``animals/birds``).
    Without one (``stamps_dir=None`` or no usable stamp), objects are procedural shapes (:mod:`simx.demo.textures`):
    object id = ``<shape>-<colour>-<texture>-<size>`` (``star-red-striped-large``), category = shape (``star``),
    leaf = ``<shape>/<colour>`` (``star/red``).

Reuse
    Every object placed is planned to appear in at least two different scenes (never twice in one), so every
    scene shares at least one exact object with another scene: the "same instance" ground truth always exists.

Variants
    ``plain``: light random colour, gentle gradient, mild noise; background id ``plain-<i>`` (one per scene).
    ``shortcut``: one of 8 strongly textured backgrounds (``texture-<k>``, k = 0..7, balanced over scenes) chosen
    independently of the objects, so a model that keys on texture finds "neighbours" that share nothing but the
    background: the background-shortcut demonstration.

Manifest columns
    ``id`` (``scene_0000``), ``path`` (file name relative to the manifest), ``label`` (category of the largest
    object), ``labels`` (the categories of all its objects, ``|``-separated, the largest object's first: a
    neighbour is a correct match when it shares one, see :mod:`simx.relevance`), ``attributes``, ``boxes``,
    ``background``, ``seed`` (the gallery seed), ``n_objects``, ``source`` (``stamps`` or ``procedural``).

Attribute convention (``;``-separated, sorted, unique)
    Bare tokens are categories: every top-level category and every leaf path present
    (``animals;animals/birds;food;food/fruit``). Procedural scenes add ``key:value`` tokens for each object's
    attributes: ``shape:<shape>``, ``colour:<colour>``, ``texture:<solid|striped|dotted|checkered>``,
    ``size:<small|large>``. A token with ``:`` is thus an attribute, one without is a category.

Boxes
    JSON list, one dict per object: ``x0, y0, x1, y1`` (integer pixels in scene coordinates, ``x1``/``y1``
    exclusive: the tight box of alpha > 32), ``label`` (= ``category``), ``stamp`` (object id), ``category`` (top
    level), ``leaf``; plus ``description`` for stamps that have one, and ``shape, colour, texture, size`` for
    procedural objects.

The build is atomic (temp folder renamed into place) and idempotent: a ``.complete.json`` marker records the
parameters and a matching gallery is returned as is; other parameters rebuild it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data import LABELS_SEPARATOR
from .stamps import StampRecord, build_atomically, progress_bar, read_marker, stamp_pool, write_marker
from .textures import (
    FILL_TEXTURES,
    N_SHORTCUT_TEXTURES,
    PALETTE,
    SHAPES,
    SIZE_CLASSES,
    plain_background,
    render_shape,
    shortcut_background,
    shortcut_texture_name,
)

log = logging.getLogger(__name__)

#: Bumped whenever the generator's output changes for the same parameters, so old galleries are rebuilt.
SCENES_FORMAT = 2  # 2: the manifest's ``labels`` column (every object's category)
VARIANTS = ("plain", "shortcut")
MANIFEST_COLUMNS = ("id", "path", "label", "labels", "attributes", "boxes", "background", "seed", "n_objects",
                    "source")
#: Longest side of an object, as fractions of the scene side (stamps; procedural objects use their size class).
OBJECT_SCALE = (0.30, 0.50)
#: Maximum IoU between two object boxes of one scene.
MAX_IOU = 0.1
#: Alpha above which a pixel belongs to an object's tight box.
ALPHA_THRESHOLD = 32
#: Fewer usable stamps than this and the scenes use procedural objects instead.
MIN_STAMP_POOL = 6
_PNG_COMPRESS = 1  # the noise is incompressible anyway; level 1 halves encoding time


@dataclass(frozen=True)
class SceneObject:
    """A reusable scene object: a stamp or a procedural shape."""

    object_id: str
    category: str
    leaf: str
    stamp: StampRecord | None = None
    description: str | None = None
    #: Procedural attributes (shape, colour, texture, size); empty for stamps.
    attrs: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def scale_range(self) -> tuple[float, float]:
        """Range of the longest side in fractions of the scene side."""
        return SIZE_CLASSES[self.attrs["size"]] if "size" in self.attrs else OBJECT_SCALE


def procedural_objects() -> list[SceneObject]:
    """Every procedural object (shape x colour x texture x size), sorted by id."""
    out = []
    for shape in SHAPES:
        for colour in PALETTE:
            for texture in FILL_TEXTURES:
                for size in SIZE_CLASSES:
                    out.append(
                        SceneObject(
                            object_id=f"{shape}-{colour}-{texture}-{size}",
                            category=shape,
                            leaf=f"{shape}/{colour}",
                            attrs={"shape": shape, "colour": colour, "texture": texture, "size": size},
                        )
                    )
    return sorted(out, key=lambda o: o.object_id)


def stamp_objects(stamps_dir: Path | None) -> list[SceneObject]:
    """Scene objects made from the usable stamps of ``stamps_dir`` (empty when None or nothing usable)."""
    if stamps_dir is None:
        return []
    return [
        SceneObject(object_id=s.stamp_id, category=s.top, leaf=s.leaf, stamp=s, description=s.description)
        for s in stamp_pool(Path(stamps_dir))
    ]


# --------------------------------------------------------------------------------------------- planning


def plan_scenes(rng: np.random.Generator, n: int, pool_size: int) -> list[list[int]]:
    """Object indices (into the pool) for each of ``n`` scenes.

    Half the scenes (rounded up) get 2 objects, the rest 3, in random order. Distinct objects are drawn from the
    pool so that each is used at least twice (more only when the pool is too small; with ``n == 2`` the odd
    fifth slot holds a single-use object), then dealt out so that no scene holds one object twice. Hence every
    scene shares an exact object with at least one other scene.
    """
    if n < 2:
        raise ValueError("need at least 2 scenes so that every scene can share an object with another")
    if pool_size < 4:
        raise ValueError(f"need at least 4 distinct objects to plan scenes, got {pool_size}")
    counts = np.array([2] * ((n + 1) // 2) + [3] * (n // 2))
    rng.shuffle(counts)
    total = int(counts.sum())
    k = min(pool_size, total // 2)
    reps = np.full(k, total // k)
    reps[: total - int(reps.sum())] += 1
    if reps.max() > n:
        # only n == 2 (2 + 3 objects): a third use would need a third scene, so the odd slot gets an object of
        # its own; both scenes still share the other two
        reps[reps > n] = n
        reps = np.append(reps, total - int(reps.sum()))
        k += 1
    chosen = rng.permutation(pool_size)[:k]
    occ = np.repeat(chosen, reps)
    rng.shuffle(occ)
    bounds = np.cumsum(counts)[:-1]
    scenes = [list(map(int, s)) for s in np.split(occ, bounds)]
    _repair_duplicates(rng, scenes)
    return scenes


def _repair_duplicates(rng: np.random.Generator, scenes: list[list[int]]) -> None:
    """Swap slots between scenes until no scene holds the same object twice (in place)."""
    n = len(scenes)
    for _ in range(10_000):
        bad = [(i, j) for i, s in enumerate(scenes) for j in range(len(s)) if s[j] in s[:j]]
        if not bad:
            return
        for i, j in bad:
            val = scenes[i][j]
            if val not in scenes[i][:j]:
                continue  # fixed by an earlier swap
            for _ in range(1000):
                o = int(rng.integers(n))
                if o == i:
                    continue
                m = int(rng.integers(len(scenes[o])))
                other = scenes[o][m]
                rest_i = scenes[i][:j] + scenes[i][j + 1:]
                rest_o = scenes[o][:m] + scenes[o][m + 1:]
                if other not in rest_i and val not in rest_o:
                    scenes[i][j], scenes[o][m] = other, val
                    break
    raise RuntimeError("could not plan scenes without repeated objects; use a larger object pool")


# --------------------------------------------------------------------------------------------- rendering


def _tight_crop(rgba: np.ndarray) -> np.ndarray:
    """``rgba`` cropped to its alpha > threshold box (unchanged if no pixel passes)."""
    mask = rgba[..., 3] > ALPHA_THRESHOLD
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return rgba
    return rgba[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]


class _ObjectRenderer:
    """Turns a :class:`SceneObject` into a tightly cropped RGBA array of a given longest side (stamps cached)."""

    def __init__(self) -> None:
        self._stamps: dict[str, Image.Image] = {}
        self._shape_fill: dict[str, float] = {}

    def _fill_ratio(self, shape: str) -> float:
        """Longest side of the drawn shape over its canvas side (a star does not reach every edge)."""
        r = self._shape_fill.get(shape)
        if r is None:
            crop = _tight_crop(render_shape(shape, "black", "solid", 200))
            r = self._shape_fill[shape] = max(crop.shape[:2]) / 200
        return r

    def _stamp_image(self, obj: SceneObject) -> Image.Image:
        img = self._stamps.get(obj.object_id)
        if img is None:
            assert obj.stamp is not None
            with Image.open(obj.stamp.path) as im:
                im.load()
                rgba = np.asarray(im.convert("RGBA"))
            img = Image.fromarray(np.ascontiguousarray(_tight_crop(rgba)), mode="RGBA")
            self._stamps[obj.object_id] = img
        return img

    def render(self, obj: SceneObject, longest: int) -> np.ndarray:
        longest = max(int(longest), 8)
        if obj.stamp is None:
            a = obj.attrs
            side = round(longest / self._fill_ratio(a["shape"]))
            return _tight_crop(render_shape(a["shape"], a["colour"], a["texture"], side))
        src = self._stamp_image(obj)
        w, h = src.size
        # Resampling can push faint edges (soft shadows) under the alpha threshold and shrink the tight box, so
        # the resize target is corrected a few times and the closest result kept.
        target, best = longest, None
        for _ in range(4):
            f = target / max(w, h)
            size = (max(1, round(w * f)), max(1, round(h * f)))
            out = _tight_crop(np.asarray(src.resize(size, Image.LANCZOS)))
            got = max(out.shape[:2])
            if best is None or abs(got - longest) < abs(max(best.shape[:2]) - longest):
                best = out
            if abs(got - longest) <= 1 or got == 0:
                break
            target = max(1, round(target * longest / got))
        return best


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of candidate boxes ``box`` (Kx4) against each of ``others`` (Mx4); boxes are [x0, y0, x1, y1)."""
    ix = np.clip(np.minimum(box[:, None, 2], others[None, :, 2]) - np.maximum(box[:, None, 0], others[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(box[:, None, 3], others[None, :, 3]) - np.maximum(box[:, None, 1], others[None, :, 1]), 0, None)
    inter = ix * iy
    a = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
    b = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / (a[:, None] + b[None, :] - inter)


def _layout(
    rng: np.random.Generator, objs: list[SceneObject], size: int, renderer: _ObjectRenderer
) -> list[tuple[SceneObject, np.ndarray, int, int]]:
    """Scale and place ``objs`` (largest first) so all boxes lie inside the scene with pairwise IoU < 0.1.

    A failed placement redraws the whole layout from ``rng`` (deterministic); after many failures the scales are
    shrunk a little, which keeps any layout feasible.
    """
    shrink = 1.0
    for attempt in range(200):
        if attempt and attempt % 50 == 0:
            shrink *= 0.9
        scales = [rng.uniform(*o.scale_range) * shrink for o in objs]
        order = np.argsort(scales, kind="stable")[::-1]
        placed: list[tuple[SceneObject, np.ndarray, int, int]] = []
        boxes = np.zeros((0, 4), dtype=np.float64)
        for idx in order:
            arr = renderer.render(objs[idx], round(scales[idx] * size))
            h, w = arr.shape[:2]
            xs = rng.integers(0, size - w + 1, 128)
            ys = rng.integers(0, size - h + 1, 128)
            cand = np.stack([xs, ys, xs + w, ys + h], axis=1).astype(np.float64)
            if len(boxes):
                ok = np.flatnonzero(_iou(cand, boxes).max(axis=1) < MAX_IOU)
                if ok.size == 0:
                    break
                pick = int(ok[0])
            else:
                pick = 0
            x0, y0 = int(xs[pick]), int(ys[pick])
            placed.append((objs[idx], arr, x0, y0))
            boxes = np.vstack([boxes, cand[pick]])
        else:
            return placed
    raise RuntimeError("could not place the scene objects without overlap")


def _composite(canvas: np.ndarray, arr: np.ndarray, x0: int, y0: int) -> None:
    """Alpha-composite RGBA ``arr`` onto float32 RGB ``canvas`` at (x0, y0), in place."""
    h, w = arr.shape[:2]
    region = canvas[y0: y0 + h, x0: x0 + w]
    a = arr[..., 3:4].astype(np.float32) / 255.0
    region *= 1.0 - a
    region += arr[..., :3].astype(np.float32) * a


def _png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img, mode="RGB").save(buf, format="PNG", compress_level=_PNG_COMPRESS)
    return buf.getvalue()


def _box_record(obj: SceneObject, arr: np.ndarray, x0: int, y0: int) -> dict[str, Any]:
    h, w = arr.shape[:2]
    rec: dict[str, Any] = {
        "x0": x0, "y0": y0, "x1": x0 + w, "y1": y0 + h,
        "label": obj.category, "stamp": obj.object_id, "category": obj.category, "leaf": obj.leaf,
    }
    if obj.description:
        rec["description"] = obj.description
    rec.update(obj.attrs)
    return rec


def scene_labels(primary: str, categories: list[str]) -> str:
    """The scene's ``labels`` cell: ``primary`` first, then its other objects' categories, sorted, unique."""
    return LABELS_SEPARATOR.join([primary, *sorted(set(categories) - {primary})])


def _attributes(objs: list[SceneObject]) -> str:
    tokens: set[str] = set()
    for o in objs:
        tokens.update((o.category, o.leaf))
        tokens.update(f"{k}:{v}" for k, v in o.attrs.items())
    return ";".join(sorted(tokens))


# --------------------------------------------------------------------------------------------- public API


def _pool_signature(objs: list[SceneObject]) -> str:
    """A short hash of the object pool, so a changed stamps folder triggers a rebuild."""
    h = hashlib.sha1()
    for o in objs:
        extra = f"{o.stamp.width}x{o.stamp.height}:{o.stamp.path.stat().st_size}" if o.stamp is not None else ""
        h.update(f"{o.object_id}:{extra}\n".encode())
    return h.hexdigest()[:16]


def generate_scenes(
    dest: Path,
    n: int = 300,
    size: int = 320,
    seed: int = 0,
    variant: str = "plain",
    stamps_dir: Path | None = None,
    progress: bool = True,
) -> Path:
    """Write ``n`` scenes of ``size`` px into ``dest`` and return ``dest/manifest.csv``.

    Objects are stamps from ``stamps_dir`` when it holds enough usable ones, else procedural shapes (logged).
    ``variant`` is ``"plain"`` (light backgrounds, objects drive similarity) or ``"shortcut"`` (8 strong
    textures that dominate similarity). See the module docstring for the manifest format. Returns at once when
    ``dest`` already holds a complete gallery made with the same parameters.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if size < 64:
        raise ValueError(f"scene size must be at least 64 px, got {size}")
    if n < 2:
        raise ValueError(f"need at least 2 scenes (every scene shares an object with another), got {n}")
    dest = Path(dest)
    manifest = dest / "manifest.csv"

    pool = stamp_objects(stamps_dir)
    source = "stamps"
    if len(pool) < MIN_STAMP_POOL:
        if stamps_dir is not None:
            log.warning("only %d usable stamps in %s; using procedural shapes instead", len(pool), stamps_dir)
        pool, source = procedural_objects(), "procedural"
    params = {
        "format": SCENES_FORMAT, "kind": "scenes", "n": int(n), "size": int(size), "seed": int(seed),
        "variant": variant, "source": source, "pool": _pool_signature(pool),
    }
    marker = read_marker(dest)
    if marker is not None and marker.get("params") == params and manifest.is_file():
        if sum(1 for _ in dest.glob("scene_*.png")) == n:
            log.debug("scenes already generated in %s", dest)
            return manifest

    plan = plan_scenes(np.random.default_rng([seed, 1]), n, len(pool))
    bg_rng = np.random.default_rng([seed, 2])
    textures = bg_rng.permutation(np.arange(n) % N_SHORTCUT_TEXTURES)
    renderer = _ObjectRenderer()
    rows = []
    with build_atomically(dest) as tmp:
        for i in progress_bar(range(n), n, f"scenes ({variant})", progress):
            rng = np.random.default_rng([seed, 0, i])
            if variant == "plain":
                bg, bg_id = plain_background(rng, size), f"plain-{i}"
            else:
                k = int(textures[i])
                bg, bg_id = shortcut_background(rng, size, k), f"texture-{k}"
            objs = [pool[j] for j in plan[i]]
            placed = _layout(rng, objs, size, renderer)
            canvas = bg.astype(np.float32)
            boxes = []
            for obj, arr, x0, y0 in placed:
                _composite(canvas, arr, x0, y0)
                boxes.append(_box_record(obj, arr, x0, y0))
            name = f"scene_{i:04d}.png"
            (tmp / name).write_bytes(_png_bytes(np.clip(canvas + 0.5, 0, 255).astype(np.uint8)))
            areas = [(b["x1"] - b["x0"]) * (b["y1"] - b["y0"]) for b in boxes]
            primary = boxes[int(np.argmax(areas))]["category"]
            rows.append({
                "id": f"scene_{i:04d}",
                "path": name,
                "label": primary,
                "labels": scene_labels(primary, [b["category"] for b in boxes]),
                "attributes": _attributes(objs),
                "boxes": json.dumps(boxes, separators=(",", ":")),
                "background": bg_id,
                "seed": int(seed),
                "n_objects": len(boxes),
                "source": source,
            })
        with open(tmp / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS))
            writer.writeheader()
            writer.writerows(rows)
        info = {"params": params, "n_images": n, "stamps_dir": str(stamps_dir) if source == "stamps" else None}
        if variant == "shortcut":
            info["backgrounds"] = {f"texture-{k}": shortcut_texture_name(k) for k in range(N_SHORTCUT_TEXTURES)}
        write_marker(tmp, info)
    log.info("generated %d %s scenes (%s objects) in %s", n, variant, source, dest)
    return manifest


def generate_shape_stamps(dest: Path, side: int = 160, progress: bool = True) -> Path:
    """Write every procedural object (shape x colour x texture) once as a transparent PNG folder gallery.

    Layout ``dest/<shape>/<colour>/<shape>-<colour>-<texture>.png`` (label = ``shape/colour``) with a ``.txt``
    description ("A red striped star."): the stand-in for the Tux Paint stamps gallery when the package cannot be
    had, readable by :func:`simx.data.open_gallery` and usable as a ``stamps_dir`` for scenes. Atomic and
    idempotent like the other demo builders.
    """
    dest = Path(dest)
    params = {"format": SCENES_FORMAT, "kind": "shape-stamps", "side": int(side)}
    n_expected = len(SHAPES) * len(PALETTE) * len(FILL_TEXTURES)
    marker = read_marker(dest)
    if marker is not None and marker.get("params") == params and sum(1 for _ in dest.rglob("*.png")) == n_expected:
        return dest
    combos = [(s, c, t) for s in SHAPES for c in PALETTE for t in FILL_TEXTURES]
    with build_atomically(dest) as tmp:
        for shape, colour, texture in progress_bar(combos, len(combos), "shapes", progress):
            folder = tmp / shape / colour
            folder.mkdir(parents=True, exist_ok=True)
            rgba = render_shape(shape, colour, texture, side)
            stem = f"{shape}-{colour}-{texture}"
            buf = io.BytesIO()
            Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG", compress_level=_PNG_COMPRESS)
            (folder / f"{stem}.png").write_bytes(buf.getvalue())
            fill = "" if texture == "solid" else f"{texture} "
            article = "An" if colour[0] in "aeiou" else "A"
            (folder / f"{stem}.txt").write_text(f"{article} {colour} {fill}{shape}.\n", encoding="utf-8")
        write_marker(tmp, {"params": params, "n_images": n_expected})
    log.info("generated %d procedural shape stamps in %s", n_expected, dest)
    return dest
