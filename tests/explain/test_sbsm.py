"""``sbsm`` (methods.md 3.2): agreement with xaitk-saliency's SBSM and Captum's Occlusion, planted evidence, cost."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from simx.explain import FEATURE_CACHE, explain
from simx.explain.engine import PairContext
from simx.explain.masks import sliding_window_masks
from simx.explain.methods.sbsm import default_window, saliency
from simx.models.toy import tiny_linear, tiny_mlp


def _similar(img: Image.Image, seed: int, sigma: float = 6.0) -> Image.Image:
    """The same picture with a little fresh pixel noise: a near-duplicate neighbour."""
    rng = np.random.default_rng(seed)
    arr = np.asarray(img, np.float32) + rng.normal(0, sigma, (*img.size[::-1], 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _raw(ctx: PairContext, x: torch.Tensor) -> np.ndarray:
    """(H, W, 3) float32 raw RGB in [0, 1] through the model's exact inverse normalisation."""
    return ctx.model.preprocessing.denormalise(x.reshape(1, 3, *ctx.size))[0].permute(1, 2, 0).numpy().copy()


def _xaitk_sbsm(model, ref: np.ndarray, queries: list[np.ndarray], window: int, stride: int, metric: str):
    from smqtk_descriptors.interfaces.image_descriptor_generator import ImageDescriptorGenerator
    from xaitk_saliency.impls.gen_image_similarity_blackbox_sal.sbsm import SBSMStack

    class Descriptor(ImageDescriptorGenerator):
        """Our model's embedding as an XAITK/smqtk descriptor generator (raw [0, 1] HxWx3 images in)."""

        def generate_arrays_from_images(self, img_mat_iter):
            x = torch.stack([torch.from_numpy(np.asarray(im, np.float32)).permute(2, 0, 1) for im in img_mat_iter])
            with torch.inference_mode():
                e = model.embed(model.preprocessing.normalise(x))
            return list(e.double().numpy())

        def get_config(self):
            return {}

    sbsm = SBSMStack(window_size=(window, window), stride=(stride, stride), proximity_metric=metric, fill=None)
    return sbsm.generate(ref, queries, Descriptor())


@pytest.mark.parametrize("metric,xaitk_metric", [("cosine", "cosine"), ("l2", "euclidean"), ("ip", None)])
def test_sbsm_matches_xaitk_on_both_sides(random_images, metric, xaitk_metric):
    model = tiny_mlp(metric=metric)
    q, *nbs = random_images(4, seed=1)
    window, stride = default_window(64)
    params = {} if xaitk_metric else {"distance": "euclidean"}
    exp = explain(model, q, nbs, method="sbsm", **params)
    assert exp.params["window"] == window == 14 and exp.params["stride"] == stride == 6
    assert exp.params["n_windows"] == 121 and exp.params["baseline"] == "black"
    ctx = PairContext(model, q, nbs)
    xm = xaitk_metric or "euclidean"
    ref_q = _xaitk_sbsm(model, _raw(ctx, ctx.query), [_raw(ctx, n) for n in ctx.neighbours], window, stride, xm)
    assert ref_q.shape == exp.query_maps.shape
    for k in range(len(nbs)):
        ref_n = _xaitk_sbsm(model, _raw(ctx, ctx.neighbours[k]), [_raw(ctx, ctx.query)], window, stride, xm)[0]
        for ours, ref in ((exp.query_maps[k], ref_q[k]), (exp.neighbour_maps[k], ref_n)):
            assert ours.max() > 0 and ref.max() > 0
            assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] >= 0.95
            np.testing.assert_allclose(ours, ref, atol=2e-3)
    assert exp.query_maps.min() >= 0 and exp.query_maps.max() == pytest.approx(1.0)


