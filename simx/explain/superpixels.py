"""Superpixels for the superpixel-based perturbation methods (methods.md 3.5 LIME, 3.6 Kernel SHAP).

Segmentation always runs on the *display image*: the model input passed through the exact inverse of the model's
normalisation (``model.preprocessing.denormalise``, via :meth:`PairContext.display_image`), i.e. the RGB picture
the model saw, never on normalised tensors.

* ``slic`` (Kernel SHAP's default, methods.md 3.6: "SLIC ... 20-100 is typical"): ``skimage.segmentation.slic``
  with ``n_segments`` (default 50), ``compactness=20`` and ``sigma=1`` (a light Gaussian pre-smoothing), Lab
  colour space, ``start_label=0``. skimage's own 10 / 0 under-segments noisy pictures badly (1-3 superpixels for
  ``n_segments=8``, ~33 for 50 on 224 px photos); 20 / 1 gives ~45 for 50. SLIC is deterministic
  (grid-initialised k-means), so no seed is needed.
* ``quickshift`` (LIME's default, methods.md 3.5 = ``lime_image`` defaults): ``kernel_size=4, max_dist=200,
  ratio=0.2``; quickshift breaks ties with random noise, so it is seeded (``rng=seed``, methods.md 10.5).

Labels are made contiguous 0..M-1. :func:`paint` turns per-superpixel values (K, M) into pixel maps
``map[k, u] = values[k, segments(u)]``; :func:`segment_mean_image` gives LIME's default fill (``hide_color=None``:
every pixel replaced by the mean colour of its superpixel, computed in raw RGB and normalised back).
"""

from __future__ import annotations

import numpy as np
import torch

from .masks import coalition_masks

SEGMENTATIONS = ("slic", "quickshift")


def relabel(segments: np.ndarray) -> np.ndarray:
    """Contiguous labels 0..M-1 (order of first label value), int64 (H, W)."""
    _, inv = np.unique(np.asarray(segments), return_inverse=True)
    return inv.reshape(np.shape(segments)).astype(np.int64)


def slic_segments(image: np.ndarray, n_segments: int = 50, compactness: float = 20.0, sigma: float = 1.0) -> np.ndarray:
    """SLIC superpixels of an (H, W, 3) RGB image (uint8 or float in [0, 1]) -> (H, W) int64 labels 0..M-1."""
    from skimage.segmentation import slic

    seg = slic(np.asarray(image), n_segments=int(n_segments), compactness=float(compactness), sigma=sigma,
               start_label=0, channel_axis=-1)
    return relabel(seg)


def quickshift_segments(image: np.ndarray, kernel_size: float = 4, max_dist: float = 200, ratio: float = 0.2,
                        seed: int = 0) -> np.ndarray:
    """Quickshift superpixels (``lime_image`` defaults 4 / 200 / 0.2), seeded -> (H, W) int64 labels 0..M-1."""
    from skimage.segmentation import quickshift

    img = np.asarray(image)
    img = img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
    seg = quickshift(img, ratio=float(ratio), kernel_size=float(kernel_size), max_dist=float(max_dist),
                     rng=int(seed), channel_axis=-1)
    return relabel(seg)


def segment(image: np.ndarray, segmentation: str = "slic", n_segments: int = 50, compactness: float = 20.0,
            sigma: float = 1.0, kernel_size: float = 4, max_dist: float = 200, ratio: float = 0.2,
            seed: int = 0) -> np.ndarray:
    """Dispatch on ``segmentation`` ("slic" or "quickshift")."""
    if segmentation == "slic":
        return slic_segments(image, n_segments=n_segments, compactness=compactness, sigma=sigma)
    if segmentation == "quickshift":
        return quickshift_segments(image, kernel_size=kernel_size, max_dist=max_dist, ratio=ratio, seed=seed)
    raise ValueError(f"unknown segmentation {segmentation!r}; choose one of {', '.join(SEGMENTATIONS)}")


def paint(values: np.ndarray | torch.Tensor, segments: np.ndarray) -> np.ndarray:
    """Per-superpixel values (M,) or (K, M) -> pixel maps (H, W) or (K, H, W) float32."""
    v = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float32)
    return v[..., np.asarray(segments)]


def segment_mean_image(raw: torch.Tensor, segments: np.ndarray) -> torch.Tensor:
    """(3, H, W) raw RGB in [0, 1] -> the same image with every superpixel filled with its mean colour."""
    seg = torch.as_tensor(np.asarray(segments), dtype=torch.long, device=raw.device).reshape(-1)
    m = int(seg.max()) + 1
    flat = raw.reshape(3, -1).float()
    sums = torch.zeros(3, m, device=raw.device).index_add_(1, seg, flat)
    counts = torch.bincount(seg, minlength=m).clamp_min(1).to(flat)
    return (sums / counts)[:, seg].reshape(raw.shape)


# -- shared by the superpixel methods (lime, kernelshap) ---------------------------------------------------------
def chunk_size(ctx) -> int:
    """Masks composed per call: a whole number of batches, about 256 masks (51 MB at 224 px)."""
    b = max(1, int(ctx.batch_size))
    return b * max(1, -(-256 // b))


def image_segments(ctx, image: torch.Tensor, segmentation: str, n_segments: int, compactness: float, sigma: float,
                   kernel_size: float, max_dist: float, ratio: float) -> np.ndarray:
    """Superpixels of one model input (3, H, W), computed on the display image (true inverse normalisation)."""
    return segment(ctx.display_image(image), segmentation, n_segments=n_segments, compactness=compactness,
                   sigma=sigma, kernel_size=kernel_size, max_dist=max_dist, ratio=ratio, seed=ctx.seed)


def resolve_baseline(ctx, baseline, image: torch.Tensor, segments: np.ndarray):
    """``"segment_mean"`` -> the per-superpixel mean-colour image in model-input space (mean taken in raw RGB via
    ``denormalise``, then ``normalise``); anything else is passed to :meth:`PairContext.baseline` unchanged."""
    if isinstance(baseline, str) and baseline == "segment_mean":
        pre = ctx.model.preprocessing
        raw = pre.denormalise(image.reshape(1, 3, *ctx.size).float())[0]
        return pre.normalise(segment_mean_image(raw, segments).unsqueeze(0))
    return baseline


def coalition_scores(ctx, which: int | None, segments: np.ndarray, coalitions: np.ndarray, baseline) -> torch.Tensor:
    """Similarities of masked images for N coalitions, composed chunk by chunk on the model's device.

    ``which=None``: the query is masked; returns (N, K) from N forwards shared by all K neighbours
    (``ctx.query_mask_scores``). ``which=k``: neighbour k is masked; returns (N,), its similarity to the query.
    """
    image = ctx.query[0] if which is None else ctx.neighbours[which]
    base = resolve_baseline(ctx, baseline, image, segments)
    seg = torch.as_tensor(segments, dtype=torch.long, device=ctx.device)
    z = torch.as_tensor(np.asarray(coalitions), dtype=torch.float32, device=ctx.device)
    out = []
    step = chunk_size(ctx)
    for start in range(0, z.shape[0], step):
        masks = coalition_masks(seg, z[start : start + step])
        if which is None:
            out.append(ctx.query_mask_scores(masks, base))
        else:
            emb = ctx.embed_masked(image, masks, base)
            out.append(ctx.model.similarity(emb, ctx.query_embedding)[:, 0])
    return torch.cat(out)
