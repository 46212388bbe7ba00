"""gradcam (methods.md 2.1): closed-form agreement, pass counting, earlier layers, pytorch-grad-cam agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from simx.errors import ExplainError
from simx.explain import PairContext, explain
from simx.models.base import Preprocessing
from simx.models.module import ModuleModel
from simx.models.toy import tiny_classifier_net, tiny_gap, tiny_linear


@pytest.mark.parametrize("bias", [True, False])
def test_gradcam_is_relu_of_searchcam_for_inner_product(bias, random_images):
    """GAP + linear + ip: a_k = (W^T e(x))_k / n, so G_y = ReLU(M_y) exactly (the constant of 2.1 is 1 here)."""
    model = tiny_linear(metric="ip", seed=1, bias=bias)
    q, *nbs = random_images(5, seed=2)
    g = explain(model, q, nbs, method="gradcam")
    gs = explain(model, q, nbs, method="gradcam", relu=False)
    s = explain(model, q, nbs, method="searchcam")
    for side in ("query_feature_maps", "neighbour_feature_maps"):
        signed, sc = getattr(gs, side), getattr(s, side)
        tol = 1e-5 * np.abs(sc).max()
        np.testing.assert_allclose(signed, sc, rtol=1e-4, atol=tol)  # the signed map IS the search CAM
        np.testing.assert_allclose(getattr(g, side), np.maximum(sc, 0), rtol=1e-4, atol=tol)
        assert getattr(g, side).min() >= 0 and getattr(g, side).max() > 0
    # so the signed map sums to s minus the bias term, like searchcam's (2.2)
    np.testing.assert_allclose(gs.neighbour_feature_maps.sum(axis=(1, 2)), s.neighbour_feature_maps.sum(axis=(1, 2)),
                               rtol=1e-4, atol=1e-5)
    assert gs.params["relu"] is False and g.params["relu"] is True


def test_gradcam_cosine_signed_map_has_zero_mean(random_images):
    """Cosine is scale-invariant: sum_k p_k ds/dp_k = 0 (Euler), so the signed Grad-CAM map of a GAP + identity
    model sums to 0 on both sides: the norm term of 2.1 is present (a map without it would sum to s)."""
    model = tiny_gap(metric="cosine", seed=2)
    q, *nbs = random_images(4, seed=3)
    g = explain(model, q, nbs, method="gradcam", relu=False)
    for m in (g.query_feature_maps, g.neighbour_feature_maps):
        scale = np.abs(m).sum(axis=(1, 2))
        assert (scale > 1e-4).all()
        np.testing.assert_allclose(m.sum(axis=(1, 2)) / scale, 0, atol=1e-4)


def test_gradcam_one_backward_per_side_for_k8(random_images):
    model = tiny_linear(metric="cosine")
    q, *nbs = random_images(9, seed=4)
    nb = explain(model, q, nbs, method="gradcam", side="neighbour")
    assert nb.cost.backward == 1 and nb.cost.forward == 9
    assert nb.query_maps is None and nb.neighbour_maps.shape == (8, 64, 64)
    qs = explain(model, q, nbs, method="gradcam", side="query")
    assert qs.cost.backward == 1 and qs.neighbour_maps is None and qs.query_maps.shape == (8, 64, 64)
    both = explain(model, q, nbs, method="gradcam", side="both")
    assert both.cost.backward == 2
    np.testing.assert_allclose(both.query_maps, qs.query_maps, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(both.neighbour_maps, nb.neighbour_maps, rtol=1e-6, atol=1e-9)


def test_gradcam_batched_maps_equal_single_pair_maps_k1_k16(random_images):
    """The shared backward passes do not mix pairs: map k of a K = 16 call equals the K = 1 call on pair k."""
    model = tiny_linear(metric="cosine", seed=7)
    q, *nbs = random_images(17, seed=5)
    many = explain(model, q, nbs, method="gradcam")
    assert many.query_feature_maps.shape == (16, 16, 16) and many.cost.backward == 2
    for k in (0, 9, 15):
        one = explain(model, q, [nbs[k]], method="gradcam")
        assert one.query_maps.shape == (1, 64, 64)
        np.testing.assert_allclose(one.query_feature_maps[0], many.query_feature_maps[k], rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(one.neighbour_feature_maps[0], many.neighbour_feature_maps[k], rtol=1e-5, atol=1e-8)
    assert not np.allclose(many.query_feature_maps[0], many.query_feature_maps[1])  # query maps depend on the pair


def test_gradcam_deterministic(random_images):
    model = tiny_linear(metric="cosine", seed=1)
    q, *nbs = random_images(4, seed=6)
    a = explain(model, q, nbs, method="gradcam")
    b = explain(model, q, nbs, method="gradcam")
    np.testing.assert_array_equal(a.query_maps, b.query_maps)
    np.testing.assert_array_equal(a.neighbour_maps, b.neighbour_maps)


def test_gradcam_query_against_itself(random_images):
    (q,) = random_images(1, seed=7)
    # cosine: s = 1 is a maximum of s(x, .), the gradient vanishes, so does the map
    cos = explain(tiny_linear(metric="cosine"), q, [q], method="gradcam", relu=False)
    np.testing.assert_allclose(cos.similarities, [1.0], rtol=1e-5)
    assert np.abs(cos.neighbour_feature_maps).max() < 1e-5 and np.abs(cos.query_feature_maps).max() < 1e-5
    # inner product: both sides are the same map
    ip = explain(tiny_linear(metric="ip"), q, [q], method="gradcam")
    assert ip.query_feature_maps.max() > 0
    np.testing.assert_allclose(ip.query_feature_maps, ip.neighbour_feature_maps, rtol=1e-5)
    # l2: a maximum again (finite gradients at distance 0)
    l2 = explain(tiny_linear(metric="l2"), q, [q], method="gradcam", relu=False)
    assert np.isfinite(l2.query_feature_maps).all() and np.abs(l2.query_feature_maps).max() < 1e-6


def test_gradcam_l2_matches_direct_gradient(random_images):
    model = tiny_linear(metric="l2", seed=3)
    q, n = random_images(2, seed=8)
    g = explain(model, q, [n], method="gradcam", side="neighbour", relu=False)
    with torch.no_grad():
        eq = model.embed(model.preprocess_batch([q]))
        fy = model.features(model.preprocess_batch([n]))
    fy.requires_grad_(True)
    s = -((model.head(fy) - eq) ** 2).sum()
    (grad,) = torch.autograd.grad(s, [fy])
    expected = (grad.mean(dim=(2, 3))[:, :, None, None] * fy).sum(1)[0].detach().numpy()
    np.testing.assert_allclose(g.neighbour_feature_maps[0], expected, rtol=1e-4, atol=1e-6)


def test_gradcam_at_an_earlier_layer_backpropagates_through_the_rest(random_images):
    """layer "0.1" (first ReLU) of a generic wrapped net: ``head`` runs the rest of the network; compare with a
    hand-written split of the same network."""
    net = tiny_classifier_net(seed=2)
    pre = Preprocessing(size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), fit="squash")
    model = ModuleModel("test:earlier", net, pre, layer="0.1", metric="cosine", device="cpu")
    assert model.linear_head() is None
    q, *nbs = random_images(3, seed=9)
    g = explain(model, q, nbs, method="gradcam", relu=False)
    assert g.neighbour_feature_maps.shape == (2, 32, 32) and g.cost.backward == 2
    trunk = net[0]
    with torch.no_grad():
        eq = trunk(model.preprocess_batch([q])).mean(dim=(2, 3))
        a = trunk[:2](model.preprocess_batch(nbs))
    a.requires_grad_(True)
    s = F.cosine_similarity(trunk[2:](a).mean(dim=(2, 3)), eq).sum()
    (grad,) = torch.autograd.grad(s, [a])
    expected = (grad.mean(dim=(2, 3))[:, :, None, None] * a).sum(1).detach().numpy()
    np.testing.assert_allclose(g.neighbour_feature_maps, expected, rtol=1e-4, atol=1e-7)


def test_gradcam_planted_evidence(planted_model, check_planted):
    model, box = planted_model(metric="cosine")
    check_planted(model, box, "gradcam")
    model, box = planted_model(metric="ip", box=(8, 36, 28, 60))
    check_planted(model, box, "gradcam")


@pytest.mark.parametrize("bad", ["empty", "size", "grey_tensor"])
def test_gradcam_bad_inputs(bad, random_images):
    (q,) = random_images(1)
    nbs = {"empty": [], "size": [torch.zeros(3, 65, 64)], "grey_tensor": [torch.zeros(1, 64, 64)]}[bad]
    with pytest.raises(ExplainError):
        explain(tiny_linear(), q, nbs, method="gradcam")
    with pytest.raises(ExplainError):  # a bad query is refused as well
        explain(tiny_linear(), torch.zeros(1, 64, 64), [q], method="gradcam")


def test_gradcam_grey_pil_image_is_accepted(random_images):
    q, n = random_images(2, seed=3, mode="L")
    exp = explain(tiny_linear(), q, [n], method="gradcam")
    rgb = explain(tiny_linear(), q.convert("RGB"), [n.convert("RGB")], method="gradcam")
    np.testing.assert_allclose(exp.neighbour_maps, rgb.neighbour_maps)
    assert exp.query_image.shape == (64, 64, 3)


# -- agreement with pytorch-grad-cam on the real default model ---------------------------------------------------


class _Embedder(torch.nn.Module):
    """The default model as pytorch-grad-cam sees it: image batch -> embedding."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.net = model.net  # so pytorch-grad-cam finds parameters (device) through this module

    def forward(self, x):
        return self.model.embed(x)