def test_sbsm_matches_captum_occlusion_on_the_same_windows(random_images):
    from captum.attr import Occlusion

    model = tiny_linear()
    q, n1, n2 = random_images(3, seed=2)
    exp = explain(model, q, [n1, n2], method="sbsm", window=16, stride=16)
    ctx = PairContext(model, q, [n1, n2])
    base = ctx.baseline("black")
    for k in range(2):
        for x, ref, ours in ((ctx.query, ctx.neighbour_embeddings[k : k + 1], exp.query_maps[k]),
                             (ctx.neighbours[k : k + 1], ctx.query_embedding, exp.neighbour_maps[k])):
            def forward(inp, ref=ref):
                return model.similarity(model.embed(inp), ref)[:, 0]

            attr = Occlusion(forward).attribute(x.reshape(1, 3, 64, 64), sliding_window_shapes=(3, 16, 16),
                                                strides=(3, 16, 16), baselines=base, perturbations_per_eval=16)
            # Captum: s(x) - s(x occluded) on each window; SBSM with d = 1 - cos: max(0, that), max-abs scaled
            a = attr[0, 0].clamp_min(0).numpy()
            assert a.max() > 0
            np.testing.assert_allclose(ours, a / a.max(), atol=2e-3)  # float32 similarities near 1


def test_coverage_normalisation_and_max_abs_scaling():
    keep = torch.from_numpy(sliding_window_masks(8, 4, 2))  # overlapping windows
    occ = 1 - keep
    deltas = torch.rand(2, occ.shape[0], dtype=torch.float64)
    sal = saliency(deltas, occ)
    raw = torch.einsum("kn,nhw->khw", deltas, occ.double()) / occ.sum(0).double()
    torch.testing.assert_close(sal, raw / raw.flatten(1).amax(1).view(2, 1, 1))
    # a constant score on every window gives a constant map (coverage-normalised), zero scores stay zero
    flat = saliency(torch.ones(1, occ.shape[0]), occ)[0]
    torch.testing.assert_close(flat, torch.ones_like(flat))
    assert saliency(torch.zeros(1, occ.shape[0]), occ).abs().max() == 0


def test_default_windows_scale_with_the_input():
    assert default_window(224) == (50, 20)
    assert default_window(112) == (25, 10)
    assert default_window(64) == (14, 6)


def test_planted_evidence(planted_model, random_images):
    model, (x0, y0, x1, y1) = planted_model()
    for i in range(3):
        q = random_images(1, seed=40 + i)[0]
        exp = explain(model, q, [_similar(q, i)], method="sbsm")
        win = exp.params["window"]
        yy, xx = np.mgrid[:64, :64]
        far = (yy < y0 - win) | (yy >= y1 + win) | (xx < x0 - win) | (xx >= x1 + win)
        for maps in (exp.query_maps, exp.neighbour_maps):
            m = maps[0]
            r, c = np.unravel_index(np.argmax(m), m.shape)
            # the evidence is located to window precision: the peak is within one window of the region...
            assert y0 - win < r < y1 + win and x0 - win < c < x1 + win, (i, r, c)
            # ...and no window that misses the region carries any score
            assert m.max() == pytest.approx(1.0) and np.abs(m[far]).max() < 1e-3
            # the peak pixel's windows all touch the region's rows/cols, and inside the region the map is positive
            assert m[y0:y1, x0:x1].mean() > 0.2


def test_query_side_cost_does_not_grow_with_k(random_images):
    model = tiny_linear()
    q, *nbs = random_images(9, seed=3)
    costs = []
    for k in (1, 8):
        FEATURE_CACHE.clear()
        exp = explain(model, q, nbs[:k], method="sbsm", side="query")
        costs.append(exp.cost.forward - (k + 1))
        assert exp.query_maps.shape == (k, 64, 64) and exp.neighbour_maps is None
    assert costs[0] == costs[1] == 121
    FEATURE_CACHE.clear()
    both = explain(model, q, nbs, method="sbsm")
    assert both.cost.forward == 121 * (1 + 8) + 9 and both.cost.backward == 0


@pytest.mark.slow
def test_sbsm_on_the_default_model_at_224(random_images):
    from simx.models import load_model

    model = load_model("default", device="cpu")
    q, n = random_images(2, seed=5, size=224)
    exp = explain(model, q, [n], method="sbsm")
    assert exp.params["n_windows"] == 144 and exp.query_maps.shape == (1, 224, 224)
    assert exp.cost.forward == 2 * 144 + 2
    assert 0 <= exp.query_maps.min() and exp.query_maps.max() == pytest.approx(1.0)
