"""Demo galleries: real Tux Paint stamps and generated scenes with ground-truth boxes.

Three galleries, built under one data root by :func:`prepare_demo_galleries` (``simx demo`` then indexes each):

* ``stamps``: the Tux Paint stamps (:func:`prepare_stamps`), a folder gallery labelled by category path. The
  images are GPL-2+ and come from the Debian package at setup time, never from the repository. When the package
  cannot be had, a procedural shape gallery stands in (folder ``shapes``) and a warning says how to get the stamps.
* ``scenes``: 2-3 objects on light plain backgrounds (:func:`generate_scenes`, ``variant="plain"``); objects are
  stamps when available, else procedural shapes. Boxes make explanation maps checkable (pointing game).
* ``shortcut``: the same kind of scenes on 8 strong textured backgrounds, where texture dominates similarity:
  a deliberately flawed gallery to show what a background shortcut looks like in the debugger.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .scenes import generate_scenes, generate_shape_stamps
from .stamps import HOW_TO_GET_STAMPS, StampRecord, prepare_stamps, stamp_pool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoGallery:
    """What one demo gallery is, for the CLI and the dashboard: its key, folder under the data root, a title
    and a one-paragraph description, and whether its source is a folder or a ``manifest.csv``."""

    name: str
    folder: str
    title: str
    description: str
    kind: str  # "folder" or "manifest"


DEMO_GALLERIES: dict[str, DemoGallery] = {
    "stamps": DemoGallery(
        name="stamps",
        folder="stamps",
        title="Tux Paint stamps",
        description=(
            "About 630 categorised clip-art and cut-out photo stamps from the Debian package "
            "tuxpaint-stamps-default (GPL-2+), labelled by category path such as animals/birds, with English "
            "descriptions. Falls back to procedural shapes (folder 'shapes') when the package is unavailable."
        ),
        kind="folder",
    ),
    "scenes": DemoGallery(
        name="scenes",
        folder="scenes",
        title="Scenes (plain backgrounds)",
        description=(
            "Generated scenes of 2-3 stamps (or procedural shapes) on light plain backgrounds, with a tight box, "
            "stamp id and categories for every object; every scene shares an exact object with another scene. "
            "Objects drive similarity, so explanation maps should point at the shared objects."
        ),
        kind="manifest",
    ),
    "shortcut": DemoGallery(
        name="shortcut",
        folder="shortcut",
        title="Scenes (background shortcut)",
        description=(
            "The same kind of scenes on 8 strongly textured backgrounds chosen independently of the objects. "
            "Neighbours tend to share the background, not the objects: a background shortcut to diagnose."
        ),
        kind="manifest",
    ),
}

#: Folder of the procedural stand-in for the stamps gallery.
SHAPES_FOLDER = "shapes"


def prepare_demo_galleries(
    data_root: Path,
    which: Iterable[str] = ("stamps", "scenes", "shortcut"),
    n_scenes: int = 300,
    progress: bool = True,
) -> dict[str, Path]:
    """Build the requested demo galleries under ``data_root`` and return name -> gallery source.

    The source is what :func:`simx.data.open_gallery` takes: the stamps folder, or a scenes ``manifest.csv``.
    Scenes use the stamps as objects whenever the stamps can be prepared (even if ``stamps`` itself is not
    requested), else procedural shapes. If the stamps are unavailable, ``"stamps"`` maps to a procedural shape
    folder instead and a warning explains how to install the real ones. Each builder is idempotent, so a
    second call only checks the markers.
    """
    wanted = list(dict.fromkeys(which))
    unknown = [w for w in wanted if w not in DEMO_GALLERIES]
    if unknown:
        raise ValueError(f"unknown demo gallery {', '.join(unknown)} (known: {', '.join(DEMO_GALLERIES)})")
    root = Path(data_root)
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    stamps_dir = prepare_stamps(root / DEMO_GALLERIES["stamps"].folder, progress=progress)
    if stamps_dir is None:
        log.warning("demo: using procedural shapes instead of Tux Paint stamps; for the real gallery %s",
                    HOW_TO_GET_STAMPS)
    if "stamps" in wanted:
        out["stamps"] = stamps_dir if stamps_dir is not None else generate_shape_stamps(
            root / SHAPES_FOLDER, progress=progress
        )
    for name, variant in (("scenes", "plain"), ("shortcut", "shortcut")):
        if name in wanted:
            out[name] = generate_scenes(
                root / DEMO_GALLERIES[name].folder,
                n=n_scenes,
                variant=variant,
                stamps_dir=stamps_dir,
                progress=progress,
            )
    return out


__all__ = [
    "DEMO_GALLERIES",
    "DemoGallery",
    "StampRecord",
    "generate_scenes",
    "generate_shape_stamps",
    "prepare_demo_galleries",
    "prepare_stamps",
    "stamp_pool",
]
