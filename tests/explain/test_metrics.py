"""Faithfulness (insertion/deletion), pointing game, randomisation check and the random-map baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from simx.explain import FEATURE_CACHE, REGISTRY, explain
from simx.explain.engine import PairContext
from simx.explain.metrics import (
    DIRECTION,
    ESTIMATE_STEPS,
    RANDOM_MARGIN,
    box_mask,
    compare_maps,
    default_background,
    faithfulness,
    insertion_deletion,
    normalise_curves,
    padding_share,
    pixel_counts,
    pointing_game,
    random_maps,
    randomisation_check,
    randomise_layer,
    thresholds,
    transform_boxes,
    trapezoid_auc,
)
from simx.models import Preprocessing, SimModel
from simx.models.toy import tiny_linear


# ---------------------------------------------------------------------------------------------- test models
class CountingModel(SimModel):
    """e(x) = (sum of channel 0 over all pixels, 1) with the inner product: an all-white image (2 in normalised
    space) masked to black (-2) keeps n pixels iff e_0 = 4 n - 2 N, so the raw curves reveal n_t exactly."""

    def __init__(self, size: int = 37, weights: torch.Tensor | None = None):
        pre = Preprocessing(size=size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), fit="squash")
        super().__init__("test:counting", nn.Identity(), pre, layer="input", metric="ip", device="cpu")
        self.weights = torch.ones(size, size) if weights is None else weights

    def features(self, x):
        return x[:, :1] * self.weights

    def head(self, feats):
        s = feats.double().sum(dim=(1, 2, 3)).float()
        return torch.stack([s, torch.ones_like(s)], dim=1)


class ConstantModel(SimModel):
    """An embedding that ignores the input: every insertion/deletion curve is constant."""

    def __init__(self, size: int = 32):
        pre = Preprocessing(size=size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), fit="squash")
        super().__init__("test:constant", nn.Identity(), pre, layer="input", metric="cosine", device="cpu")

    def features(self, x):
        return x[:, :1]

    def head(self, feats):
        return torch.ones(feats.shape[0], 4)


def _box_map(box, size=64, seed=0):
    """A map that is high exactly on the box (tiny noise breaks ties)."""
    x0, y0, x1, y1 = box
    m = np.random.default_rng(seed).random((size, size)).astype(np.float32) * 1e-3
    m[y0:y1, x0:x1] += 1.0
    return m


# --------------------------------------------------------------------------------- thresholds and AUC maths
def test_thresholds_are_the_101_sane_steps():
    t = thresholds()
    assert t.shape == (101,)
    np.testing.assert_allclose(t, np.arange(101) / 100, atol=1e-15)
    assert t[0] == 0.0 and t[-1] == 1.0


def test_pixel_count_rule_matches_sane():
    n = 112 * 112  # SANE's 12,544 pixels
    counts = pixel_counts(n)
    expected = [max(round(n * i / 100), 1) for i in range(101)]
    assert counts.tolist() == expected
    assert counts[0] == 1  # t = 0 still inserts / deletes one pixel
    assert counts[1] == 125 and counts[50] == 6272 and counts[-1] == n
    assert np.all(np.diff(counts) >= 0)


def test_normalisation_and_constant_curve_guard():
    t = thresholds(11)
    norm, const = normalise_curves(np.array([[2.0, 3.0, 4.0, 6.0] + [6.0] * 7, [0.3] * 11]))
    assert not const[0] and const[1]
    assert norm[0].min() == 0.0 and norm[0].max() == 1.0
    np.testing.assert_allclose(norm[0][:4], [0.0, 0.25, 0.5, 1.0])
    assert np.all(norm[1] == 0.5)  # 0/0 is defined as 0.5 everywhere ...
    assert trapezoid_auc(norm[1], t) == pytest.approx(0.5)  # ... so the AUC is the neutral 50 (x100)
    assert not np.isnan(norm).any()
    # float noise on a flat curve is still "constant"
    _, c = normalise_curves(np.array([[0.9, 0.9 + 1e-9, 0.9 - 1e-9]]))
    assert c[0]
    # trapezoid rule = numpy's
    y = np.random.default_rng(0).random(101)
    assert trapezoid_auc(y, thresholds()) == pytest.approx(np.trapezoid(y, thresholds()))


# ------------------------------------------------------------------------------------- insertion / deletion
def test_harness_inserts_exactly_n_t_pixels_at_every_threshold():
    model = CountingModel(size=37)
    n = 37 * 37
    white = torch.full((3, 37, 37), 2.0)  # raw 1.0 after (x - 0.5) / 0.25
    ref = torch.tensor([[1.0, 0.0]])  # ip with e picks e_0
    m = torch.as_tensor(np.random.default_rng(1).permutation(n).reshape(37, 37).astype(np.float32))
    r = insertion_deletion(model, white, m, ref, background="black")
    inserted = (r["insertion_raw"][0] + 2 * n) / 4
    deleted_kept = (r["deletion_raw"][0] + 2 * n) / 4
    np.testing.assert_allclose(inserted, pixel_counts(n), atol=1e-3)
    np.testing.assert_allclose(deleted_kept, n - pixel_counts(n), atol=1e-3)
    assert r["n_pixels"].tolist() == [max(round(n * i / 100), 1) for i in range(101)]
    assert r["cost"].forward == 202  # one image per threshold and curve, nothing else
    # the inserted pixels are the top-ranked ones: weight every pixel by its map value, then e_0 = 4 S - 2 S_all
    # where S is the sum of the map values of the inserted pixels = the n_t largest values
    weighted = CountingModel(size=37, weights=m)
    rw = insertion_deletion(weighted, white, m, ref, background="black")
    top_sums = np.array([np.sort(m.numpy().ravel())[::-1][:c].sum() for c in pixel_counts(n)])
    np.testing.assert_allclose((rw["insertion_raw"][0] + 2 * m.sum().item()) / 4, top_sums, rtol=1e-6)


def test_constant_model_gives_guarded_curves():
    model = ConstantModel()
    x = torch.randn(2, 3, 32, 32)
    r = insertion_deletion(model, x, random_maps(2, 32, seed=0), x)
    assert r["insertion_constant"].all() and r["deletion_constant"].all()
    np.testing.assert_allclose(r["insertion_auc"], 50.0)
    np.testing.assert_allclose(r["deletion_auc"], 50.0)
    assert np.isfinite(r["insertion_curve"]).all()


def test_planted_evidence_map_beats_random_maps(planted_model, random_images):
    model, box = planted_model()
    q, nb = random_images(2, seed=3)
    good = _box_map(box)
    rand = random_maps(4, 64, seed=0)
    r_good = insertion_deletion(model, [q], good, [nb], steps=51)
    r_rand = insertion_deletion(model, [q], rand, [nb], steps=51)
    assert r_good["insertion"] > r_rand["insertion_auc"].max()
    assert r_good["deletion"] < r_rand["deletion_auc"].min()
    assert r_good["insertion"] > 85 and r_good["deletion"] < 15
    # a map pointing at the background (which the model cannot see) is worse than random
    bad = 1.0 - good
    r_bad = insertion_deletion(model, [q], bad, [nb], steps=51)
    assert r_bad["insertion"] < r_rand["insertion"] and r_bad["deletion"] > r_rand["deletion"]
    # the raw curves end at the unmasked similarity (insertion) and start there (deletion)
    s = float(model.similarity(model.embed(model.preprocess(q)[None]), model.embed(model.preprocess(nb)[None])))
    assert r_good["insertion_raw"][0, -1] == pytest.approx(s, abs=1e-4)
    assert abs(r_good["deletion_raw"][0, 0] - s) < 0.02  # only one pixel deleted at t = 0


def test_batches_mix_pairs_and_count_passes_in_the_context(planted_model, random_images):
    model, box = planted_model()
    imgs = random_images(4, seed=5)
    ctx = PairContext(model, imgs[0], imgs[1:], batch_size=64)
    before = ctx.cost.forward
    maps = np.stack([_box_map(box, seed=i) for i in range(3)])
    r = insertion_deletion(ctx, ctx.neighbours, maps, ctx.query_embedding, background="grey")
    assert r["insertion_auc"].shape == (3,) and r["insertion_raw"].shape == (3, 101)
    assert r["cost"].forward == 3 * 202
    assert ctx.cost.forward - before >= 3 * 202
    # same numbers with another batch size (batching must not change results)
    r2 = insertion_deletion(ctx, ctx.neighbours[:2], maps[:2], ctx.query_embedding, background="grey", batch_size=7)
    np.testing.assert_allclose(r["insertion_raw"][:2], r2["insertion_raw"], atol=1e-5)


def test_feature_resolution_maps_are_upsampled(planted_model, random_images):
    model, box = planted_model()
    q, nb = random_images(2, seed=4)
    low = np.zeros((16, 16), np.float32)
    low[box[1] // 4 : box[3] // 4, box[0] // 4 : box[2] // 4] = 1
    r = insertion_deletion(model, [q], low, [nb])
    assert r["insertion"] > 80


def test_faithfulness_is_a_function_of_the_explanation_and_the_model(random_images):
    model = tiny_linear()
    q, *nbs = random_images(3, seed=7)
    exp = explain(model, q, nbs, method="searchcam")
    cost_before = exp.cost.to_dict()
    f = faithfulness(exp, model)
    assert set(f) >= {"query", "neighbour", "background", "steps", "cost", "direction", "estimate"}
    assert f["direction"] == DIRECTION and "higher is better" in f["direction"] and f["estimate"] is False
    assert len(f["query"]["insertion"]) == 2 and len(f["neighbour"]["deletion"]) == 2
    assert all(isinstance(v, float) for v in f["query"]["insertion"] + f["neighbour"]["deletion"])
    assert f["cost"]["forward"] == 4 * 202  # 2 pairs x 2 sides; the unmasked embeddings come from the cache
    assert exp.cost.to_dict() == cost_before  # the method's cost is not inflated by the metric
    assert exp.scores["faithfulness"] is f
    # the numbers equal a direct call on the same maps and the original inputs
    ctx = PairContext(model, q, nbs)
    direct = insertion_deletion(ctx, ctx.query, exp.query_maps, ctx.neighbour_embeddings)
    np.testing.assert_allclose(f["query"]["insertion"], direct["insertion_auc"], atol=1e-6)
    np.testing.assert_allclose(f["query"]["margin"], np.subtract(f["query"]["insertion"], f["query"]["deletion"]))
    import json

    json.dumps(f)  # JSON-safe


def test_cheap_estimate_is_kept_apart_from_the_full_curve(random_images):
    model = tiny_linear()
    q, nb = random_images(2, seed=8)
    exp = explain(model, q, [nb], method="searchcam", side="query")
    est = faithfulness(exp, model, steps=ESTIMATE_STEPS)
    assert "query" in est and "neighbour" not in est and est["estimate"] is True
    assert est["cost"]["forward"] == 2 * ESTIMATE_STEPS and len(est["query"]["insertion_curve"]) == ESTIMATE_STEPS
    assert exp.scores["faithfulness_estimate"] is est and "faithfulness" not in exp.scores
    full = faithfulness(exp, model, background="white", steps=11, keep=False)
    assert full["background"] == "white" and full["background_source"] == "user" and "faithfulness" not in exp.scores
    # the estimate agrees with the full protocol on which maps are good
    assert abs(est["query"]["insertion"][0] - faithfulness(exp, model, keep=False)["query"]["insertion"][0]) < 10


def test_a_map_no_better_than_random_is_flagged(planted_model, random_images):
    model, box = planted_model()
    q, nb = random_images(2, seed=3)
    exp = explain(model, q, [nb], method="searchcam")
    good = faithfulness(exp, model, steps=ESTIMATE_STEPS, keep=False)
    assert good["query"]["better_than_random"] == [True]
    exp.query_maps = -exp.query_maps  # the evidence ranked last: worse than random
    exp.neighbour_maps = np.zeros_like(exp.neighbour_maps)  # no ranking at all
    bad = faithfulness(exp, model, steps=ESTIMATE_STEPS, keep=False)
    assert bad["query"]["better_than_random"] == [False] and bad["query"]["margin"][0] < -RANDOM_MARGIN
    assert bad["neighbour"]["better_than_random"] == [False]


def test_padded_images_are_filled_with_the_padding_colour_and_padding_mass_is_warned(random_images):
    model = tiny_linear()
    model.preprocessing.fit = "pad"
    wide = random_images(1, seed=2, size=64)[0].resize((64, 32))  # letterboxed: rows 16..47 are the picture
    exp = explain(model, wide, [random_images(1, seed=4)[0]], method="searchcam")
    assert tuple(exp.query_box) == (0, 16, 64, 48) and tuple(exp.neighbour_boxes[0]) == (0, 0, 64, 64)
    assert default_background(model) == "white"
    on_padding = np.zeros((1, 64, 64), np.float32)
    on_padding[0, :12] = 1.0
    on_padding[0, 30:32, :8] = 0.5
    exp.query_maps = on_padding
    f = faithfulness(exp, model, steps=ESTIMATE_STEPS, keep=False)
    assert f["background"] == "white" and f["background_source"] == "padding"
    assert f["query"]["padding_warning"] == [True] and f["query"]["padding_share"][0] > 0.9
    assert f["neighbour"]["padding_share"] == [0.0] and f["neighbour"]["padding_warning"] == [False]
    assert padding_share(on_padding[0], None) is None
    assert padding_share(np.full((4, 4), 0.3), (0, 0, 2, 2), baseline=0.3) == 0.0


def test_explanation_is_a_plain_picklable_value(random_images):
    import pickle

    model = tiny_linear()
    q, *nbs = random_images(3, seed=9)
    for method in ("searchcam", "rise", "jointcam"):
        params = {"n_samples": 32} if method == "rise" else {}
        exp = explain(model, q, nbs, method=method, **params)
        back = pickle.loads(pickle.dumps(exp))
        assert back.method == method and back.k == 2
        for name in ("similarities", "query_maps", "neighbour_maps", "query_image", "neighbour_images",
                     "query_baseline", "neighbour_baseline", "joint"):
            a, b = getattr(exp, name), getattr(back, name)
            assert (a is None and b is None) or np.array_equal(a, b), name
        assert back.cost == exp.cost and back.params == exp.params
        assert not _holds_live_objects(exp.__dict__), method  # no model, no tensors
        f = faithfulness(back, model, steps=ESTIMATE_STEPS)  # a metric needs only the value and the model
        assert len(f["query"]["insertion"]) == 2


def _holds_live_objects(value) -> bool:
    if isinstance(value, (torch.Tensor, nn.Module, SimModel, PairContext)):
        return True
    if isinstance(value, dict):
        return any(_holds_live_objects(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_live_objects(v) for v in value)
    return False


# ------------------------------------------------------------------------------------------- pointing game
def _peak(x, y, size=64):
    m = np.zeros((size, size), np.float32)
    m[y, x] = 1.0
    return m


def test_pointing_game_strict_vs_tolerance():
    box = [(20, 20, 40, 40)]  # pixels 20..39 (x1/y1 exclusive)
    maps = [_peak(30, 30), _peak(10, 10), _peak(60, 5), _peak(39, 39), _peak(40, 40), _peak(5, 5)]
    boxes = [box, box, box, box, box, []]
    r = pointing_game(maps, boxes, tolerance=15)
    hits = [p.get("hit") for p in r["per_map"]]
    tol = [p.get("hit_tolerance") for p in r["per_map"]]
    assert hits == [True, False, False, True, False, None]
    # (10, 10) is sqrt(10^2 + 10^2) = 14.1 px from pixel (20, 20): a hit with 15 px tolerance;
    # (60, 5) is sqrt(21^2 + 15^2) = 25.8 px from (39, 20): a miss either way
    assert tol == [True, True, False, True, True, None]
    assert r["per_map"][1]["distance"] == pytest.approx(np.hypot(10, 10))
    assert r["n"] == 5 and r["skipped"] == 1
    assert r["hits"] == 2 and r["misses"] == 3 and r["accuracy"] == pytest.approx(2 / 5)
    assert r["hits_tolerance"] == 4 and r["accuracy_tolerance"] == pytest.approx(4 / 5)
    strict0 = pointing_game([_peak(10, 10)], [box], tolerance=0)
    assert strict0["accuracy_tolerance"] == 0.0


def test_pointing_game_baselines():
    box = (20, 20, 40, 40)
    r = pointing_game([_peak(0, 0)] * 2, [[box], [(-10, -10, 10, 10)]], tolerance=15)
    # uniform random point: mean area fraction of the (clipped) boxes
    assert r["random_point_baseline"]["strict"] == pytest.approx((400 / 4096 + 100 / 4096) / 2)
    # with tolerance: area within 15 px of the box, brute force
    ys, xs = np.mgrid[0:64, 0:64]
    dx = np.maximum(np.maximum(20 - xs, 0), xs - 39)
    dy = np.maximum(np.maximum(20 - ys, 0), ys - 39)
    grown1 = (np.hypot(dx, dy) <= 15).mean()
    dx2, dy2 = np.maximum(xs - 9, 0), np.maximum(ys - 9, 0)
    grown2 = (np.hypot(dx2, dy2) <= 15).mean()
    assert r["random_point_baseline"]["tolerance"] == pytest.approx((grown1 + grown2) / 2)
    # centre pixel (32, 32) is in the first box only (and 31.1 px from the second)
    assert r["centre_baseline"]["strict"] == 0.5 and r["centre_baseline"]["tolerance"] == 0.5


def test_pointing_game_with_no_scored_map_and_box_helpers():
    r = pointing_game([_peak(1, 1)], [None])
    assert r["n"] == 0 and np.isnan(r["accuracy"])
    mask = box_mask([{"x0": 2.0, "y0": 3.0, "x1": 5.0, "y1": 4.0}], (8, 8))
    assert mask.sum() == 3 and mask[3, 2:5].all()
    pre = Preprocessing(size=64, fit="pad")
    # a 200 x 100 image is letterboxed: scale 0.32, dy = (64 - 32) // 2 = 16
    (b,) = transform_boxes([{"x0": 0, "y0": 0, "x1": 100, "y1": 50, "category": "cat"}], pre, 200, 100)
    assert b["category"] == "cat"
    assert (b["x0"], b["y0"], b["x1"], b["y1"]) == pytest.approx((0, 16, 32, 32))


# ------------------------------------------------------------------------------------ randomisation check
@pytest.mark.parametrize("method", ["searchcam", "gradcam"])
def test_randomisation_check_passes_for_model_dependent_methods(method, random_images):
    FEATURE_CACHE.clear()
    model = tiny_linear()
    state = {k: v.clone() for k, v in model.net.state_dict().items()}
    q, *nbs = random_images(3, seed=11)
    r = randomisation_check(model, q, nbs, method)
    assert r["layer"] == "trunk.2"  # the trunk's last conv
    assert r["passed"] and r["spearman"] < 0.5
    assert set(r["sides"]) == {"query", "neighbour"} and len(r["sides"]["query"]["spearman"]) == 2
    # the user's model is untouched
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, state[k]), k
    # and the randomised clone's features left the cache with it: only the model's own 3 images remain
    tokens = {key[0] for key in FEATURE_CACHE._data}
    assert tokens == {model.__dict__["_feature_cache_token"]}


def test_randomisation_check_fails_for_a_map_that_ignores_the_model(random_images):
    model = tiny_linear()
    q, *nbs = random_images(3, seed=12)

    def model_blind(m, query, neighbours, side="both", seed=0):  # not registered: a plain callable
        return random_maps(len(neighbours), m.input_size, seed), random_maps(len(neighbours), m.input_size, seed + 1)

    r = randomisation_check(model, q, nbs, model_blind)
    assert not r["passed"]
    assert r["spearman"] == pytest.approx(1.0) and r["ssim"] == pytest.approx(1.0)
    # and the numbers the check uses, directly
    c = compare_maps(random_maps(2, 32, 5), random_maps(2, 32, 5))
    assert c["spearman"] == pytest.approx([1.0, 1.0])
    c2 = compare_maps(random_maps(2, 32, 5), random_maps(2, 32, 6))
    assert max(abs(v) for v in c2["spearman"]) < 0.2


def test_randomise_layer_changes_only_the_explained_layer(planted_model):
    model, _ = planted_model()
    clone, name = randomise_layer(model, seed=3)
    assert name == "trunk.1.2"
    a, b = model.net.state_dict(), clone.net.state_dict()
    changed = sorted(k for k in a if not torch.equal(a[k], b[k]))
    assert changed == ["trunk.1.2.bias", "trunk.1.2.weight"]
    assert clone.spec != model.spec  # the feature cache can never mix them


def test_random_maps_are_reproducible():
    a, b, c = random_maps(3, (8, 10), 1), random_maps(3, (8, 10), 1), random_maps(3, (8, 10), 2)
    assert a.shape == (3, 8, 10) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0 <= a.min() and a.max() < 1
