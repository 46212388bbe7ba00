"""jointsbsm (methods.md 6.7, 3.2): discrete mixed derivative over window pairs, coverage-normalised spreading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from simx.explain import PairContext, explain
from simx.explain.methods.jointsbsm import mixed_derivative, spread_matrix
from simx.explain.masks import sliding_window_masks
from simx.explain.cells import cell_index_map, grid_cells
from simx.models.toy import PooledModel, _linear, tiny_linear


def _inputs(seed: int, k: int = 2, size: int = 32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, size, size, generator=g), torch.randn(k, 3, size, size, generator=g)


def pairwise_pixel_model(cell: int, size: int, metric: str = "ip") -> PooledModel:
    """features = a linear conv with kernel = stride = ``cell`` (no bias, no ReLU), GAP, affine head: with the
    ``mean`` baseline (0 in normalised space) an occluded pixel contributes exactly 0, so the pixel game of the
    inner product is purely pairwise: s = sum_{u, v} x_u^T M y_v + first-order/constant bias terms (6.6)."""
    conv = nn.Conv2d(3, 8, cell, stride=cell, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(0)) * 0.2)
    return PooledModel(conv, _linear(8, 6, 0), metric=metric, size=size)


def test_windows_equal_to_cells_give_jointcam_exactly():
    """6.7: for the pairwise game of 6.6 the mixed derivative returns K[a, b] exactly."""
    model = pairwise_pixel_model(cell=8, size=32)
    q, ns = _inputs(1)
    jc = explain(model, q, ns, method="jointcam")
    js = explain(model, q, ns, method="jointsbsm", window=8, stride=8, baseline="mean")
    assert js.joint.shape == jc.joint.shape == (2, 16, 16)
    assert js.query_cells == jc.query_cells
    np.testing.assert_allclose(js.joint, jc.joint, atol=2e-5 * np.abs(jc.joint).max())
    # non-overlapping windows equal to the cells: spreading is the identity
    np.testing.assert_allclose(js.joint, js.extras["window_joint"], atol=1e-6 * np.abs(jc.joint).max())


def test_overlapping_windows_sum_the_pixel_pair_interactions_and_spread_by_coverage():
    """Pixel-level pairwise model (1 x 1 conv): J[a, b] = sum_{u in a, v in b} K[u, v] for overlapping windows;
    the cell matrix is the 3.2 coverage-normalised pixel-pair map averaged over cell pairs, by brute force."""
    size, window, stride = 16, 5, 3
    model = pairwise_pixel_model(cell=1, size=size)
    q, ns = _inputs(2, k=1, size=size)
    kpix = explain(model, q, ns, method="jointcam").joint[0].astype(np.float64)  # (256, 256) pixel pairs
    js = explain(model, q, ns, method="jointsbsm", window=window, stride=stride, baseline="mean", grid=4)
    occ = 1.0 - sliding_window_masks(size, window, stride).reshape(-1, size * size).astype(np.float64)
    jw = occ @ kpix @ occ.T
    np.testing.assert_allclose(js.extras["window_joint"][0], jw, atol=1e-4 * np.abs(jw).max())
    # brute force spreading: pixel pairs, then averages over 4 x 4-pixel cells
    cover = occ.sum(0)
    norm = np.where(cover > 0, occ / np.where(cover > 0, cover, 1), 0)
    pix = norm.T @ js.extras["window_joint"][0].astype(np.float64) @ norm  # (256, 256)
    ids = cell_index_map(grid_cells((4, 4), (size, size))).ravel()
    onehot = np.eye(16)[ids] / np.bincount(ids)[None]  # averaging matrix (256, 16)
    np.testing.assert_allclose(js.joint[0], onehot.T @ pix @ onehot, atol=1e-5 * np.abs(pix).max())


def test_mixed_derivative_matches_direct_double_occlusion():
    """J[a, b] = s(x, y) - s(x - a, y) - s(x, y - b) + s(x - a, y - b), checked by composing both masks."""
    model = tiny_linear(metric="cosine", size=32)
    q, ns = _inputs(3, k=1)
    js = explain(model, q, ns, method="jointsbsm", window=12, stride=6)
    ctx = PairContext(model, q, ns)
    keep = torch.from_numpy(sliding_window_masks(32, js.params["window"], js.params["stride"]))
    rng = np.random.default_rng(0)
    for a, b in rng.integers(0, keep.shape[0], (4, 2)):
        x_a = ctx.embed_masked(ctx.query, keep[a : a + 1], "black")
        y_b = ctx.embed_masked(ctx.neighbours[0], keep[b : b + 1], "black")
        ex, ey = torch.cat([ctx.query_embedding, x_a]), torch.cat([ctx.neighbour_embeddings[:1], y_b])
        s = model.similarity(ex, ey).double()
        ref = float(s[0, 0] - s[1, 0] - s[0, 1] + s[1, 1])
        assert js.extras["window_joint"][0, a, b] == pytest.approx(ref, abs=1e-5)


def test_forward_passes_are_windows_x_plus_windows_y_plus_two():
    model = tiny_linear(metric="cosine", size=32)
    q, ns = _inputs(4, k=3)
    js = explain(model, q, ns, method="jointsbsm", window=12, stride=6)
    n = js.params["n_windows"]
    assert n == 6 * 6
    # one query pass + N masked queries shared by the 3 neighbours, 3 x (1 + N) on the neighbour side
    assert js.cost.forward == (1 + n) + 3 * (1 + n) and js.cost.backward == 0
    assert js.extras["window_joint"].shape == (3, n, n)
    # defaults: XAITK's 50 / 20 at 224 px scaled to 32 px (window 7, stride 3): 11 x 11 windows
    js = explain(model, q, ns[:1], method="jointsbsm")
    assert (js.params["window"], js.params["stride"], js.params["n_windows"]) == (7, 3, 121)


def test_first_order_window_scores_are_unclipped_sbsm_scores():
    model = tiny_linear(metric="cosine", size=32)
    q, ns = _inputs(5)
    js = explain(model, q, ns, method="jointsbsm", window=12, stride=6)
    sb = explain(model, q, ns, method="sbsm", window=12, stride=6)
    np.testing.assert_allclose(np.clip(js.extras["query_window_scores"], 0, None), sb.extras["query_window_scores"],
                               atol=1e-6)
    np.testing.assert_allclose(np.clip(js.extras["neighbour_window_scores"], 0, None),
                               sb.extras["neighbour_window_scores"], atol=1e-6)
    assert js.query_maps.shape == (2, 32, 32) and js.neighbour_maps.shape == (2, 32, 32)


def test_spread_matrix_preserves_a_constant_and_zeroes_uncovered_cells():
    keep = torch.ones(3, 8, 8)
    keep[0, :4, :4] = 0
    keep[1, :4, 2:6] = 0
    keep[2, 2:4, :2] = 0  # the bottom half of the image is never occluded
    cells = grid_cells((2, 2), (8, 8))
    c = spread_matrix(1 - keep, cell_index_map(cells), 4).numpy()
    j = np.full((3, 3), 0.7)
    out = c.T @ j @ c
    # covered pixels carry the constant exactly; a cell's value is 0.7 times its covered fraction
    covered = np.array([1.0, 0.5, 0.0, 0.0])  # top-left fully, top-right half, bottom cells never
    np.testing.assert_allclose(out, 0.7 * np.outer(covered, covered), atol=1e-12)


def test_mixed_derivative_helper():
    s = torch.tensor([[1.0, 0.8, 0.9], [0.7, 0.4, 0.65]], dtype=torch.float64)
    np.testing.assert_allclose(mixed_derivative(s).numpy(), [[1.0 - 0.7 - 0.8 + 0.4, 1.0 - 0.7 - 0.9 + 0.65]])


def test_black_box_model_gets_a_default_grid():
    from simx.models.base import Preprocessing, SimModel

    class Opaque(SimModel):
        has_features = False

        def __init__(self, inner):
            super().__init__("test:opaque", inner.net, Preprocessing(size=32, fit="squash"), "none", "cosine",
                             device="cpu")
            self.inner = inner

        def embed(self, x):
            return self.inner.embed(x)

    model = Opaque(tiny_linear(size=32))
    q, ns = _inputs(6, k=1)
    js = explain(model, q, ns, method="jointsbsm", window=12, stride=6)
    assert js.query_cells == {"kind": "grid", "shape": (2, 2), "size": (32, 32)}
    assert js.joint.shape == (1, 4, 4)
