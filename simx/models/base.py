"""The one interface every model plug-in answers to.

A :class:`SimModel` splits a network at its *explained layer* into two differentiable halves:

* ``features(x)`` -> the spatial feature map F(x) of the explained layer, shape (B, C, h, w);
* ``head(F)`` -> the embedding e = g(pool(F)), shape (B, D), before any L2 normalisation.

``embed(x) = head(features(x))``. The similarity metric (``cosine`` by default, ``ip`` or ``l2``) is a property of
the model, recorded in the index metadata with the spec string, so an index can always be reopened with the
same model. Explanation methods only see this interface (see ``simx.explain``), which is what keeps them model
agnostic; closed-form methods additionally ask :meth:`SimModel.linear_head` whether the head is a pooling
followed by an (optional) affine map.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import SimxError

METRICS = ("cosine", "ip", "l2")
FITS = ("pad", "crop", "squash")


@dataclass
class Preprocessing:
    """How a PIL image becomes the model's input tensor (stored in ``meta.json``).

    ``fit``: ``pad`` letterboxes the whole image on a white square (nothing is cut, so boxes and explanations
    cover the full picture; the default), ``crop`` resizes the short side to ``size / crop_pct`` and centre-crops
    (the ImageNet evaluation protocol), ``squash`` resizes to ``size`` x ``size`` ignoring the aspect ratio.
    """

    size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    fit: str = "pad"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)

    # -- geometry ------------------------------------------------------------------------------------------
    def _resample(self) -> int:
        return {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}.get(
            self.interpolation, Image.BICUBIC
        )

    def fit_image(self, img: Image.Image) -> Image.Image:
        """The RGB image exactly as the model sees it, at ``size`` x ``size`` (before normalisation)."""
        if img.mode != "RGB":
            img = img.convert("RGB")
        s, (w, h) = self.size, img.size
        if self.fit == "squash":
            return img.resize((s, s), self._resample())
        if self.fit == "crop":
            short = int(round(s / self.crop_pct))
            scale = short / min(w, h)
            nw, nh = max(s, int(round(w * scale))), max(s, int(round(h * scale)))
            img = img.resize((nw, nh), self._resample())
            left, top = (nw - s) // 2, (nh - s) // 2
            return img.crop((left, top, left + s, top + s))
        scale = s / max(w, h)
        nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        canvas = Image.new("RGB", (s, s), (255, 255, 255))
        canvas.paste(img.resize((nw, nh), self._resample()), ((s - nw) // 2, (s - nh) // 2))
        return canvas

    def box_transform(self, width: int, height: int) -> tuple[float, float, float]:
        """(scale, dx, dy) mapping original pixel coords to input coords: x' = x * scale + dx."""
        s = self.size
        if self.fit == "squash":
            raise SimxError("box_transform is not affine-isotropic for fit='squash'; use fit='pad' or 'crop'")
        if self.fit == "crop":
            short = int(round(s / self.crop_pct))
            scale = short / min(width, height)
            nw, nh = max(s, int(round(width * scale))), max(s, int(round(height * scale)))
            return scale, -((nw - s) // 2), -((nh - s) // 2)
        scale = s / max(width, height)
        nw, nh = max(1, int(round(width * scale))), max(1, int(round(height * scale)))
        return scale, (s - nw) // 2, (s - nh) // 2

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB (B, 3, H, W) -> model input."""
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """The exact inverse of :meth:`normalise`: model input -> [0, 1] RGB."""
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return x * std + mean

    def to_tensor(self, img: Image.Image) -> torch.Tensor:
        """PIL image -> normalised (3, size, size) float tensor."""
        arr = np.asarray(self.fit_image(img), dtype=np.float32) / 255.0
        t = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)
        return self.normalise(t)[0]


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class LinearHead:
    """Describes a head ``e = W pool(F) + b`` for closed-form methods. ``weight`` is (D, C) or None (identity)."""

    pool: str  # "avg" or "max"
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None


@dataclass
class ModelInfo:
    """What is recorded about a model in an index's ``meta.json``."""

    spec: str
    layer: str
    metric: str
    dim: int
    feature_channels: int
    preprocessing: dict[str, Any] = field(default_factory=dict)


class SimModel:
    """Base class of model plug-ins. Subclasses implement :meth:`features` and :meth:`head`.

    The network itself is ``self.net`` (an ``nn.Module`` in eval mode on ``self.device``).
    """

    #: True when :meth:`features` exposes a spatial map (False for opaque TorchScript embedders).
    has_features: bool = True
    #: CLIP-style models: texts -> (N, D) embeddings in the image embedding space (see :meth:`embed_texts`)
    text_encoder: Any = None

    def __init__(
        self,
        spec: str,
        net: torch.nn.Module,
        preprocessing: Preprocessing,
        layer: str,
        metric: str = "cosine",
        device: str | torch.device | None = None,
    ):
        if metric not in METRICS:
            raise SimxError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        if preprocessing.fit not in FITS:
            raise SimxError(f"unknown fit {preprocessing.fit!r}; choose one of {', '.join(FITS)}")
        self.spec = spec
        self.device = torch.device(device) if device is not None else default_device()
        self.net = net.eval().to(self.device)
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.preprocessing = preprocessing
        self.layer = layer
        self.metric = metric
        self._dim: int | None = None
        self._channels: int | None = None

    # -- the interface ---------------------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial feature map of the explained layer, (B, C, h, w)."""
        raise SimxError(f"{type(self).__name__} exposes no spatial features")

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        """Embedding from the explained layer's map, (B, D), not normalised."""
        raise SimxError(f"{type(self).__name__} has no head")

    def linear_head(self) -> LinearHead | None:
        """``LinearHead`` when ``head`` is GAP/GMP followed by an optional affine map, else None."""
        return None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Input batch -> embeddings (B, D), not normalised."""
        return self.head(self.features(x))

    # -- helpers shared by all plug-ins ------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision on CUDA, a no-op on CPU."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def preprocess(self, img: Image.Image) -> torch.Tensor:
        """PIL image -> normalised input tensor (3, S, S) on the CPU."""
        return self.preprocessing.to_tensor(img)

    def preprocess_batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """List of PIL images -> (B, 3, S, S) on the model's device."""
        return torch.stack([self.preprocess(im) for im in images]).to(self.device)

    @property
    def input_size(self) -> tuple[int, int]:
        s = self.preprocessing.size
        return (s, s)

    def normalise_embeddings(self, e: torch.Tensor) -> torch.Tensor:
        """What goes into FAISS: L2-normalised for ``cosine``, unchanged for ``ip`` and ``l2``."""
        return F.normalize(e.float(), dim=-1) if self.metric == "cosine" else e.float()

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Similarity of every row of ``a`` (N, D) with every row of ``b`` (K, D) -> (N, K).

        cosine: cos(a, b); ip: <a, b>; l2: -||a - b||^2 (higher is more similar for every metric).
        """
        a, b = a.float(), b.float()
        if self.metric == "cosine":
            return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
        if self.metric == "ip":
            return a @ b.T
        return -torch.cdist(a, b).pow(2)

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """PIL images -> index-ready float32 embeddings (N, D)."""
        out = []
        for i in range(0, len(images), batch_size):
            x = self.preprocess_batch(images[i : i + batch_size])
            with self.autocast():
                out.append(self.normalise_embeddings(self.embed(x)).cpu())
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    @property
    def supports_text(self) -> bool:
        """True when the model has a text tower (text queries)."""
        return self.text_encoder is not None

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> index-ready float32 embeddings (N, D), normalised like image embeddings."""
        if self.text_encoder is None:
            raise SimxError(f"model {self.spec!r} has no text tower; text queries need a CLIP-style model "
                            "(open_clip:ARCH@WEIGHTS)")
        texts = [str(t) for t in texts]
        if not texts or not all(t.strip() for t in texts):
            raise SimxError("a text query must not be empty")
        return self.normalise_embeddings(self.text_encoder(texts)).cpu().numpy().astype(np.float32)

    def _probe(self) -> None:
        with torch.inference_mode():
            x = torch.zeros(1, 3, *self.input_size, device=self.device)
            if self.has_features:
                f = self.features(x)
                self._channels = int(f.shape[1])
                self._dim = int(self.head(f).shape[-1])
            else:
                self._channels = 0
                self._dim = int(self.embed(x).shape[-1])

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        if self._dim is None:
            self._probe()
        return int(self._dim)  # type: ignore[arg-type]

    @property
    def feature_channels(self) -> int:
        if self._channels is None:
            self._probe()
        return int(self._channels)  # type: ignore[arg-type]

    def info(self) -> ModelInfo:
        """The record stored with an index."""
        return ModelInfo(
            spec=self.spec,
            layer=self.layer,
            metric=self.metric,
            dim=self.dim,
            feature_channels=self.feature_channels,
            preprocessing=self.preprocessing.to_dict(),
        )

    def classify(self, image: Image.Image, k: int = 5) -> list[tuple[str, float]]:
        """Top-k ImageNet classes (label, probability) for models that keep their classifier."""
        raise SimxError(f"model {self.spec!r} has no ImageNet classifier")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(spec={self.spec!r}, layer={self.layer!r}, metric={self.metric!r}, device={self.device})"
