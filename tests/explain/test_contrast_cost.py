"""What a contrastive explanation costs over the plain one (issue 14): passes counted, stored embeddings used, and
the RISE margin map centred on "no effect"."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simx.errors import ExplainError
from simx.explain import FEATURE_CACHE, PairContext, explain
from simx.explain.engine import estimate
from simx.models.toy import tiny_linear


def _stored(model, images):
    """The neighbours' embeddings as an index stores them (L2-normalised for cosine), from their own forwards."""
    x = torch.stack([model.preprocess(im) for im in images])
    with torch.inference_mode():
        return model.normalise_embeddings(model.embed(x)).numpy()


def _count_backbone(model):
    """Wrap ``model.features`` to record the batch size of every backbone call."""
    calls = []
    original = model.features

    def counting(x):
        calls.append(int(x.shape[0]))
        return original(x)

    model.features = counting
    return calls


@pytest.mark.parametrize("method", ["searchcam", "sfam", "gradcam"])
def test_query_side_contrast_adds_no_backbone_pass_with_stored_embeddings(random_images, method):
    model = tiny_linear()
    q, wrong, right = random_images(3, seed=21)
    stored = _stored(model, [wrong, right])
    calls = _count_backbone(model)
    FEATURE_CACHE.clear()
    plain = explain(model, q, [wrong], method=method, side="query", known_embeddings=stored[:1])
    assert calls == [1] and plain.cost.forward == 1  # the query alone: the neighbour's embedding is stored
    FEATURE_CACHE.clear()
    c = explain(model, q, wrong, versus=right, method=method, side="query", known_embeddings=stored)
    assert calls == [1, 1] and c.cost.forward == plain.cost.forward and c.cost.backward == plain.cost.backward
    # the same maps as from the neighbours' own forwards (3 images, one batch)
    FEATURE_CACHE.clear()
    fresh = explain(model, q, wrong, versus=right, method=method, side="query")
    assert calls[-1] == 3 and fresh.cost.forward == 3
    np.testing.assert_allclose(c.query_maps, fresh.query_maps, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(c.margins, fresh.margins, atol=1e-6)


def test_neighbour_side_maps_still_run_the_neighbours_forward(random_images):
    # the wrong and the right neighbours' own maps need their feature maps: one forward each, honestly counted,
    # and the same maps as without stored embeddings (those are not used where features are needed)
    model = tiny_linear()
    q, wrong, right = random_images(3, seed=22)
    stored = _stored(model, [wrong, right])
    FEATURE_CACHE.clear()
    c = explain(model, q, wrong, versus=right, method="searchcam", side="both", known_embeddings=stored)
    assert c.cost.forward == 3
    FEATURE_CACHE.clear()
    usual = explain(model, q, [wrong, right], method="searchcam", side="neighbour")
    np.testing.assert_allclose(c.pair.neighbour_maps, usual.neighbour_maps, rtol=1e-5, atol=1e-7)
    # with the query and the wrong one cached (the pair view ran first), the contrast view adds the right one only
    FEATURE_CACHE.clear()
    explain(model, q, [wrong], method="searchcam")
    assert explain(model, q, wrong, versus=right, method="searchcam").cost.forward == 1


@pytest.mark.parametrize("method, params", [("sbsm", {}), ("rise", {"n_samples": 40})])
def test_perturbation_contrast_costs_what_the_plain_query_map_costs(random_images, method, params):
    model = tiny_linear()
    q, wrong, right = random_images(3, seed=23)
    stored = _stored(model, [wrong, right])
    FEATURE_CACHE.clear()
    plain = explain(model, q, [wrong], method=method, side="query", known_embeddings=stored[:1], **params)
    FEATURE_CACHE.clear()
    c = explain(model, q, wrong, versus=right, method=method, side="query", known_embeddings=stored, **params)
    assert c.cost.forward == plain.cost.forward  # the same masked queries, scored against both stored vectors


def test_estimates_count_only_the_query_when_embeddings_are_known(random_images):
    model = tiny_linear()
    q, wrong, right = random_images(3, seed=24)
    stored = _stored(model, [wrong, right])
    assert estimate(model, "gradcam", k=2, side="query", known_embeddings=True).forward == 1
    assert estimate(model, "gradcam", k=2, side="query").forward == 3
    FEATURE_CACHE.clear()
    pair = PairContext(model, q, [wrong, right], known_embeddings=stored)
    assert pair.uncached("query") == 1 and pair.uncached("both") == 3
    assert estimate(model, "sbsm", side="query", pair=pair).forward == \
        explain(model, q, wrong, versus=right, method="sbsm", side="query", known_embeddings=stored).cost.forward
    with pytest.raises(ExplainError, match="one row per neighbour"):
        PairContext(model, q, [wrong, right], known_embeddings=stored[:1])


def test_rise_contrast_map_reads_zero_where_pixels_do_not_matter(planted_model, random_images):
    # the similarity depends only on the box at the bottom right; far from it no pixel matters, so the margin map
    # must read ~0 there (E[margin | pixel kept] - E[margin]), not the mean masked margin
    model, (x0, y0, x1, y1) = planted_model(box=(40, 40, 60, 60))
    q, right = random_images(2, seed=25)
    wrong = q.transpose(0)  # the query mirrored: a wrong neighbour far closer than the right one, a large margin
    c = explain(model, q, wrong, versus=right, method="rise", side="query", n_samples=600)
    m = c.query_maps[0]
    far = m[:20, :20]
    peak = np.abs(m).max()
    offset = c.pair.baseline("query", 0) - c.pair.baseline("query", 1)  # the mean masked margin
    assert abs(far.mean()) < 0.1 * peak, (far.mean(), peak)
    assert abs(offset) > 0.5 * peak  # what the uncentred map carried everywhere: the test can tell the two apart
    box = m[y0:y1, x0:x1]
    assert np.abs(box).mean() > 3 * np.abs(far).mean()


def test_why_not_estimate_counts_every_pass_faithfulness_included(random_images):
    from simx.explain.contrast import estimate_why_not, why_not
    from simx.explain.metrics import ESTIMATE_STEPS
    from simx.models.toy import tiny_gap

    from .test_contrast import A, B, C, D, _scene

    model = tiny_gap()
    q, wrong, right = _scene(A, B), _scene(B, C), _scene(A, D)  # the planted failure: the wrong one shares B
    FEATURE_CACHE.clear()
    pair = PairContext(model, q, [wrong, right])
    announced = estimate_why_not(model, "searchcam", pair=pair, grid=4)
    assert announced.faithfulness == 2 * ESTIMATE_STEPS * 4 and announced.upper_bound
    assert estimate_why_not(model, "searchcam", j=1, grid=4).forward == announced.forward  # nothing cached
    calls = _count_backbone(model)  # after the estimate (a first estimate times the model: not the run's passes)
    w = why_not(model, q, wrong, right, method="searchcam", grid=4)
    regions = 8  # 4 x 4 cells, grown up to half the image
    assert w.query_region.margin_before > 0 and w.query_region.forwards > 0
    unused = 2 * regions - w.query_region.forwards - w.wrong_region.forwards
    assert sum(calls) == announced.forward - unused  # every image that went forward was announced
    f = w.faithfulness
    assert f["cost"]["forward"] == announced.faithfulness and len(f["neighbour"]["insertion"]) == 2
    assert w.to_dict()["faithfulness"] is f
