"""Contrastive explanations (issue 14): the map of the margin s(q, wrong) - s(q, right) and its counterfactuals."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from simx.errors import ExplainError
from simx.explain import ContrastExplanation, explain
from simx.explain.contrast import colour_name, describe_region, suggest_reason, why_not
from simx.explain.counterfactual import counterfactual, grey_check
from simx.models.toy import tiny_gap, tiny_linear


def _scene(*parts, size=64):
    """A grey picture with coloured rectangles (x0, y0, x1, y1, rgb)."""
    a = np.full((size, size, 3), 128, np.uint8)
    for x0, y0, x1, y1, colour in parts:
        a[y0:y1, x0:x1] = colour
    return Image.fromarray(a)


# the planted scene: query = A + B, the wrong neighbour shares only B (the larger object), the right one only A
A = (4, 4, 28, 28, (220, 30, 30))
B = (32, 32, 60, 60, (30, 30, 220))
C = (4, 36, 24, 60, (30, 200, 30))
D = (36, 4, 60, 24, (230, 230, 40))


@pytest.fixture(scope="module")
def planted():
    q, wrong, right = _scene(A, B), _scene(B, C), _scene(A, D)
    box_a, box_b = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    box_a[4:28, 4:28] = True
    box_b[32:60, 32:60] = True
    return q, wrong, right, box_a, box_b


def test_closed_form_contrast_maps_sum_to_the_margin(random_images):
    model = tiny_linear(bias=False)
    q, wrong, r1, r2 = random_images(4, seed=7)
    c = explain(model, q, wrong, versus=[r1, r2], method="searchcam")
    assert isinstance(c, ContrastExplanation) and c.j == 2 and c.query_maps.shape == (2, 64, 64)
    np.testing.assert_allclose(c.margins, c.similarities[0] - c.similarities[1:], atol=1e-6)
    np.testing.assert_allclose(c.query_feature_maps.sum(axis=(1, 2)), c.margins, atol=1e-5)
    # SFAM's exact variant: the mean of the map is the similarity, so the mean of the contrast map is the margin
    s = explain(model, q, wrong, versus=[r1, r2], method="sfam", variant="exact")
    np.testing.assert_allclose(s.query_feature_maps.mean(axis=(1, 2)), s.margins, atol=1e-5)
    assert c.cost.backward == 0 and s.cost.backward == 0


@pytest.mark.parametrize("method", ["gradcam", "simcam"])
def test_gradient_contrast_maps_equal_the_difference_of_separate_pair_maps(random_images, method):
    model = tiny_linear()
    q, wrong, right = random_images(3, seed=11)
    c = explain(model, q, wrong, versus=right, method=method, side="query")
    assert c.cost.backward == 1  # both rows of the query side in ONE backward pass
    alone_w = explain(model, q, [wrong], method=method, side="query", relu=False)
    alone_r = explain(model, q, [right], method=method, side="query", relu=False)
    expected = alone_w.query_feature_maps[0] - alone_r.query_feature_maps[0]
    np.testing.assert_allclose(c.query_feature_maps[0], expected, atol=1e-6)
    assert (c.query_maps[0] < 0).any() and (c.query_maps[0] > 0).any()  # signed: evidence for both sides


@pytest.mark.parametrize("method, params", [("rise", {"n_samples": 60}), ("sbsm", {})])
def test_perturbation_contrast_reuses_the_query_passes(random_images, method, params):
    model = tiny_gap()
    q, wrong, right = random_images(3, seed=5)
    plain = explain(model, q, [wrong], method=method, side="query", **params)
    passes = plain.cost.forward - 2  # the masked-query passes (minus the two unperturbed images)
    c = explain(model, q, wrong, versus=right, method=method, side="query", **params)
    assert c.cost.forward == passes + 1  # the same masked passes; only the right neighbour's embedding is new
    linear = {"signed": True} if method == "sbsm" else {}
    alone_w = explain(model, q, [wrong], method=method, side="query", **params, **linear)
    alone_r = explain(model, q, [right], method=method, side="query", **params, **linear)
    # each pair map about its "no effect" value (RISE: the mean masked score; sbsm's signed map has none)
    centred_w = alone_w.query_maps[0] - alone_w.baseline("query", 0)
    centred_r = alone_r.query_maps[0] - alone_r.baseline("query", 0)
    np.testing.assert_allclose(c.query_maps[0], centred_w - centred_r, atol=1e-5)


def test_neighbour_side_gives_the_usual_pair_maps_on_both_neighbours(random_images):
    model = tiny_linear()
    q, wrong, right = random_images(3, seed=2)
    c = explain(model, q, wrong, versus=right, method="gradcam")
    usual = explain(model, q, [wrong, right], method="gradcam", side="neighbour")
    np.testing.assert_allclose(c.pair.neighbour_maps, usual.neighbour_maps, atol=1e-6)
    assert c.pair.params["relu"] is True and c.query_params["relu"] is False


@pytest.mark.parametrize("method, params", [("searchcam", {}), ("gradcam", {}), ("sbsm", {}),
                                            ("kernelshap", {"n_samples": 200})])
def test_planted_contrast_is_positive_on_the_shared_wrong_object_and_negative_on_the_right_one(
        planted, method, params):
    q, wrong, right, box_a, box_b = planted
    c = explain(tiny_gap(), q, wrong, versus=right, method=method, side="query", **params)
    m = c.query_maps[0]
    assert c.margins[0] > 0
    assert m[box_b].mean() > 0 > m[box_a].mean(), (method, m[box_b].mean(), m[box_a].mean())
    assert m[box_b].sum() > 0.5 * m[m > 0].sum()  # most of the positive mass lies on B


def test_planted_counterfactual_region_covers_the_shared_object(planted):
    q, wrong, right, box_a, box_b = planted
    model = tiny_gap()
    w = why_not(model, q, wrong, right, method="searchcam")
    r = w.query_region
    assert r.found and r.margin_before > 0 > r.margin_after
    assert (r.mask & box_b).sum() >= 0.7 * box_b.sum() and (r.mask & box_a).sum() == 0
    assert r.area < 0.5 and r.forwards > 0
    assert w.wrong_region is not None and w.wrong_region.found
    assert "blue region at the bottom right" in w.reading and "favours the wrong one" in w.reading
    assert w.reason == "partial_match"
    assert suggest_reason(r, w.grey, boxes=box_a) == "background_shortcut"  # region outside the given object mask


def test_global_cause_when_no_region_flips(random_images):
    # the query and the wrong neighbour share a colour cast everywhere, the right one shares the query's content in
    # other colours: no region up to half the query flips the order, and in grey the wrong one's margin collapses
    model = tiny_gap()
    base = np.asarray(random_images(1, seed=9)[0]).astype(np.int16)
    q = Image.fromarray(np.clip(base + [60, -30, -30], 0, 255).astype(np.uint8))
    wrong = Image.fromarray(np.clip(base[::-1] + [60, -30, -30], 0, 255).astype(np.uint8))
    right = Image.fromarray(np.clip(base + [-40, 30, 40], 0, 255).astype(np.uint8))
    w = why_not(model, q, wrong, right, method="searchcam", wrong_side=False)
    g = w.grey
    np.testing.assert_allclose(g["margin"], w.contrast.margins, atol=1e-5)
    assert g["margin"][0] > 0.1 and g["grey_margin"][0] < 0.25 * g["margin"][0] and g["colour_decides"]
    r = w.query_region
    assert not r.found and abs(r.area - 0.5) < 1e-9 and len(r.curve) == r.forwards == 128 and r.margin_after > 0
    assert w.reason == "colour_over_shape" and "the cause is global" in w.reading and "colour decides" in w.reading
    small = counterfactual(model, q, wrong, [right], np.ones((64, 64)), max_area=0.1)
    assert not small.found and small.area <= 0.1 + 1e-9


def test_contrast_errors(random_images):
    q, w1, w2, r = random_images(4, seed=3)
    with pytest.raises(ExplainError, match="ONE wrong neighbour"):
        explain(tiny_linear(), q, [w1, w2], versus=r, method="gradcam")
    with pytest.raises(ExplainError, match="no contrastive"):
        explain(tiny_linear(), q, w1, versus=r, method="jointcam")
    with pytest.raises(ExplainError, match="no contrastive"):
        explain(tiny_linear(metric="l2"), q, w1, versus=r, method="sfam")
    with pytest.raises(ExplainError, match="versus is empty"):
        explain(tiny_linear(), q, w1, versus=[], method="gradcam")


def test_region_words():
    assert colour_name(np.array([220, 30, 30])) == "red" and colour_name(np.array([30, 30, 220])) == "blue"
    assert colour_name(np.array([128, 128, 128])) == "grey" and colour_name(np.array([250, 250, 250])) == "white"
    mask = np.zeros((30, 30), bool)
    mask[:8, :8] = True
    img = np.zeros((30, 30, 3), np.uint8)
    img[..., 1] = 200
    assert describe_region(img, mask) == "the green region at the top left"


def test_contrast_pictures_share_one_scale_and_outline_the_region(planted, tmp_path):
    from simx.explain.contrast_view import REGION_COLOUR, contrast_figure, contrast_panels
    from simx.render import shared_limit

    q, wrong, right, _, box_b = planted
    w = why_not(tiny_gap(), q, wrong, right, method="gradcam")
    panels = contrast_panels(w)
    pair = w.contrast.pair.neighbour_maps
    assert panels["pair_limit"] == pytest.approx(shared_limit([pair[0], pair[1]]))
    assert panels["query_limit"] == pytest.approx(shared_limit([w.contrast.query_maps[0]]))
    on_region = np.all(panels["query"] == REGION_COLOUR, axis=-1)
    assert on_region.any() and not np.all(w.contrast.query_image == REGION_COLOUR, axis=-1).any()
    png = tmp_path / "why.png"
    img = contrast_figure(w, png)
    assert png.is_file() and img.size[0] == 3 * 320 + 16 and not list(tmp_path.glob(".*tmp"))
