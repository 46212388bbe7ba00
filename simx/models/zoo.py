"""Model plug-ins for ``timm:``, ``torchvision:``, ``torchscript:`` and ``python:`` specs.

Weights always come from a local file (``ARCH@/path/to/weights.pth``); nothing is downloaded. Without weights
the architecture is randomly initialised, which is only useful for tests, and the spec says so.
"""

from __future__ import annotations

import importlib
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


def load_timm(spec: str, rest: str, layer=None, metric="cosine", device=None, preprocessing=None) -> ModuleModel:
    """``timm:ARCH[@WEIGHTS]``: any timm architecture; preprocessing from its pretrained config."""
    import timm

    arch, weights = _split_weights(rest)
    try:
        net = timm.create_model(arch, pretrained=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelSpecError(f"timm cannot build {arch!r}: {exc}") from None
    if weights:
        load_strict(net, read_state_dict(weights), source=weights)
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    pre = preprocessing or Preprocessing(size=size, mean=tuple(cfg.get("mean", IMAGENET["mean"])),
                                         std=tuple(cfg.get("std", IMAGENET["std"])),
                                         interpolation=cfg.get("interpolation", "bicubic"),
                                         crop_pct=float(cfg.get("crop_pct", 0.875)))
    classifier = names = None
    if getattr(net, "num_classes", 0) == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        names = [info.index_to_description(i) for i in range(1000)]
        classifier = net.get_classifier()
    # The embedding is timm's pre-logits head applied to forward_features' output (the last spatial map).
    last = _timm_last_layer(net, pre.size)
    pool_fn = lambda f: net.forward_head(f, pre_logits=True)  # noqa: E731
    model = ModuleModel(spec, net, pre, layer=layer, metric=metric, device=device, pool_fn=pool_fn,
                        last_layer=last, classifier=classifier, class_names=names, linear_pool=None)
    # Closed-form methods need to know whether the head is plain global average pooling: check it numerically.
    with torch.inference_mode():
        probe = torch.randn(2, model.feature_channels, 3, 3, device=model.device)
        if torch.allclose(pool_fn(probe), probe.mean(dim=(2, 3)), atol=1e-5):
            model._linear_pool = "avg"
    return model


def _timm_last_layer(net: torch.nn.Module, size: int) -> str:
    """The module whose output *is* ``forward_features``' output."""
    out_box: dict[str, object] = {}
    owners: list[str] = []
    handles = []

    def hook_for(name):
        def hook(_m, _i, out):
            out_box.setdefault("seen", []).append((name, out))  # type: ignore[union-attr]
        return hook

    for name, mod in net.named_modules():
        if name:
            handles.append(mod.register_forward_hook(hook_for(name)))
    try:
        with torch.inference_mode():
            final = net.eval().forward_features(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    for name, out in out_box.get("seen", []):  # type: ignore[union-attr]
        if out is final:
            owners.append(name)
    if not owners or final.dim() != 4:
        raise ModelSpecError("this timm model's forward_features is not a spatial map; pass --layer explicitly")
    return owners[-1]


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
    into that network (the ``SimModel``'s ``net``), e.g. the output of ``simx train``."""
    rest, weights = rest.partition("@")[0], rest.partition("@")[2] or None
    modname, _, fname = rest.rpartition(":")
    if not modname or not fname:
        raise ModelSpecError(f"python spec must be python:MODULE:FACTORY, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(modname), fname)
    except (ImportError, AttributeError) as exc:
        raise ModelSpecError(f"cannot import factory {fname!r} from {modname!r}: {exc}") from None
    obj = factory()
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
        if layer and layer != obj.layer:
            raise ModelSpecError(f"factory {rest!r} fixes its layer ({obj.layer!r}); --layer {layer!r} cannot apply")
        return obj
    if isinstance(obj, torch.nn.Module):
        pre = preprocessing or Preprocessing(size=224, **IMAGENET)
        return ModuleModel(spec, obj, pre, layer=layer, metric=metric, device=device)
    raise ModelSpecError(f"factory {rest!r} returned {type(obj).__name__}, expected a SimModel or nn.Module")
