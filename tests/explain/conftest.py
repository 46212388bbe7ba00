"""Fixtures for the explanation tests: random PIL images and a model with planted evidence (tiny, CPU, 64 px)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from simx.explain import FEATURE_CACHE
from simx.models.toy import PooledModel, tiny_trunk


@pytest.fixture(autouse=True)
def _fresh_feature_cache():
    """Tests must not see each other's cached features (models are rebuilt with the same ids)."""
    FEATURE_CACHE.clear()
    yield
    FEATURE_CACHE.clear()


def _random_image(seed: int, size: int = 64, mode: str = "RGB") -> Image.Image:
    """A smooth random picture: 8 x 8 random colours upsampled bicubically plus a little pixel noise."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    arr = np.clip(np.asarray(low, np.float32) + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr).convert(mode)


@pytest.fixture
def random_images():
    """Factory: ``random_images(n, seed=0, size=64, mode="RGB")`` -> list of n distinct random PIL images."""

    def make(n: int, seed: int = 0, size: int = 64, mode: str = "RGB") -> list[Image.Image]:
        return [_random_image(seed * 1000 + i, size, mode) for i in range(n)]

    return make


class _FixedMask(nn.Module):
    """Multiplies its input by a fixed spatial 0/1 mask (a buffer; nothing to learn)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.view(1, 1, *mask.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


@pytest.fixture
def planted_model():
    """Factory: ``planted_model(metric="cosine", box=(32, 16, 56, 40), head=None, pool="avg", seed=0)``
    -> ``(model, (x0, y0, x1, y1))``, a 64 px :class:`PooledModel` whose similarity depends ONLY on the pixels
    inside the box (input pixel coordinates, x1/y1 exclusive, multiples of the feature stride 4).

    The trunk is ``input mask -> tiny_trunk -> feature mask``: pixels outside the box are set to 0 (the dataset
    mean colour in normalised space) before the convolutions, and feature positions outside the box are zeroed
    after them, so (a) no pixel outside the box can change the embedding (perturbation methods must give it zero
    attribution) and (b) the feature map is exactly 0 outside the box's cells (feature methods' maps vanish there).
    ``head`` is an ``nn.Module`` after the pooling (default identity; an ``nn.Linear(16, D)`` keeps the closed forms).
    """

    def make(metric: str = "cosine", box: tuple[int, int, int, int] = (32, 16, 56, 40), head: nn.Module | None = None,
             pool: str = "avg", seed: int = 0, size: int = 64, channels: int = 16):
        stride = 4
        x0, y0, x1, y1 = box
        if any(v % stride for v in box) or not (0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size):
            raise ValueError(f"box {box} must lie inside the {size} px image on multiples of {stride}")
        pix = torch.zeros(size, size)
        pix[y0:y1, x0:x1] = 1
        cells = torch.zeros(size // stride, size // stride)
        cells[y0 // stride : y1 // stride, x0 // stride : x1 // stride] = 1
        trunk = nn.Sequential(_FixedMask(pix), tiny_trunk(channels, seed), _FixedMask(cells))
        model = PooledModel(trunk, head, pool=pool, metric=metric, size=size, spec="test:planted", device="cpu")
        return model, box

    return make


@pytest.fixture
def check_planted(random_images):
    """``check_planted(model, box, method, pairs=4, **params)``: explains ``pairs`` random (query, neighbour)
    pairs with a :func:`planted_model` and asserts, on both sides, that the pixel map's maximum lies inside the box;
    where the method gives feature maps, also that their maximum is positive and inside the box's cells and that
    they are exactly 0 outside (the features are 0 there). Returns the explanations."""
    from simx.explain import explain

    def check(model, box, method: str, pairs: int = 4, **params):
        x0, y0, x1, y1 = box
        out = []
        for i in range(pairs):
            q, n = random_images(2, seed=100 + i)
            exp = explain(model, q, [n], method=method, **params)
            for fmaps, maps in ((exp.query_feature_maps, exp.query_maps),
                                (exp.neighbour_feature_maps, exp.neighbour_maps)):
                if fmaps is not None:
                    f = fmaps[0]
                    stride = model.input_size[0] // f.shape[0]
                    inside = np.zeros(f.shape, dtype=bool)
                    inside[y0 // stride : y1 // stride, x0 // stride : x1 // stride] = True
                    assert f.max() > 0, (method, i)
                    r, c = np.unravel_index(np.argmax(f), f.shape)
                    assert inside[r, c], (method, i, (r, c))
                    assert np.abs(f[~inside]).max() == 0, (method, i)
                r, c = np.unravel_index(np.argmax(maps[0]), maps[0].shape)
                assert y0 <= r < y1 and x0 <= c < x1, (method, i, (r, c))
            out.append(exp)
        return out

    return check
