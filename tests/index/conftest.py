"""Fixtures for the index tests: generated galleries (PIL drawings, 48-96 px) and a tiny random model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

TINY = "python:simx.models.toy:tiny_linear"
COLOURS = {"red": (215, 30, 40), "green": (30, 160, 50), "blue": (30, 70, 215), "yellow": (240, 200, 0)}
SHAPES = ("ellipse", "rectangle", "triangle")


def draw(colour: tuple[int, int, int], seed: int, size: int | None = None, shape: str | None = None) -> Image.Image:
    """A random coloured shape on a light background, 48-96 px."""
    rng = np.random.default_rng(seed)
    side = int(size or rng.integers(48, 97))
    bg = tuple(int(v) for v in rng.integers(225, 256, 3))
    img = Image.new("RGB", (side, side), bg)
    d = ImageDraw.Draw(img)
    shape = shape or SHAPES[seed % len(SHAPES)]
    x0, y0 = (int(v) for v in rng.integers(0, side // 3, 2))
    x1, y1 = x0 + side // 2 + int(rng.integers(0, side // 6)), y0 + side // 2 + int(rng.integers(0, side // 6))
    if shape == "ellipse":
        d.ellipse([x0, y0, x1, y1], fill=colour)
    elif shape == "rectangle":
        d.rectangle([x0, y0, x1, y1], fill=colour)
    else:
        d.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=colour)
    return img


def make_gallery(folder: Path, labels: dict[str, int] | None = None, seed: int = 0, ext: str = ".png") -> Path:
    """A folder gallery ``folder/<label>/<i>.png``; ``labels`` maps a label (may contain '/') to its count."""
    labels = labels or {"red": 4, "green": 4, "blue": 4}
    for j, (label, n) in enumerate(labels.items()):
        colour = COLOURS[label.split("/")[-1]] if label.split("/")[-1] in COLOURS else (
            tuple(int(v) for v in np.random.default_rng(j).integers(0, 200, 3)))
        sub = folder / label
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            draw(colour, seed * 1000 + j * 100 + i).save(sub / f"{i}{ext}")
    return folder


@pytest.fixture
def tiny() -> str:
    return TINY


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "indexes"


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    return make_gallery(tmp_path / "gallery")


@pytest.fixture
def built(gallery: Path, root: Path):
    """A Flat cosine index of the 12-image gallery, built with the tiny model."""
    from simx.index import build_index

    return build_index(gallery, "g", model=TINY, root=root, workers=0, progress=False)


def repo_root() -> Path:
    import simx

    return Path(simx.__file__).resolve().parents[1]


def subprocess_env(*extra_paths: Path) -> dict[str, str]:
    """Environment for a ``python -m simx.cli`` child: simx and ``extra_paths`` importable, CPU only."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in extra_paths), str(repo_root()),
                                         env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env

