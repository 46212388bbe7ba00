"""``timm:ARCH[@WEIGHTS]`` and ``timm:hf-hub:ORG/NAME``: any timm architecture, CNN or transformer.

CNNs become a :class:`~simx.models.module.ModuleModel` split at their last spatial map; transformers (ViT, DeiT,
DINOv2 ``vit_*_dinov2``, SigLIP ``vit_*_siglip*``, EVA-02 ``eva02_*``, Swin ``swin*``) a
:class:`~simx.models.tokens.TokenModel`.

Weights come from a local ``.safetensors``/``.pth``/``.bin`` file, read without unpickling. Before the strict load,
the checkpoint goes through the architecture family's own ``checkpoint_filter_fn`` from timm, which converts the
original releases' key layouts (OpenAI CLIP, DINOv2, EVA, official Swin) and resamples absolute position embeddings
when the checkpoint was trained at another input size than the index uses. The classifier is sized from the
checkpoint: a backbone checkpoint without one (``num_classes=0``, how embedders ship) loads into a headless model,
one with another number of classes gets a classifier of that size. Any remaining mismatch is refused with the
first missing, unexpected and mis-shaped keys named.
"""

from __future__ import annotations

import importlib
import os
import socket

import torch

from ..errors import ModelSpecError, WeightsError
from .base import Preprocessing
from .module import ModuleModel
from .tokens import TokenModel, layout_for
from .weights import load_strict, read_state_dict

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
#: timm modules whose architectures take ``img_size`` (position embeddings built for the index's input size)
SIZED_FAMILIES = {"vision_transformer", "deit", "eva", "swin_transformer", "swin_transformer_v2"}


def _split_weights(rest: str) -> tuple[str, str | None]:
    arch, _, weights = rest.partition("@")
    if not arch:
        raise ModelSpecError("model spec needs an architecture name, e.g. timm:resnet18@weights.pth")
    return arch, (weights or None)


def _family(arch: str) -> str:
    import timm

    if not timm.models.is_model(arch):
        raise ModelSpecError(f"timm has no architecture {arch!r} (see timm.list_models())")
    return timm.models.model_entrypoint(arch).__module__.rsplit(".", 1)[-1]


def _classifier_keys(net: torch.nn.Module) -> list[str]:
    clf = (getattr(net, "pretrained_cfg", {}) or {}).get("classifier", "head")
    return list(clf) if isinstance(clf, (list, tuple)) else [clf]


def fit_classifier(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Size the model's classifier like the checkpoint's: none (headless backbone) or its number of classes."""
    keys = _classifier_keys(net)
    weights = [state.get(f"{k}.weight") for k in keys]
    if not hasattr(net, "reset_classifier"):
        return
    if all(w is None for w in weights):
        if getattr(net, "num_classes", 0):
            net.reset_classifier(0)
    elif weights[0] is not None and weights[0].dim() == 2 and int(weights[0].shape[0]) != getattr(net, "num_classes", -1):
        net.reset_classifier(int(weights[0].shape[0]))


def filter_checkpoint(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply the family's ``checkpoint_filter_fn`` (format conversion, position-embedding resampling)."""
    module = importlib.import_module(type(net).__module__)
    fn = getattr(module, "checkpoint_filter_fn", None)
    if fn is None:
        return state
    try:
        return dict(fn(state, net))
    except Exception as exc:  # noqa: BLE001 - timm's filters raise anything on foreign layouts
        raise WeightsError(f"the checkpoint does not convert to {type(net).__name__}: {exc}") from None


def _preprocessing(net: torch.nn.Module, size: int | None) -> Preprocessing:
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    return Preprocessing(size=size or int(cfg.get("input_size", (3, 224, 224))[-1]),
                         mean=tuple(cfg.get("mean", IMAGENET["mean"])), std=tuple(cfg.get("std", IMAGENET["std"])),
                         interpolation=cfg.get("interpolation", "bicubic"),
                         crop_pct=float(cfg.get("crop_pct", 0.875)))


def _hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


def load_timm_hub(spec: str, name: str, layer=None, metric="cosine", device=None, preprocessing=None):
    """``timm:hf-hub:ORG/NAME``: weights and configuration from the Hugging Face hub (needs the network)."""
    import timm

    hint = (f"download model.safetensors and config.json from https://huggingface.co/{name} on a connected machine "
            f"and pass the local file instead: --model timm:ARCH@/path/to/model.safetensors (ARCH is "
            f"\"architecture\" in config.json)")
    if not _hub_reachable():
        raise WeightsError(f"cannot reach the Hugging Face hub for {spec!r} (offline). {hint}")
    kwargs = {"img_size": preprocessing.size} if preprocessing is not None else {}
    try:
        net = timm.create_model(f"hf-hub:{name}", pretrained=True, **kwargs)
    except TypeError:
        net = timm.create_model(f"hf-hub:{name}", pretrained=True)
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"cannot load {spec!r} from the hub: {str(exc).splitlines()[0]}. {hint}") from None
    return wrap_timm(spec, net, layer, metric, device, preprocessing)


def load_timm(spec: str, rest: str, layer=None, metric="cosine", device=None, preprocessing=None):
    """``timm:ARCH[@WEIGHTS]``: any timm architecture; preprocessing from its pretrained config."""
    import timm

    for prefix in ("hf-hub:", "hf_hub:"):
        if rest.startswith(prefix):
            return load_timm_hub(spec, rest[len(prefix):], layer, metric, device, preprocessing)
    arch, weights = _split_weights(rest)
    kwargs = {}
    if preprocessing is not None and _family(arch) in SIZED_FAMILIES:
        kwargs["img_size"] = preprocessing.size
    try:
        net = timm.create_model(arch, pretrained=False, **kwargs)
    except ModelSpecError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ModelSpecError(f"timm cannot build {arch!r}: {exc}") from None
    if weights:
        state = read_state_dict(weights)
        fit_classifier(net, state)
        load_strict(net, filter_checkpoint(net, state), source=weights)
    return wrap_timm(spec, net, layer, metric, device, preprocessing)


def _imagenet_classifier(net: torch.nn.Module):
    if getattr(net, "num_classes", 0) != 1000:
        return None, None
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return net.get_classifier(), [info.index_to_description(i) for i in range(1000)]


def wrap_timm(spec: str, net: torch.nn.Module, layer, metric, device, preprocessing):
    """A built timm network -> TokenModel (transformers) or ModuleModel (CNNs)."""
    pre = preprocessing or _preprocessing(net, None)
    classifier, names = _imagenet_classifier(net)
    layout = layout_for(net)
    if layout is not None:
        return TokenModel(spec, net, layout, pre, layer=layer, metric=metric, device=device,
                          classifier=classifier, class_names=names)
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
    seen: list[tuple[str, object]] = []
    handles = []

    def hook_for(name):
        def hook(_m, _i, out):
            seen.append((name, out))
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
    owners = [name for name, out in seen if out is final]
    if not owners or final.dim() != 4:
        raise ModelSpecError("this timm model's forward_features is not a spatial map and it is not a supported "
                             "transformer family (ViT, DeiT, DINOv2, SigLIP, EVA, Swin); pass --layer explicitly")
    return owners[-1]
