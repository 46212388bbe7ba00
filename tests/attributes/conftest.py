"""Fixtures for the SANE attribute tests: a procedural gallery whose attributes are visually unambiguous (one
coloured shape on a light background; attributes colour:* and shape:*), a colour-opponent model with planted
evidence, and a predictor trained once per session on the tiny random CNN."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

from simx.explain import FEATURE_CACHE
from simx.models.toy import PooledModel

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220)}
SHAPES = ("circle", "square", "triangle")
SIZE = 64


@pytest.fixture(autouse=True)
def _fresh_feature_cache():
    FEATURE_CACHE.clear()
    yield
    FEATURE_CACHE.clear()


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, colour: str, cx: int, cy: int, r: int) -> tuple[int, int, int, int]:
    box = (cx - r, cy - r, cx + r, cy + r)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return box


def scene(objects: list[tuple[str, str, int, int, int]], seed: int = 0, size: int = SIZE) -> Image.Image:
    """A light background with the given (shape, colour, cx, cy, r) objects."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(228, 250, 3)))
    d = ImageDraw.Draw(img)
    for shape, colour, cx, cy, r in objects:
        draw_shape(d, shape, colour, cx, cy, r)
    return img


def make_shapes_gallery(dest: Path, n: int = 108, seed: int = 0, size: int = SIZE) -> Path:
    """``n`` images, each one shape in one colour (balanced over the 9 combinations) at a random place; a
    manifest with ``attributes = colour:<c>;shape:<s>`` and the object's box."""
    rng = np.random.default_rng(seed)
    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        colour, shape = list(COLOURS)[i % 3], SHAPES[(i // 3) % 3]
        r = int(rng.integers(size // 5, size // 4 + 1))
        cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, 2))
        img = scene([(shape, colour, cx, cy, r)], seed=seed * 10_000 + i, size=size)
        name = f"img{i:03d}.png"
        img.save(dest / name)
        box = {"x0": cx - r, "y0": cy - r, "x1": cx + r, "y1": cy + r, "label": shape}
        rows.append({"id": f"img{i:03d}", "path": name, "attributes": f"colour:{colour};shape:{shape}",
                     "boxes": json.dumps([box])})
    with open(dest / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return dest / "manifest.csv"


@pytest.fixture(scope="session")
def shapes_manifest(tmp_path_factory) -> Path:
    return make_shapes_gallery(tmp_path_factory.mktemp("shapes"))


class ColourOpponent(nn.Module):
    """Per-pixel 'redness', 'greenness', 'blueness' (ReLU of a channel minus the mean of the other two, in
    normalised units), average-pooled 4 x 4: a light grey background gives zero features, a coloured object
    a positive value in its colour's channel. Nothing random: the evidence is planted."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        w = torch.full((3, 3), -0.5)
        w.fill_diagonal_(1.0)
        with torch.no_grad():
            self.conv.weight.copy_(w.view(3, 3, 1, 1))
        self.pool = nn.AvgPool2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.conv(x)))


def colour_model() -> PooledModel:
    """GAP of the colour-opponent map, cosine similarity: images match by the colours of their objects."""
    return PooledModel(ColourOpponent(), None, metric="cosine", size=SIZE, spec="test:colour-opponent")


@pytest.fixture
def colour_opponent_model() -> PooledModel:
    return colour_model()
