"""``simx demo``: build the demo galleries and their indexes in one go, idempotently.

Galleries go under the data root (``./data/demo`` unless ``--data`` or ``SIMX_DATA`` says otherwise), indexes
under the index root (``./indexes`` unless ``--root`` or ``SIMX_INDEXES``), one index per gallery with the
default model. A second run checks the gallery markers and the stored fingerprints and does nothing when all is
up to date; a changed gallery is brought up to date with ``--update`` semantics (only changed files re-embedded).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..data import file_fingerprint, open_gallery
from ..index import build_index, open_index
from ..index.layout import index_dir
from . import DEMO_GALLERIES, prepare_demo_galleries

DATA_ENV = "SIMX_DATA"
#: Preprocessing fit per gallery: stamps and scenes are letterboxed on white so nothing is cut.
DEMO_FIT = "pad"


def data_root(path: str | os.PathLike | None = None) -> Path:
    """``path``, else ``$SIMX_DATA``, else ``./data/demo``."""
    return Path(path or os.environ.get(DATA_ENV) or Path("data") / "demo")


@dataclass
class DemoIndex:
    name: str
    source: Path
    status: str  # "built", "updated" or "up to date"
    embedded: int
    skipped: int


def _up_to_date(name: str, source: Path, root) -> bool:
    """True when the index exists, was built from ``source``, every gallery file has its stored fingerprint and
    every item its stored labels (an index of an older format or gallery generator is brought up to date)."""
    if not (index_dir(name, root) / "meta.json").exists():
        return False
    idx = open_index(name, root=root)
    if Path(idx.meta.get("source", "")) != source.resolve():
        return False
    stored = dict(zip(idx.ids, idx.fingerprints))
    skipped = {s["id"] for s in idx.meta.get("skipped", [])}
    items = open_gallery(source)
    if {it.id for it in items} != set(stored) | skipped:
        return False
    labels = {it.id: it.labels for it in idx.items}
    return all(it.id in skipped or (stored.get(it.id) == file_fingerprint(it.path) and labels.get(it.id) == it.labels)
               for it in items)


def build_demo(which: Iterable[str] = ("stamps", "scenes", "shortcut"), data: str | os.PathLike | None = None,
               root: str | os.PathLike | None = None, model: str = "default", n_scenes: int = 300,
               progress: bool | None = True) -> list[DemoIndex]:
    """Prepare the demo galleries and build (or update) one index per gallery, named after the gallery."""
    sources = prepare_demo_galleries(data_root(data), which=which, n_scenes=n_scenes, progress=bool(progress))
    out = []
    for name, source in sources.items():
        source = Path(source).resolve()
        if _up_to_date(name, source, root):
            idx = open_index(name, root=root)
            out.append(DemoIndex(name, source, "up to date", len(idx), len(idx.meta.get("skipped", []))))
            continue
        exists = (index_dir(name, root) / "meta.json").exists()
        res = build_index(source, name, model=None if exists else model, fit=None if exists else DEMO_FIT,
                          update=exists, root=root, progress=progress)
        out.append(DemoIndex(name, source, "updated" if exists else "built", res.meta["counts"]["embedded"],
                             res.meta["counts"]["skipped"]))
    return out


def add_arguments(p) -> None:
    p.add_argument("galleries", nargs="*", metavar="GALLERY", help=f"which demo galleries to build: {', '.join(DEMO_GALLERIES)} "
                                           "(default: all)")
    p.add_argument("--data", metavar="DIR", default=None,
                   help=f"where the gallery images go (default: ${DATA_ENV}, else ./data/demo)")
    p.add_argument("--root", metavar="DIR", default=None,
                   help="folder holding the indexes (default: $SIMX_INDEXES, else ./indexes)")
    p.add_argument("--model", metavar="SPEC", default="default", help="model spec for the demo indexes")
    p.add_argument("--scenes", type=int, default=300, metavar="N", help="number of generated scenes per scene gallery")


def run(args) -> int:
    import sys

    from ..errors import UsageError

    which = args.galleries or list(DEMO_GALLERIES)
    unknown = [w for w in which if w not in DEMO_GALLERIES]
    if unknown:
        raise UsageError(f"unknown demo gallery {', '.join(unknown)}; choose from {', '.join(DEMO_GALLERIES)}")
    progress = not args.quiet and sys.stderr.isatty()
    for d in build_demo(which, data=args.data, root=args.root, model=args.model, n_scenes=args.scenes,
                        progress=progress):
        print(f"{d.name:<9} {d.status:<11} {d.embedded} images embedded, {d.skipped} skipped  ({d.source})")
    return 0


COMMAND = ("demo", add_arguments, run,
           "build the demo galleries (Tux Paint stamps, generated scenes) and their indexes; idempotent")