class _SimilarityToConceptTarget:
    """pytorch-grad-cam's embedding-similarity target (its "pixel attribution for embeddings" tutorial)."""

    def __init__(self, features: torch.Tensor):
        self.features = features

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return torch.nn.CosineSimilarity(dim=0)(model_output, self.features)


def _minmax_resize(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from pytorch_grad_cam.utils.image import scale_cam_image

    return scale_cam_image(cams, size)


@pytest.mark.slow
def test_gradcam_agrees_with_pytorch_grad_cam_on_default_model():
    from PIL import Image
    from pytorch_grad_cam import GradCAM
    from skimage import data

    from simx.models import load_model

    model = load_model("default", device="cpu")
    assert model.layer == "bn2"
    query = Image.fromarray(data.chelsea())
    neighbours = [Image.fromarray(data.coffee()), Image.fromarray(data.astronaut()), Image.fromarray(data.rocket())]
    ours = explain(model, query, neighbours, method="gradcam", side="neighbour")
    assert ours.cost.backward == 1 and ours.neighbour_feature_maps.shape == (3, 7, 7)

    eq = PairContext(model, query, neighbours).query_embedding[0]
    x = model.preprocess_batch(neighbours).requires_grad_(True)  # frozen weights: gradients need a leaf input
    with GradCAM(model=_Embedder(model), target_layers=[model.net.bn2]) as cam:
        theirs = cam(input_tensor=x, targets=[_SimilarityToConceptTarget(eq)] * len(neighbours))
        # their feature-resolution CAM from the activations and gradients they recorded (before min-max + resize)
        a, g = (t.numpy() for t in (cam.activations_and_grads.activations[0], cam.activations_and_grads.gradients[0]))
        raw = np.maximum(cam.get_cam_image(x, model.net.bn2, None, a, g), 0)
    assert theirs.shape == (3, 224, 224) and raw.shape == (3, 7, 7)
    mine = _minmax_resize(ours.neighbour_feature_maps, model.input_size)  # same normalisation and resize
    for k in range(3):
        r = np.corrcoef(mine[k].ravel(), theirs[k].ravel())[0, 1]
        assert r >= 0.99, (k, r)
        r_feat = np.corrcoef(ours.neighbour_feature_maps[k].ravel(), raw[k].ravel())[0, 1]
        assert r_feat >= 0.99, (k, r_feat)
    # not only correlated: the same numbers (same target, same layer, same gradient)
    np.testing.assert_allclose(ours.neighbour_feature_maps, raw, rtol=1e-3, atol=1e-4 * raw.max())
