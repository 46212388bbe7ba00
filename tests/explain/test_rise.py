"""``rise`` (methods.md 3.3): seeding, shared masks across sides, coverage normalisation, planted evidence, cost."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from simx.explain import FEATURE_CACHE, explain
from simx.explain.engine import PairContext
from simx.explain.masks import RiseMasks
from simx.models.toy import PooledModel, tiny_linear


def _similar(img: Image.Image, seed: int, sigma: float = 6.0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.asarray(img, np.float32) + rng.normal(0, sigma, (*img.size[::-1], 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def test_seed_determinism(random_images):
    model = tiny_linear()
    q, n1, n2 = random_images(3, seed=1)
    a = explain(model, q, [n1, n2], method="rise", n_samples=96, seed=7)
    b = explain(model, q, [n1, n2], method="rise", n_samples=96, seed=7)
    c = explain(model, q, [n1, n2], method="rise", n_samples=96, seed=8)
    np.testing.assert_array_equal(a.query_maps, b.query_maps)
    np.testing.assert_array_equal(a.neighbour_maps, b.neighbour_maps)
    assert not np.allclose(a.query_maps, c.query_maps)
    assert a.params["seed"] == 7 and a.params["n_samples"] == 96 and a.params["baseline"] == "mean"


def test_masks_are_shared_by_the_query_and_every_neighbour(random_images, monkeypatch):
    model = tiny_linear()
    q = random_images(1, seed=2)[0]
    seen: list[tuple[str, bytes]] = []
    original = PairContext.embed_masked

    def spy(self, image, masks, baseline="black"):
        who = "query" if image is self.query else "neighbour"
        seen.append((who, torch.as_tensor(masks).cpu().numpy().tobytes()))
        return original(self, image, masks, baseline)

    original_each = PairContext.embed_masked_each

    def spy_each(self, images, masks, baseline="black"):  # the neighbours, batched across images
        seen.extend(("neighbour", torch.as_tensor(masks).cpu().numpy().tobytes()) for _ in range(len(images)))
        return original_each(self, images, masks, baseline)

    monkeypatch.setattr(PairContext, "embed_masked", spy)
    monkeypatch.setattr(PairContext, "embed_masked_each", spy_each)
    # the neighbours are the query itself: a symmetric similarity makes both sides' scores identical iff the masks are
    exp = explain(model, q, [q, q], method="rise", n_samples=80, batch_size=16)
    query_masks = [m for who, m in seen if who == "query"]
    assert query_masks and len(seen) == len(query_masks) * 3  # each chunk: query once, then each neighbour
    for i in range(0, len(seen), 3):
        assert seen[i][0] == "query" and seen[i][1] == seen[i + 1][1] == seen[i + 2][1]
    np.testing.assert_allclose(exp.extras["query_scores"], exp.extras["neighbour_scores"], atol=1e-6)
    np.testing.assert_allclose(exp.query_maps, exp.neighbour_maps, atol=1e-6)


class _Constant(nn.Module):
    """A 'trunk' that ignores its input: every image gets the same features (constant similarity)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(x.shape[0], 4, 2, 2, device=x.device) + 0 * x[:, :1, :2, :2]


def test_constant_similarity_gives_a_constant_map(random_images):
    model = PooledModel(_Constant(), size=64, spec="test:constant", device="cpu")
    q, n = random_images(2, seed=3)
    exp = explain(model, q, [n], method="rise", n_samples=40, s=4)
    for maps in (exp.query_maps, exp.neighbour_maps):
        np.testing.assert_allclose(maps, np.full_like(maps, exp.similarities[0]), atol=1e-6)


def test_map_is_the_coverage_normalised_weighted_sum(random_images):
    model = tiny_linear(metric="ip")
    q, n = random_images(2, seed=4)
    exp = explain(model, q, [n], method="rise", n_samples=64, s=4, p=0.3, seed=5)
    masks = RiseMasks(64, (64, 64), s=4, p=0.3, rng=PairContext(model, q, [n], seed=5).generator(0)).all()
    for maps, scores in ((exp.query_maps, exp.extras["query_scores"]),
                         (exp.neighbour_maps, exp.extras["neighbour_scores"])):
        want = np.einsum("n,nhw->hw", scores[0].astype(np.float64), masks) / masks.sum(0)
        np.testing.assert_allclose(maps[0], want, rtol=1e-4, atol=1e-4)
    # the scores are the similarities of the masked images (baseline 'mean' = 0 in normalised space)
    ctx = PairContext(model, q, [n])
    emb = ctx.model.embed(ctx.query * torch.from_numpy(masks[:5]).unsqueeze(1))
    np.testing.assert_allclose(exp.extras["query_scores"][0, :5],
                               ctx.model.similarity(emb, ctx.neighbour_embeddings)[:, 0].numpy(), rtol=1e-4)


def test_planted_evidence(planted_model, random_images):
    model, (x0, y0, x1, y1) = planted_model()
    cell = 64 // 8
    for i in range(2):
        q = random_images(1, seed=50 + i)[0]
        exp = explain(model, q, [_similar(q, i)], method="rise", n_samples=600, seed=i)
        for maps in (exp.query_maps, exp.neighbour_maps):
            m = maps[0]
            r, c = np.unravel_index(np.argmax(m), m.shape)
            # RISE masks are smooth at the grid-cell scale: the peak lies in the region, up to one cell
            assert y0 - cell <= r < y1 + cell and x0 - cell <= c < x1 + cell, (i, r, c)
            assert m[y0:y1, x0:x1].mean() > m.mean()


def test_query_side_cost_does_not_grow_with_k(random_images):
    model = tiny_linear()
    q, *nbs = random_images(9, seed=6)
    for k in (1, 8):
        FEATURE_CACHE.clear()
        exp = explain(model, q, nbs[:k], method="rise", side="query", n_samples=64)
        assert exp.cost.forward == 64 + (k + 1)
        assert exp.query_maps.shape == (k, 64, 64) and exp.neighbour_maps is None
    FEATURE_CACHE.clear()
    both = explain(model, q, nbs, method="rise", n_samples=64)
    assert both.cost.forward == 64 * (1 + 8) + 9


@pytest.mark.slow
def test_rise_on_the_default_model_at_224(random_images):
    from simx.models import load_model

    model = load_model("default", device="cpu")
    q, n = random_images(2, seed=7, size=224)
    exp = explain(model, q, [n], method="rise", n_samples=128, side="query")
    assert exp.query_maps.shape == (1, 224, 224) and exp.cost.forward == 128 + 2
    assert np.isfinite(exp.query_maps).all() and exp.query_maps.std() > 0
