"""The one colour rule: diverging about the baseline, shared scale, per-map option, contours, legend."""

from __future__ import annotations

import numpy as np
import pytest

from simx import render


def blocks(values: np.ndarray, size: int = 16) -> np.ndarray:
    """A map of constant size x size blocks (probe points at block centres are unambiguous)."""
    return np.kron(np.asarray(values, np.float32), np.ones((size, size), np.float32))


def test_zero_is_white_positive_red_negative_blue():
    c = render.colorize(np.array([[-1.0, 0.0, 1.0]]), limit=1.0)[0]
    assert tuple(c[1]) == pytest.approx((247, 247, 247), abs=8)  # RdBu's centre
    assert c[2, 0] > c[2, 2] + 60 and c[0, 2] > c[0, 0] + 60  # dark red and dark blue at the ends


def test_a_rise_like_map_is_not_a_uniform_wash():
    """Values 0.51-0.53 with their baseline (the mean masked score) 0.52: both colours appear, and the map's
    extremes reach the ends of the scale; drawn about 0 the same map would be one flat red."""
    heat = blocks(np.array([[0.51, 0.52], [0.525, 0.53]]))
    img = np.full((32, 32, 3), 128, np.uint8)
    about_baseline = render.overlay(img, heat, baseline=0.52, alpha=1.0, outline=False)
    lo, mid, hi = about_baseline[8, 8], about_baseline[8, 24], about_baseline[24, 24]
    assert lo[2] > lo[0] + 60 and hi[0] > hi[2] + 60  # blue below, red above the baseline
    assert np.array_equal(mid, img[8, 24])  # the baseline itself keeps the picture
    about_zero = render.overlay(img, heat, alpha=1.0, outline=False)
    spread = np.ptp(about_zero.reshape(-1, 3).astype(int), axis=0).max()
    assert spread < 20  # the old rule: every block nearly the same red


def test_shared_scale_is_shared_and_per_map_is_each_maps_own():
    strong, weak = blocks(np.array([[1.0]])), blocks(np.array([[0.25]]))
    lim = render.shared_limit([strong, weak, None])
    assert lim == 1.0 and render.limits([strong, weak]) == [1.0, 1.0]
    img = np.full((16, 16, 3), 128, np.uint8)
    shared = [render.overlay(img, m, limit=lim, alpha=1.0, outline=False)[8, 8] for m in (strong, weak)]
    change = [int(np.abs(c.astype(int) - 128).sum()) for c in shared]
    assert change[0] > 3 * change[1] > 0  # the weak map looks weak next to the strong one
    per = render.limits([strong, weak], per_map=True)
    assert per == [1.0, 0.25]
    own = [render.overlay(img, m, limit=l, alpha=1.0, outline=False)[8, 8] for m, l in zip((strong, weak), per)]
    assert np.array_equal(own[0], own[1])  # each at its own full scale


def test_shared_limit_uses_each_maps_baseline():
    assert render.shared_limit([np.array([0.5, 0.6]), np.array([2.0, 2.05])], [0.55, 2.0]) == pytest.approx(0.05)
    with pytest.raises(ValueError):
        render.shared_limit([np.zeros(2)], [0.0, 1.0])


def test_contours_outline_strong_regions_on_a_red_image():
    """On a pure red picture a red map region is invisible by colour; its contour is drawn black on white."""
    heat = np.zeros((32, 32), np.float32)
    heat[8:24, 8:24] = 1.0
    heat[0:4, 0:32] = -1.0
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 220
    out = render.overlay(red, heat, alpha=0.6)
    assert tuple(out[8, 16]) == (0, 0, 0)  # on the square's boundary
    assert tuple(out[7, 16]) == (255, 255, 255)  # halo just outside it
    assert not np.array_equal(out[16, 16], (0, 0, 0))  # the inside is coloured, not outlined
    line, _ = render.contour_masks(render.relative(heat), 1.0)
    neg_edge = line[3, :]
    assert 0 < neg_edge.sum() < 32  # the negative region's contour is dashed
    assert np.array_equal(render.overlay(red, heat, alpha=0.0), red)  # alpha 0: the picture, no lines


def test_overlay_resizes_feature_maps_and_ignores_nan():
    small = np.array([[np.nan, 1.0], [0.0, -1.0]], np.float32)
    out = render.overlay(np.zeros((16, 16, 3), np.uint8), small, alpha=0.5)
    assert out.shape == (16, 16, 3)
    assert render.map_limit(np.full((3, 3), 0.4), baseline=0.4) == 1.0  # no deviation: neutral, not a crash


def test_legend_writes_real_values():
    pic = render.legend(0.01, baseline=0.52, width=300)
    assert pic.dtype == np.uint8 and pic.shape[1] == 300 and pic.shape[2] == 3
    assert render.format_value(0.52 - 0.01) == "0.51" and render.format_value(0.53) == "0.53"
    assert "0.51 .. 0.53" in render.scale_note(0.01, 0.52)
    assert "per map" in render.scale_note(1.0, per_map=True)
