"""simx.explain.views (methods.md 6.8): projections through J, correspondence lines, marginals, the figure."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from simx.explain import explain
from simx.explain import views as jv
from simx.models.toy import tiny_linear


def grid_explanation(j: np.ndarray, qshape=(3, 4), nshape=(2, 5), size=(48, 60), seed: int = 0):
    """A stand-in joint explanation: J (K, Nq, Nn) on two grids over an H x W input."""
    rng = np.random.default_rng(seed)
    k = j.shape[0]
    return SimpleNamespace(
        method="test", joint=j, similarities=np.linspace(0.9, 0.5, k),
        query_cells=jv.grid_cells(qshape, size), neighbour_cells=jv.grid_cells(nshape, size),
        query_image=rng.integers(0, 255, (*size, 3), dtype=np.uint8),
        neighbour_images=rng.integers(0, 255, (k, *size, 3), dtype=np.uint8))


@pytest.fixture
def exp():
    return grid_explanation(np.random.default_rng(1).normal(size=(2, 12, 10)))


def test_point_projection_is_the_row_of_the_containing_cell(exp):
    h, w = 3, 4
    for k in range(2):
        for i in range(h * w):
            r, c = divmod(i, w)
            # any point inside the cell (16 x 15 px cells), without interpolation
            pt = (c * 15 + 3.7, r * 16 + 12.2)
            assert jv.cell_of_point(exp.query_cells, pt) == i
            p = jv.project_point(exp, pt, k=k, interpolate=False)
            np.testing.assert_array_equal(p.values, exp.joint[k][i])
            # at the cell centre, bilinear interpolation gives exactly that row too
            centre = jv.cell_centres(exp.query_cells)[i]
            np.testing.assert_allclose(jv.project_point(exp, centre, k=k).values, exp.joint[k][i], atol=1e-12)
            assert p.map.shape == (48, 60) and p.target == "neighbour"


def test_bilinear_between_cells_and_edge_padding(exp):
    c0, c1 = jv.cell_centres(exp.query_cells)[[5, 6]]  # horizontally adjacent cells of row 1
    mid = (c0 + c1) / 2
    np.testing.assert_allclose(jv.project_point(exp, mid).values, (exp.joint[0][5] + exp.joint[0][6]) / 2)
    # a point in the outer half of a corner cell is edge-padded: it takes the corner row only
    np.testing.assert_allclose(jv.project_point(exp, (1.0, 1.0)).values, exp.joint[0][0])
    wts = jv.point_weights(exp.query_cells, (20.0, 30.0))
    assert wts.sum() == pytest.approx(1.0) and (wts > 0).sum() == 4


def test_reverse_point_projection_is_a_column(exp):
    j = exp.joint[1]
    for jj in range(10):
        centre = jv.cell_centres(exp.neighbour_cells)[jj]
        p = jv.project_point(exp, centre, k=1, reverse=True)
        np.testing.assert_allclose(p.values, j[:, jj], atol=1e-12)
        assert p.target == "query"


def test_region_projection_is_linear_in_the_mask(exp):
    rng = np.random.default_rng(2)
    m1, m2 = rng.random((48, 60)), (rng.random((48, 60)) > 0.7).astype(float)
    p1, p2 = jv.project_region(exp, m1), jv.project_region(exp, m2)
    p12 = jv.project_region(exp, m1 + 2.5 * m2)
    np.testing.assert_allclose(p12.values, p1.values + 2.5 * p2.values, atol=1e-12)
    np.testing.assert_allclose(p12.map, p1.map + 2.5 * p2.map, atol=1e-4)
    # a_i = covered fraction of cell i: J^T a
    a = jv.region_weights(exp.query_cells, m1)
    np.testing.assert_allclose(p1.values, exp.joint[0].T @ a)
    # a box that is exactly one cell projects that cell's row; the whole image gives the column sums
    np.testing.assert_allclose(jv.project_region(exp, (15, 16, 30, 32)).values, exp.joint[0][5], atol=1e-12)
    np.testing.assert_allclose(jv.project_region(exp, (0, 0, 60, 48)).values, jv.marginals(exp)[1], atol=1e-12)
    # half a cell covered -> weight 0.5
    assert jv.region_weights(exp.query_cells, (0, 0, 7.5, 16))[0] == pytest.approx(0.5)


def test_region_weights_on_a_grid_that_does_not_divide_the_image():
    cells = jv.grid_cells((3, 3), (10, 10))
    mask = (np.random.default_rng(3).random((10, 10)) > 0.5).astype(float)
    ids = jv.cell_index_map(cells)
    a = jv.region_weights(cells, mask)
    counts = np.bincount(ids.ravel(), minlength=9)
    assert counts.sum() == 100 and set(counts) == {9, 12, 16}  # rows/cols split 3-3-4 (floor(p * 3 / 10))
    np.testing.assert_allclose((a * counts).sum(), mask.sum())


def test_top_k_lines_are_mutual_nearest_neighbours_with_positive_weight():
    rng = np.random.default_rng(4)
    j = rng.normal(size=(1, 12, 10))
    exp = grid_explanation(j)
    lines = jv.correspondences(exp, top_k=None)
    assert lines
    for c in lines:
        assert j[0][c.query_cell].argmax() == c.neighbour_cell
        assert j[0][:, c.neighbour_cell].argmax() == c.query_cell
        assert c.weight == j[0][c.query_cell, c.neighbour_cell] > 0
        np.testing.assert_allclose(c.query_xy, jv.cell_centres(exp.query_cells)[c.query_cell])
        np.testing.assert_allclose(c.neighbour_xy, jv.cell_centres(exp.neighbour_cells)[c.neighbour_cell])
    weights = [c.weight for c in lines]
    assert weights == sorted(weights, reverse=True)
    # every mutual NN with J > 0 is found (brute force)
    brute = {(i, jj) for i in range(12) for jj in range(10)
             if j[0][i].argmax() == jj and j[0][:, jj].argmax() == i and j[0][i, jj] > 0}
    assert {(c.query_cell, c.neighbour_cell) for c in lines} == brute
    assert len(jv.correspondences(exp, top_k=2)) == min(2, len(brute))
    assert jv.correspondences(grid_explanation(-np.abs(j))) == []  # no positive weight, no line


def test_grid_cell_centres_follow_6_8():
    cells = jv.grid_cells((7, 7), (224, 224))
    c = jv.cell_centres(cells)
    np.testing.assert_allclose(c[0], (16, 16))
    np.testing.assert_allclose(c[7 * 3 + 5], ((5 + 0.5) * 32, (3 + 0.5) * 32))


def test_marginals_are_row_and_column_sums(exp):
    rows, cols = jv.marginals(exp, k=1)
    np.testing.assert_allclose(rows, exp.joint[1].sum(1))
    np.testing.assert_allclose(cols, exp.joint[1].sum(0))
    qmap, nmap = jv.marginal_maps(exp, k=1, smooth=False)
    np.testing.assert_allclose(qmap[0, 0], rows[0], rtol=1e-6)
    np.testing.assert_allclose(nmap[-1, -1], cols[-1], rtol=1e-6)


def segment_explanation():
    """Superpixel cells: 4 vertical stripes on the query, per-neighbour segmentations (K = 2)."""
    h, w = 20, 24
    qseg = np.repeat(np.arange(4), 6)[None].repeat(h, 0)
    n0 = np.repeat(np.arange(3), 8)[None].repeat(h, 0)  # 3 stripes
    n1 = (np.arange(h)[:, None] >= 10).astype(int).repeat(w, 1) + 2 * (np.arange(w)[None] >= 12)  # 4 quadrants
    j = np.zeros((2, 4, 4))
    rng = np.random.default_rng(5)
    j[0, :, :3] = rng.normal(size=(4, 3))  # pair 0 has 3 segments: padded column
    j[1] = rng.normal(size=(4, 4))
    return SimpleNamespace(method="test", joint=j, similarities=np.array([0.8, 0.7]),
                           query_cells=jv.segment_cells(qseg), neighbour_cells=jv.segment_cells(np.stack([n0, n1])),
                           query_image=np.zeros((h, w, 3), np.uint8), neighbour_images=np.zeros((2, h, w, 3), np.uint8))


def test_superpixel_geometry():
    exp = segment_explanation()
    p = jv.project_point(exp, (13.0, 4.0), k=0)  # x = 13 is in query stripe 2
    np.testing.assert_allclose(p.values, exp.joint[0][2, :3])  # trimmed to pair 0's 3 segments
    np.testing.assert_allclose(p.map[:, 8:16], exp.joint[0][2, 1])  # painted per segment
    p1 = jv.project_point(exp, (13.0, 4.0), k=1)
    np.testing.assert_allclose(p1.map[15, 20], exp.joint[1][2, 3])  # bottom-right quadrant = segment 3
    # a selected superpixel gets a_i = 1
    stripe = np.zeros((20, 24))
    stripe[:, 6:12] = 1
    np.testing.assert_allclose(jv.region_weights(exp.query_cells, stripe), [0, 1, 0, 0])
    np.testing.assert_allclose(jv.project_region(exp, stripe, k=1).values, exp.joint[1][1])
    np.testing.assert_allclose(jv.cell_centres(exp.query_cells)[1], (9.0, 10.0))
    lines = jv.correspondences(exp, k=1)
    assert all(c.weight > 0 for c in lines)


def test_draw_joint_lines_point_and_box(tmp_path, exp):
    from matplotlib.figure import Figure
    from matplotlib.patches import ConnectionPatch, Rectangle

    fig = jv.draw_joint(exp, k=0, top_k=3, path=tmp_path / "lines.png")
    assert isinstance(fig, Figure)
    n_lines = len([a for a in fig.artists if isinstance(a, ConnectionPatch)])
    assert n_lines == len(jv.correspondences(exp, top_k=3)) > 0
    assert (tmp_path / "lines.png").stat().st_size > 1000
    fig = jv.draw_joint(exp, k=1, point=(20, 30), path=tmp_path / "point.png")
    ax_n = fig.axes[1]
    shown = np.asarray(ax_n.images[-1].get_array())
    from simx import render

    heat = jv.project_point(exp, (20, 30), k=1).map  # drawn by the one renderer, at its own max |h|
    assert np.array_equal(shown, render.overlay(exp.neighbour_images[1], heat, limit=render.shared_limit([heat])))
    fig = jv.draw_joint(exp, box=(5, 5, 40, 30), path=tmp_path / "box.svg")
    assert any(isinstance(p, Rectangle) for p in fig.axes[0].patches)
    assert (tmp_path / "box.svg").read_text().startswith("<?xml")
    with pytest.raises(ValueError, match="joint"):
        jv.draw_joint(SimpleNamespace(method="gradcam", joint=None))


def test_works_on_real_explanations(tmp_path):
    model = tiny_linear(size=32)
    g = torch.Generator().manual_seed(0)
    q, ns = torch.randn(3, 32, 32, generator=g), torch.randn(2, 3, 32, 32, generator=g)
    e = explain(model, q, ns, method="jointcam")
    i = jv.cell_of_point(e.query_cells, (9.0, 21.0))
    assert i == 5 * 8 + 2
    np.testing.assert_allclose(jv.project_point(e, (9.0, 21.0), k=1, interpolate=False).values, e.joint[1][i])
    jv.draw_joint(e, k=1, path=tmp_path / "j.png")
    st = explain(model, q, ns, method="shapleytaylor", segmentation="slic:n=4,compactness=100", n_samples=16)
    fig = jv.draw_joint(st, k=1, point=(10, 10), path=tmp_path / "s.png")
    assert fig.axes[1].images  # heat map painted on neighbour 1's superpixels
