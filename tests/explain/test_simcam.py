"""simcam (methods.md 2.3): closed forms on a GAP + identity model for both stop-gradient choices, clamp, passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simx.errors import ExplainError
from simx.explain import explain
from simx.models.toy import PooledModel, tiny_gap, tiny_linear, tiny_mlp


def _analytic(model, x_img, y_img, stop_gradient: bool) -> np.ndarray:
    """Signed simcam map on y against x for a GAP + identity head, written out by hand.

    f = p/||p||, w = max(1 - |f_x - f|, 0), s = w.f. dL/df_k = w_k (stop-gradient) or w_k - f_k sign(f_k - f_x,k)
    [w_k > 0] (through w); ds/dp = (g - (g.f) f)/||p|| with g = ds/df; alpha_k = (ds/dp_k)/n.
    """
    with torch.no_grad():
        fx = model.features(model.preprocess_batch([x_img]))[0].double()
        fy = model.features(model.preprocess_batch([y_img]))[0].double()
    px, py = fx.mean(dim=(1, 2)), fy.mean(dim=(1, 2))
    ux, u = px / px.norm(), py / py.norm()
    w = (1 - (ux - u).abs()).clamp_min(0)
    g = w.clone() if stop_gradient else w - u * torch.sign(u - ux) * (w > 0)
    dsdp = (g - (g @ u) * u) / py.norm()
    n = fy.shape[1] * fy.shape[2]
    return torch.einsum("c,chw->hw", dsdp / n, fy).numpy()


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_simcam_matches_closed_form_on_gap_identity_head(stop_gradient, random_images):
    model = tiny_gap(metric="cosine", seed=4)
    q, *nbs = random_images(4, seed=11)
    exp = explain(model, q, nbs, method="simcam", relu=False, stop_gradient=stop_gradient)
    relu = explain(model, q, nbs, method="simcam", stop_gradient=stop_gradient)
    assert exp.params["stop_gradient"] is stop_gradient and exp.cost.backward == 2
    for k, n in enumerate(nbs):
        nb_map, q_map = _analytic(model, q, n, stop_gradient), _analytic(model, n, q, stop_gradient)
        tol = 1e-4 * np.abs(nb_map).max()
        np.testing.assert_allclose(exp.neighbour_feature_maps[k], nb_map, rtol=1e-3, atol=tol)
        np.testing.assert_allclose(exp.query_feature_maps[k], q_map, rtol=1e-3, atol=1e-4 * np.abs(q_map).max())
        np.testing.assert_allclose(relu.neighbour_feature_maps[k], np.maximum(nb_map, 0), rtol=1e-3, atol=tol)


def test_simcam_stop_gradient_choice_changes_the_map(random_images):
    model = tiny_linear(metric="cosine", seed=2)
    q, *nbs = random_images(5, seed=12)
    sg = explain(model, q, nbs, method="simcam", relu=False)
    full = explain(model, q, nbs, method="simcam", relu=False, stop_gradient=False)
    assert sg.params["stop_gradient"] is True  # the recorded default
    for side in ("query_feature_maps", "neighbour_feature_maps"):
        a, b = getattr(sg, side), getattr(full, side)
        rel = np.abs(a - b).max(axis=(1, 2)) / np.abs(a).max(axis=(1, 2))
        assert (rel > 0.05).all(), rel
    # the weights themselves are the same constant w of the pair either way
    np.testing.assert_array_equal(sg.extras["pair_weights"], full.extras["pair_weights"])


def test_simcam_weights_are_clamped_pair_agreement(random_images):
    """A linear trunk without bias: the negated input has f_y = -f_x, so 1 - |f_x - f_y| = 1 - 2|f_x| < 0 for the
    large components (a unit vector in 4-D has one >= 1/2) and the clamp must act."""
    torch.manual_seed(0)
    trunk = torch.nn.Conv2d(3, 8, 3, stride=4, padding=1, bias=False)
    model = PooledModel(trunk, torch.nn.Linear(8, 4, bias=False), metric="ip", size=64, spec="test:linear")
    q, n = random_images(2, seed=13)
    xq = model.preprocess(q)
    nbs = [-xq, model.preprocess(n), xq]
    exp = explain(model, xq, nbs, method="simcam")
    with torch.no_grad():
        fq = torch.nn.functional.normalize(model.embed(xq[None]), dim=-1)
        fn = torch.nn.functional.normalize(model.embed(torch.stack(nbs)), dim=-1)
    np.testing.assert_allclose(fn[0].numpy(), -fq[0].numpy(), rtol=1e-4, atol=1e-6)
    raw = 1 - (fq - fn).abs()
    w = exp.extras["pair_weights"]
    assert (raw[0] < 0).any(), "the clamp is not exercised"
    np.testing.assert_allclose(w, raw.clamp_min(0).numpy(), rtol=1e-5, atol=1e-6)
    assert (w >= 0).all() and (w[0] == 0).any()
    np.testing.assert_allclose(w[2], 1.0)  # the query against itself agrees everywhere
    np.testing.assert_allclose(exp.extras["neighbour_scores"], (raw.clamp_min(0) * fn).sum(-1).numpy(), rtol=1e-5,
                               atol=1e-6)
    assert "max(1 - |fx - fy|, 0)" in exp.params["clamp"]


def test_simcam_one_backward_per_side_and_batching(random_images):
    model = tiny_mlp(metric="cosine", seed=1)  # a non-linear head is fine for a gradient method
    q, *nbs = random_images(17, seed=14)
    many = explain(model, q, nbs, method="simcam", stop_gradient=False)
    assert many.cost.backward == 2 and many.query_maps.shape == (16, 64, 64)
    nb = explain(model, q, nbs[:8], method="simcam", side="neighbour")
    assert nb.cost.backward == 1 and nb.query_maps is None
    for k in (0, 12):
        one = explain(model, q, [nbs[k]], method="simcam", stop_gradient=False)
        np.testing.assert_allclose(one.query_feature_maps[0], many.query_feature_maps[k], rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(one.neighbour_feature_maps[0], many.neighbour_feature_maps[k], rtol=1e-5, atol=1e-8)


def test_simcam_deterministic_and_query_against_itself(random_images):
    model = tiny_linear(metric="cosine", seed=5)
    q, n = random_images(2, seed=15)
    a = explain(model, q, [n, q], method="simcam")
    b = explain(model, q, [n, q], method="simcam")
    np.testing.assert_array_equal(a.query_maps, b.query_maps)
    np.testing.assert_array_equal(a.neighbour_maps, b.neighbour_maps)
    # against itself: w = 1 everywhere, both sides explain the same image with the same score
    np.testing.assert_allclose(a.extras["pair_weights"][1], 1.0)
    np.testing.assert_allclose(a.query_feature_maps[1], a.neighbour_feature_maps[1], rtol=1e-5, atol=1e-8)


def test_simcam_planted_evidence(planted_model, check_planted):
    for metric, box in (("cosine", (32, 16, 56, 40)), ("l2", (0, 0, 20, 24))):
        model, box = planted_model(metric=metric, box=box)
        check_planted(model, box, "simcam")
        check_planted(model, box, "simcam", pairs=2, stop_gradient=False)


@pytest.mark.parametrize("bad", ["empty", "size", "grey_tensor"])
def test_simcam_bad_inputs(bad, random_images):
    (q,) = random_images(1)
    nbs = {"empty": [], "size": [torch.zeros(3, 32, 32)], "grey_tensor": [torch.zeros(1, 64, 64)]}[bad]
    with pytest.raises(ExplainError):
        explain(tiny_linear(), q, nbs, method="simcam")


def test_simcam_grey_pil_image_is_accepted(random_images):
    q, n = random_images(2, seed=16, mode="L")
    exp = explain(tiny_linear(), q, [n], method="simcam")
    assert exp.neighbour_maps.shape == (1, 64, 64) and np.isfinite(exp.neighbour_maps).all()
