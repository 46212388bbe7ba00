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

Every method names its segmentation with ONE spec string, ``"NAME:key=value,..."`` (:func:`parse_segmentation`):
``"slic:n=50,compactness=20,sigma=1"``, ``"quickshift:kernel_size=4,max_dist=200,ratio=0.2"``; keys left out take the
defaults above, a bare ``"slic"`` is all defaults, and a bad spec is an :class:`~simx.errors.ExplainError` that
lists the valid keys.

Labels are made contiguous 0..M-1. :func:`paint` turns per-superpixel values (K, M) into pixel maps
``map[k, u] = values[k, segments(u)]``; :func:`segment_mean_image` gives LIME's default fill (``hide_color=None``:
every pixel replaced by the mean colour of its superpixel, computed in raw RGB and normalised back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np
import torch

from ..errors import ExplainError
from .masks import coalition_masks

#: segmentation name -> its parameters and their defaults (the keys of a spec string).
SEGMENTATION_DEFAULTS: dict[str, dict[str, float]] = {
    "slic": {"n": 50, "compactness": 20.0, "sigma": 1.0},
    "quickshift": {"kernel_size": 4.0, "max_dist": 200.0, "ratio": 0.2},
}
SEGMENTATIONS = tuple(SEGMENTATION_DEFAULTS)


@dataclass(frozen=True)
class Segmentation:
    """A parsed segmentation spec: the algorithm, every parameter (defaults filled in) and the keys the spec
    itself gave (so a method can put its own defaults on the others)."""

    name: str
    params: dict[str, float] = field(default_factory=dict)
    given: frozenset[str] = field(default=frozenset(), compare=False)

    def __str__(self) -> str:
        return f"{self.name}:" + ",".join(f"{k}={_number(v)}" for k, v in self.params.items())

    @property
    def n(self) -> int:
        """The number of superpixels asked for (SLIC's ``n``; quickshift has no target, 50 is its typical count
        on a 224 px picture, used for cost estimates only)."""
        return int(self.params.get("n", 50))


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def parse_segmentation(spec: str | Segmentation) -> Segmentation:
    """``"slic:n=50,compactness=20"`` -> :class:`Segmentation`; keys left out take their defaults.

    Raises :class:`~simx.errors.ExplainError` naming the valid algorithms or keys for anything else."""
    if isinstance(spec, Segmentation):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ExplainError(f"segmentation must be a spec string such as 'slic:n=50,compactness=20', got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in SEGMENTATION_DEFAULTS:
        raise ExplainError(f"unknown segmentation {name!r} in {spec!r}; choose one of {', '.join(SEGMENTATIONS)} "
                           "(e.g. 'slic:n=50,compactness=20')")
    defaults = SEGMENTATION_DEFAULTS[name]
    params = dict(defaults)
    given = set()
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in defaults:
            raise ExplainError(f"segmentation {spec!r}: {item!r} is not key=value with a key of {name} "
                               f"({', '.join(defaults)})")
        try:
            number = float(value)
        except ValueError:
            raise ExplainError(f"segmentation {spec!r}: {key} must be a number, got {value.strip()!r}") from None
        if not np.isfinite(number) or number < 0 or (key == "n" and number < 1):
            raise ExplainError(f"segmentation {spec!r}: {key} must be {'>= 1' if key == 'n' else '>= 0'}, "
                               f"got {value.strip()}")
        params[key] = number
        given.add(key)
    return Segmentation(name, params, frozenset(given))


def method_segmentation(spec: str | Segmentation, **defaults: float) -> Segmentation:
    """A method's segmentation: the caller's spec, with the method's own ``defaults`` for keys the spec leaves
    out (kernelshap and lime use the global defaults; shapleytaylor asks for fewer, rounder superpixels)."""
    seg = parse_segmentation(spec)
    own = {k: float(v) for k, v in defaults.items() if k in seg.params and k not in seg.given}
    return Segmentation(seg.name, {**seg.params, **own}, seg.given)


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


def segment(image: np.ndarray, segmentation: str | Segmentation = "slic", seed: int = 0) -> np.ndarray:
    """Superpixels of an (H, W, 3) RGB image by a segmentation spec (:func:`parse_segmentation`)."""
    seg = parse_segmentation(segmentation)
    p = seg.params
    if seg.name == "slic":
        return slic_segments(image, n_segments=int(p["n"]), compactness=p["compactness"], sigma=p["sigma"])
    return quickshift_segments(image, kernel_size=p["kernel_size"], max_dist=p["max_dist"], ratio=p["ratio"],
                               seed=seed)


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


def image_segments(ctx, image: torch.Tensor, segmentation: str | Segmentation) -> np.ndarray:
    """Superpixels of one model input (3, H, W), computed on the display image (true inverse normalisation)."""
    return segment(ctx.display_image(image), segmentation, seed=ctx.seed)


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
