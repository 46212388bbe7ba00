"""Model plug-ins for ``torchvision:``, ``torchscript:`` and ``python:`` specs (``timm:``: ``timm_zoo.py``).

Weights always come from a local file (``ARCH@/path/to/weights.pth``); nothing is downloaded. Without weights
the architecture is randomly initialised, which is only useful for tests, and the spec says so.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import torch

from ..errors import ModelSpecError
from .base import Preprocessing, SimModel
from .module import ModuleModel
from .weights import load_strict, read_state_dict

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _split_weights(rest: str) -> tuple[str, str | None]:
    arch, _, weights = rest.partition("@")
    if not arch:
        raise ModelSpecError("model spec needs an architecture name, e.g. timm:resnet18@weights.pth")
    return arch, (weights or None)


def load_torchvision(spec: str, rest: str, layer=None, metric="cosine", device=None, preprocessing=None) -> ModuleModel:
    """``torchvision:ARCH[@WEIGHTS]``: a torchvision classification architecture; embedding = GAP of its last
    spatial map, ImageNet preprocessing."""
    import torchvision

    arch, weights = _split_weights(rest)
    try:
        net = torchvision.models.get_model(arch, weights=None)
    except Exception as exc:  # noqa: BLE001
        raise ModelSpecError(f"torchvision cannot build {arch!r}: {exc}") from None
    if weights:
        load_strict(net, read_state_dict(weights), source=weights)
    pre = preprocessing or Preprocessing(size=224, interpolation="bilinear", **IMAGENET)
    return ModuleModel(spec, net, pre, layer=layer, metric=metric, device=device)


class ScriptedModel(SimModel):
    """A TorchScript file. If the script defines ``features(x)`` and ``head(f)`` methods, they are the split;
    otherwise ``forward(x)`` is an opaque embedder and only black-box (perturbation) explanations apply."""

    def __init__(self, spec, module, preprocessing, metric="cosine", device=None):
        split = hasattr(module, "features") and hasattr(module, "head")
        self.has_features = split
        super().__init__(spec, module, preprocessing, layer="features" if split else "<opaque>", metric=metric,
                         device=device)

    def features(self, x):
        if not self.has_features:
            return super().features(x)
        return self.net.features(x)

    def head(self, feats):
        if not self.has_features:
            return super().head(feats)
        return self.net.head(feats)

    def embed(self, x):
        return self.head(self.features(x)) if self.has_features else self.net(x)


def load_torchscript(spec, rest, layer=None, metric="cosine", device=None, preprocessing=None) -> ScriptedModel:
    """``torchscript:FILE``."""
    path = Path(rest)
    if not path.is_file():
        raise ModelSpecError(f"TorchScript file not found: {path}")
    if layer:
        raise ModelSpecError("--layer does not apply to TorchScript models; define features()/head() in the script")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise ModelSpecError(f"cannot load TorchScript file {path}: {str(exc).splitlines()[0]}") from None
    pre = preprocessing or Preprocessing(size=224, **IMAGENET)
    return ScriptedModel(spec, module, pre, metric=metric, device=device)


def load_python(spec, rest, layer=None, metric="cosine", device=None, preprocessing=None) -> SimModel:
    """``python:MODULE:FACTORY[@WEIGHTS]``: ``FACTORY()`` returns a ready :class:`SimModel` or an ``nn.Module``
    (wrapped like a torchvision model, ImageNet preprocessing); ``@WEIGHTS`` loads a local checkpoint strictly
    into that network (the ``SimModel``'s ``net``), e.g. the output of ``simx train``. A factory with a ``layer``
    parameter gets ``--layer``."""
    rest, weights = rest.partition("@")[0], rest.partition("@")[2] or None
    modname, _, fname = rest.rpartition(":")
    if not modname or not fname:
        raise ModelSpecError(f"python spec must be python:MODULE:FACTORY, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(modname), fname)
    except (ImportError, AttributeError) as exc:
        raise ModelSpecError(f"cannot import factory {fname!r} from {modname!r}: {exc}") from None
    takes_layer = "layer" in inspect.signature(factory).parameters
    obj = factory(layer=layer) if (takes_layer and layer) else factory()
    if weights and isinstance(obj, (SimModel, torch.nn.Module)):
        load_strict(obj.net if isinstance(obj, SimModel) else obj, read_state_dict(weights), source=weights)
    if isinstance(obj, SimModel):
        obj.spec = spec
        if metric != obj.metric:
            obj.metric = metric
        if preprocessing is not None:
            obj.preprocessing = preprocessing
        if device is not None:
            obj.device = torch.device(device)
            obj.net.to(obj.device)
        if layer and not takes_layer and layer != obj.layer:
            raise ModelSpecError(f"factory {rest!r} fixes its layer ({obj.layer!r}); --layer {layer!r} cannot apply")
        return obj
    if isinstance(obj, torch.nn.Module):
        pre = preprocessing or Preprocessing(size=224, **IMAGENET)
        return ModuleModel(spec, obj, pre, layer=layer, metric=metric, device=device)
    raise ModelSpecError(f"factory {rest!r} returned {type(obj).__name__}, expected a SimModel or nn.Module")
