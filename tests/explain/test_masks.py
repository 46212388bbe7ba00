"""Shared mask generation (simx.explain.masks) and superpixels (simx.explain.superpixels)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simx.errors import ExplainError
from simx.explain.masks import (RiseMasks, chunks, coalition_masks, rise_masks, sliding_window_masks, window_boxes,
                                window_origins)
from simx.explain.superpixels import paint, quickshift_segments, relabel, segment_mean_image, slic_segments


@pytest.mark.parametrize("size,window,stride", [((64, 64), 14, 6), ((224, 224), 50, 20), ((48, 80), (10, 20), (7, 9)),
                                                ((64, 64), 16, 16), ((30, 30), 40, 10)])
def test_sliding_windows_match_xaitk(size, window, stride):
    from xaitk_saliency.impls.perturb_image.sliding_window import SlidingWindow

    w = window if isinstance(window, tuple) else (window, window)
    s = stride if isinstance(stride, tuple) else (stride, stride)
    ref = SlidingWindow(window_size=w, stride=s).perturb(np.zeros((*size, 3), np.uint8))
    ours = sliding_window_masks(size, window, stride)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref.astype(np.float32))
    # the boxes describe exactly the occluded pixels, in the same (row-major) order
    boxes = window_boxes(size, window, stride)
    for m, (y0, x0, y1, x1) in zip(ours, boxes):
        occ = np.zeros(size, bool)
        occ[y0:y1, x0:x1] = True
        np.testing.assert_array_equal(m == 0, occ)


def test_sliding_window_defaults_at_224_give_144_centred_windows():
    masks = sliding_window_masks(224, 50, 20)
    assert masks.shape == (144, 224, 224)
    o = window_origins(224, 50, 20)
    # origins 0..220 step 20, overhang of the last window = 50 - (224 - 220) = 46 -> shifted by 23
    np.testing.assert_array_equal(o, np.arange(0, 224, 20) - 23)
    # centred: the occlusion count is symmetric under flips
    cover = (1 - masks).sum(0)
    np.testing.assert_array_equal(cover, cover[::-1, ::-1])


def _xaitk_shifts(n: int, size: tuple[int, int], s: int, seed: int) -> np.ndarray:
    """The shifts XAITK's RISEGrid draws (serially) for ``seed``."""
    rng = np.random.default_rng(seed)
    ch, cw = np.ceil(np.array(size) / s)
    out = []
    for _ in range(n):
        y = rng.integers(0, ch)
        x = rng.integers(0, cw)
        out.append((y, x))
    return np.array(out)


@pytest.mark.parametrize("size,s", [((64, 64), 8), ((50, 70), 7)])
def test_rise_masks_match_xaitk_upsampling_and_shift(size, s):
    from xaitk_saliency.impls.perturb_image.rise import RISEGrid

    n, seed = 12, 5
    ref_gen = RISEGrid(n=n, s=s, p1=0.5, seed=seed, threads=0)
    ref = ref_gen.perturb(np.zeros((*size, 3), np.uint8))
    ours = RiseMasks.from_arrays(ref_gen.grid, _xaitk_shifts(n, size, s, seed), size).all()
    assert ours.shape == ref.shape == (n, *size)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_rise_masks_are_seeded_chunkable_and_in_range():
    a = RiseMasks(300, (64, 64), s=8, p=0.5, rng=np.random.default_rng(3))
    b = RiseMasks(300, (64, 64), s=8, p=0.5, rng=np.random.default_rng(3))
    c = RiseMasks(300, (64, 64), s=8, p=0.5, rng=np.random.default_rng(4))
    full = a.all()
    np.testing.assert_array_equal(full, b.all())
    assert not np.array_equal(full, c.all())
    # chunks reproduce the full set, in order (query and neighbour sides consume them chunk by chunk)
    parts = np.concatenate([a.chunk(i, j).numpy() for i, j in chunks(len(a), 64)])
    np.testing.assert_array_equal(parts, full)
    np.testing.assert_array_equal(a[10:20].numpy(), full[10:20])
    assert full.min() >= 0 and full.max() <= 1
    assert abs(full.mean() - 0.5) < 0.03  # P(cell kept) = p
    assert abs(rise_masks(400, 32, s=4, p=0.2, rng=0).mean() - 0.2) < 0.03
    with pytest.raises(ExplainError, match="p must be in"):  # a user parameter: the dashboard shows the message
        RiseMasks(10, 32, p=1.5)


def test_coalition_masks_compose_superpixels():
    seg = np.array([[0, 0, 1], [2, 2, 1]])
    z = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 1]], np.uint8)
    m = coalition_masks(seg, z)
    assert isinstance(m, torch.Tensor) and m.shape == (3, 2, 3) and m.dtype == torch.float32
    np.testing.assert_array_equal(m[0].numpy(), [[1, 1, 0], [1, 1, 0]])
    np.testing.assert_array_equal(m[1].numpy(), [[0, 0, 1], [0, 0, 1]])
    np.testing.assert_array_equal(m[2].numpy(), np.ones((2, 3)))
    np.testing.assert_array_equal(m.numpy(), z[:, seg])
    with pytest.raises(ValueError):
        coalition_masks(seg, z[:, :2])


def _blocks(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((64, 64, 3), np.uint8)
    for i, col in enumerate(rng.integers(0, 256, (8, 3))):
        r, c = divmod(i, 4)
        img[r * 32:(r + 1) * 32, c * 16:(c + 1) * 16] = col
    return img


def test_slic_is_deterministic_contiguous_and_follows_edges():
    img = _blocks()
    seg = slic_segments(img, n_segments=8, compactness=10, sigma=0)
    np.testing.assert_array_equal(seg, slic_segments(img, n_segments=8, compactness=10, sigma=0))
    assert seg.min() == 0 and set(np.unique(seg)) == set(range(seg.max() + 1))
    assert seg.max() + 1 == 8
    # every superpixel is one colour block (the segmentation runs on the picture's colours)
    for lab in range(8):
        assert len(np.unique(img[seg == lab].reshape(-1, 3), axis=0)) == 1


def test_quickshift_is_seeded_and_contiguous(random_images):
    img = np.asarray(random_images(1, seed=4)[0])
    a, b = quickshift_segments(img, seed=0), quickshift_segments(img, seed=0)
    np.testing.assert_array_equal(a, b)
    assert a.min() == 0 and set(np.unique(a)) == set(range(a.max() + 1)) and a.max() >= 1


def test_relabel_paint_and_segment_means():
    seg = relabel(np.array([[5, 5, 9], [7, 7, 9]]))
    np.testing.assert_array_equal(seg, [[0, 0, 2], [1, 1, 2]])
    np.testing.assert_array_equal(paint(np.array([[1.0, 2.0, 3.0]]), seg), [[[1, 1, 3], [2, 2, 3]]])
    raw = torch.rand(3, 2, 3)
    filled = segment_mean_image(raw, seg)
    for lab in range(3):
        sel = torch.from_numpy(seg == lab)
        want = raw[:, sel].mean(1)
        torch.testing.assert_close(filled[:, sel], want[:, None].expand(3, int(sel.sum())))
