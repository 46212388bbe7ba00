"""The shared engine: one batched forward for the unperturbed images, caching across calls, parameter checks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from simx.errors import ExplainError
from simx.explain import FEATURE_CACHE, explain
from simx.models.toy import tiny_linear


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]


def test_unperturbed_images_go_forward_in_one_batch_and_are_cached():
    FEATURE_CACHE.clear()
    model = tiny_linear()
    calls = []
    original = model.features

    def counting(x):
        calls.append(x.shape[0])
        return original(x)

    model.features = counting
    q, *nbs = _images(9)
    first = explain(model, q, nbs, method="searchcam")
    assert calls == [9] and first.cost.forward == 9
    again = explain(model, q, nbs, method="gradcam")
    assert calls == [9] and again.cost.forward == 0  # served from the cache
    np.testing.assert_allclose(first.similarities, again.similarities)


def test_discard_drops_one_model_only():
    FEATURE_CACHE.clear()
    a, b = tiny_linear(seed=0), tiny_linear(seed=1)
    q, n = _images(2, seed=3)
    explain(a, q, [n], method="searchcam")
    explain(b, q, [n], method="searchcam")
    assert len(FEATURE_CACHE) == 4
    assert FEATURE_CACHE.discard(b) == 2 and len(FEATURE_CACHE) == 2
    assert FEATURE_CACHE.discard(b) == 0
    assert explain(a, q, [n], method="gradcam").cost.forward == 0  # a's entries are still there


def test_unknown_parameter_is_a_clear_error():
    q, n = _images(2)
    with pytest.raises(ExplainError, match="no parameter n_smaples"):
        explain(tiny_linear(), q, [n], method="gradcam", n_smaples=10)
    with pytest.raises(ExplainError, match="unknown method"):
        explain(tiny_linear(), q, [n], method="gradkam")
    with pytest.raises(ExplainError, match="side must be"):
        explain(tiny_linear(), q, [n], method="gradcam", side="left")


@pytest.mark.parametrize("baseline", ["black", "blur"])
def test_masked_neighbours_stream_in_full_batches_across_images(baseline):
    """K x N composites go forward in batches that cross neighbour boundaries, with each image's own fill, and
    give the embeddings image-by-image composition gives."""
    import torch

    from simx.explain import PairContext

    model = tiny_linear()
    q, *nbs = _images(4, seed=3)
    ctx = PairContext(model, q, nbs, batch_size=4)
    sizes = []
    original = model.embed

    def counting(x):
        sizes.append(x.shape[0])
        return original(x)

    model.embed = counting
    masks = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    each = ctx.embed_masked_each(ctx.neighbours, masks, baseline)
    assert each.shape[:2] == (3, 3) and sizes == [4, 4, 1]  # 9 composites in full batches of 4, not 3 + 3 + 3
    for k in range(3):
        torch.testing.assert_close(each[k], ctx.embed_masked(ctx.neighbours[k], masks, baseline), atol=1e-5, rtol=1e-5)
    scores = ctx.neighbour_mask_scores(masks, baseline)
    torch.testing.assert_close(scores, model.similarity(each.reshape(9, -1), ctx.query_embedding)[:, 0].reshape(3, 3))
