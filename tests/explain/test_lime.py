"""``lime`` (methods.md 3.5): lime's sampling / kernel / ridge, the true inverse normalisation, Captum agreement,
planted evidence, cost."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from simx.explain import FEATURE_CACHE, explain
from simx.explain.engine import PairContext
from simx.explain.methods.lime import lime_samples, lime_weights, weighted_ridge
from simx.explain.superpixels import resolve_baseline
from simx.models.base import Preprocessing
from simx.models.toy import PooledModel, tiny_linear, tiny_mlp, tiny_trunk


def _similar(img: Image.Image, seed: int, sigma: float = 6.0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.asarray(img, np.float32) + rng.normal(0, sigma, (*img.size[::-1], 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def test_weighted_ridge_is_sklearns_ridge():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    z = rng.integers(0, 2, (200, 9)).astype(float)
    y = rng.normal(size=(200, 3))
    w = rng.random(200)
    coef, icpt, r2 = weighted_ridge(z, y, w, alpha=1.0)
    for t in range(3):
        ref = Ridge(alpha=1.0).fit(z, y[:, t], sample_weight=w)
        np.testing.assert_allclose(coef[:, t], ref.coef_, atol=1e-10)
        assert icpt[t] == pytest.approx(ref.intercept_, abs=1e-10)
        assert r2[t] == pytest.approx(ref.score(z, y[:, t], sample_weight=w), abs=1e-10)


def test_samples_and_kernel_follow_lime_image():
    from sklearn.metrics import pairwise_distances

    z = lime_samples(12, 500, np.random.default_rng(1))
    assert z.shape == (500, 12) and (z[0] == 1).all() and set(np.unique(z)) == {0, 1}
    assert abs(z[1:].mean() - 0.5) < 0.03
    z[5] = 0  # the all-off sample has cosine distance 1
    d = pairwise_distances(z, z[0:1], metric="cosine").ravel()
    np.testing.assert_allclose(lime_weights(z, 0.25), np.sqrt(np.exp(-(d**2) / 0.25**2)), atol=1e-12)
    assert lime_weights(z)[0] == 1.0


def test_segment_mean_fill_uses_the_true_inverse_normalisation(random_images):
    pre = Preprocessing(size=64, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), fit="squash")
    model = PooledModel(tiny_trunk(), size=64, spec="test:imagenet-norm", device="cpu")
    model.preprocessing = pre
    q, n = random_images(2, seed=3)
    ctx = PairContext(model, q, [n])
    raw = np.asarray(q, np.float32) / 255.0
    seg = np.arange(64 * 64).reshape(64, 64) // 512  # 8 horizontal bands
    fill = resolve_baseline(ctx, "segment_mean", ctx.query[0], seg)
    shown = pre.denormalise(fill)[0].permute(1, 2, 0).numpy()
    for lab in range(8):
        sel = seg == lab
        np.testing.assert_allclose(shown[sel], np.broadcast_to(raw[sel].mean(0), shown[sel].shape), atol=1e-5)
    # an explanation with every superpixel switched off sees exactly this picture
    emb = ctx.embed_masked(ctx.query, np.zeros((1, 64, 64), np.float32), fill)
    torch.testing.assert_close(emb, model.embed(fill), rtol=1e-5, atol=1e-5)


def test_seeded_and_painted(random_images):
    model = tiny_linear()
    q, n = random_images(2, seed=4)
    a = explain(model, q, [n], method="lime", n_samples=120, seed=3)
    b = explain(model, q, [n], method="lime", n_samples=120, seed=3)
    np.testing.assert_array_equal(a.query_maps, b.query_maps)
    np.testing.assert_array_equal(a.neighbour_maps, b.neighbour_maps)
    seg = a.extras["query_segments"]
    np.testing.assert_array_equal(a.query_maps[0], a.extras["query_values"][0][seg])
    assert a.params["segmentation"] == "quickshift:kernel_size=4,max_dist=200,ratio=0.2" and a.params["baseline"] == "segment_mean"
    assert a.params["kernel_width"] == 0.25 and a.params["alpha"] == 1.0


def test_agrees_with_captum_lime(random_images):
    """Same target, superpixels (feature_mask), fill (baselines), kernel, ridge and sample count."""
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import Lime

    model = tiny_mlp()
    q, n = random_images(2, seed=5)
    n_samples = 1000
    exp = explain(model, q, [n], method="lime", n_samples=n_samples, segmentation="slic:n=20")
    ctx = PairContext(model, q, [n])
    torch.manual_seed(0)

    def kernel(original, perturbed, z, **kwargs):
        return float(lime_weights(z.cpu().numpy(), 0.25)[0])

    for x, ref, seg, ours in ((ctx.query, ctx.neighbour_embeddings, exp.extras["query_segments"],
                               exp.extras["query_values"][0]),
                              (ctx.neighbours[0:1], ctx.query_embedding, exp.extras["neighbour_segments"][0],
                               exp.extras["neighbour_values"][0])):
        def forward(inp, ref=ref):
            return model.similarity(model.embed(inp), ref)[:, 0]

        m = int(seg.max()) + 1
        assert m >= 12
        fill = resolve_baseline(ctx, "segment_mean", x, seg)
        lime = Lime(forward, interpretable_model=SkLearnRidge(alpha=1.0), similarity_func=kernel)
        attr = lime.attribute(x.reshape(1, 3, 64, 64), baselines=fill,
                              feature_mask=torch.as_tensor(seg, dtype=torch.long).view(1, 1, 64, 64),
                              n_samples=n_samples, perturbations_per_eval=64)
        theirs = np.array([attr[0, 0][torch.from_numpy(seg == i)].mean().item() for i in range(m)])
        assert np.corrcoef(ours, theirs)[0, 1] >= 0.95, (ours, theirs)


def test_planted_evidence(planted_model, random_images):
    model, (x0, y0, x1, y1) = planted_model()
    for i in range(3):
        q = random_images(1, seed=70 + i)[0]
        exp = explain(model, q, [_similar(q, i)], method="lime", n_samples=400)
        for side in ("query", "neighbour"):
            m = (exp.query_maps if side == "query" else exp.neighbour_maps)[0]
            seg = exp.extras["query_segments"] if side == "query" else exp.extras["neighbour_segments"][0]
            vals = exp.extras[f"{side}_values"][0]
            r, c = np.unravel_index(np.argmax(m), m.shape)
            in_box = np.zeros_like(seg, dtype=bool)
            in_box[y0:y1, x0:x1] = True
            # the peak superpixel overlaps the region
            assert in_box[seg == seg[r, c]].any(), (i, side, r, c)
            # superpixels that miss the region get much less weight than the peak
            outside = [j for j in range(len(vals)) if not in_box[seg == j].any()]
            if outside:
                assert np.abs(vals[outside]).max() < 0.5 * vals.max()


def test_query_side_cost_does_not_grow_with_k(random_images):
    model = tiny_linear()
    q, *nbs = random_images(9, seed=6)
    for k in (1, 8):
        FEATURE_CACHE.clear()
        exp = explain(model, q, nbs[:k], method="lime", side="query", n_samples=100)
        assert exp.cost.forward == 99 + (k + 1)  # the first (all-on) sample is the cached unperturbed similarity
        assert exp.query_maps.shape == (k, 64, 64) and exp.extras["query_values"].shape[0] == k
    FEATURE_CACHE.clear()
    both = explain(model, q, nbs, method="lime", n_samples=100)
    assert both.cost.forward == 99 * 9 + 9


@pytest.mark.slow
def test_lime_on_the_default_model_at_224(random_images):
    from simx.models import load_model

    model = load_model("default", device="cpu")
    q, n = random_images(2, seed=7, size=224)
    exp = explain(model, q, [n], method="lime", side="query", n_samples=100)
    assert exp.query_maps.shape == (1, 224, 224) and exp.cost.forward == 99 + 2
    assert exp.extras["query_values"].shape[1] >= 10 and np.isfinite(exp.query_maps).all()
