"""``open_clip:ARCH[@WEIGHTS]``: OpenCLIP / CLIP / SigLIP models, image tower for the index, text tower for queries.

``ARCH`` is an open_clip model name (``open_clip.list_models()``, e.g. ``ViT-B-32``, ``ViT-B-16-SigLIP``) or the
path of an open_clip model configuration ``.json`` (``{"embed_dim": ..., "vision_cfg": {...}, "text_cfg":
{...}}``); ``WEIGHTS`` a local ``.safetensors``/``.bin``/``.pth`` state dict of the *whole* model (both towers, as
``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin`` ship on the hub), loaded strictly.
``open_clip:hf-hub:ORG/NAME`` downloads where the machine is online.

The image tower is a :class:`~simx.models.tokens.TokenModel` (open_clip's own ViT, or a timm trunk such as SigLIP's)
or, for the ResNet towers, a :class:`~simx.models.module.ModuleModel` whose head is the attention pool. The text
tower is kept as ``model.text_encoder``: ``model.embed_texts(["a red bus"])`` gives embeddings in the index's space,
so a text can be searched like an image (``simx search INDEX --text ...``). Images are preprocessed with the
model's own mean/std and size (open_clip's ``preprocess_cfg``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import ModelSpecError, WeightsError
from .base import Preprocessing, SimModel
from .module import ModuleModel
from .tokens import TokenModel, layout_for
from .weights import load_strict, read_state_dict


class TextTower:
    """Texts -> (N, D) embeddings (not normalised) with a CLIP model's text encoder and tokenizer."""

    def __init__(self, clip: torch.nn.Module, tokenizer: Any, device: torch.device):
        self.clip = clip.eval().to(device)
        for p in self.clip.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.device = device

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return self.clip.encode_text(tokens, normalize=False).float()


def _tokenizer(cfg: dict):
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    text = cfg.get("text_cfg", {})
    if text.get("hf_tokenizer_name"):
        try:
            return HFTokenizer(text["hf_tokenizer_name"], context_length=text.get("context_length", 77))
        except Exception as exc:  # noqa: BLE001 - transformers raises many things offline
            raise ModelSpecError(f"cannot load the text tokenizer {text['hf_tokenizer_name']!r} (it comes from the "
                                 f"Hugging Face hub): {str(exc).splitlines()[0]}") from None
    return SimpleTokenizer(context_length=text.get("context_length", 77))


def _config(arch: str) -> tuple[str, dict]:
    import open_clip

    path = Path(arch)
    if arch.endswith(".json"):
        if not path.is_file():
            raise ModelSpecError(f"open_clip model configuration not found: {path}")
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelSpecError(f"cannot read open_clip configuration {path}: {exc}") from None
        if isinstance(cfg, dict) and isinstance(cfg.get("model_cfg"), dict):  # a hub open_clip_config.json
            cfg = cfg["model_cfg"]
        if not isinstance(cfg, dict) or "vision_cfg" not in cfg or "text_cfg" not in cfg:
            raise ModelSpecError(f"{path} is not an open_clip model configuration (needs vision_cfg and text_cfg)")
        return path.stem, cfg
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ModelSpecError(f"open_clip has no model {arch!r}; see open_clip.list_models() or pass a config .json")
    return arch, cfg


def build_openclip(spec: str, cfg: dict, weights: str | None, layer: str | None = None, metric: str = "cosine",
                   device=None, preprocessing: Preprocessing | None = None) -> SimModel:
    """An open_clip model from its configuration dict and an optional local weights file."""
    from open_clip.model import CLIP, CustomTextCLIP

    args = {k: v for k, v in cfg.items() if k in ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu",
                                                    "init_logit_scale", "init_logit_bias")}
    custom = "hf_model_name" in cfg.get("text_cfg", {})
    try:
        clip = (CustomTextCLIP if custom else CLIP)(**args)
    except Exception as exc:  # noqa: BLE001
        raise ModelSpecError(f"open_clip cannot build this model: {str(exc).splitlines()[0]}") from None
    if weights:
        state = read_state_dict(weights)
        if any(k.startswith("visual.") for k in state) is False:
            raise WeightsError(f"{weights} is not a whole open_clip model (no 'visual.' keys); open_clip weights "
                               "hold both towers (open_clip_model.safetensors / open_clip_pytorch_model.bin)")
        load_strict(clip, state, source=weights)
    return wrap_openclip(spec, clip, cfg, layer, metric, device, preprocessing)


def wrap_openclip(spec: str, clip: torch.nn.Module, cfg: dict, layer, metric, device, preprocessing) -> SimModel:
    visual = clip.visual
    pcfg = getattr(visual, "preprocess_cfg", {}) or {}
    size = cfg.get("vision_cfg", {}).get("image_size", 224)
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    pre = preprocessing or Preprocessing(size=size, mean=tuple(pcfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
                                         std=tuple(pcfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
                                         interpolation=pcfg.get("interpolation", "bicubic"), crop_pct=1.0)
    trunk = getattr(visual, "trunk", None)
    if trunk is not None:  # open_clip TimmModel: a timm trunk followed by open_clip's pooling/projection head
        layout = layout_for(trunk, post=visual.head)
        if layout is None:
            raise ModelSpecError(f"open_clip timm trunk {type(trunk).__name__} is not a supported transformer")
        model: SimModel = TokenModel(spec, visual, layout, pre, layer=layer, metric=metric, device=device)
    elif layout_for(visual) is not None:
        model = TokenModel(spec, visual, layout_for(visual), pre, layer=layer, metric=metric, device=device)
    elif hasattr(visual, "attnpool") and hasattr(visual, "layer4"):  # CLIP ResNet: attention-pool head
        model = ModuleModel(spec, visual, pre, layer=layer, metric=metric, device=device, last_layer="layer4",
                            pool_fn=visual.attnpool, linear_pool=None)
    else:
        raise ModelSpecError(f"open_clip image tower {type(visual).__name__} is not supported")
    model.text_encoder = TextTower(clip, _tokenizer(cfg), model.device)
    return model


def load_openclip(spec: str, rest: str, layer=None, metric="cosine", device=None, preprocessing=None) -> SimModel:
    """``open_clip:ARCH[@WEIGHTS]`` or ``open_clip:hf-hub:ORG/NAME``."""
    try:
        import open_clip  # noqa: F401
    except ImportError:
        raise ModelSpecError("open_clip: specs need the open-clip-torch package: pip install 'simx[clip]'") from None
    if rest.startswith("hf-hub:"):
        return _load_hub(spec, rest, layer, metric, device, preprocessing)
    arch, _, weights = rest.partition("@")
    if not arch:
        raise ModelSpecError("open_clip spec needs a model name or configuration, e.g. open_clip:ViT-B-32@weights.safetensors")
    _, cfg = _config(arch)
    return build_openclip(spec, cfg, weights or None, layer, metric, device, preprocessing)


def _load_hub(spec, rest, layer, metric, device, preprocessing) -> SimModel:
    import open_clip

    from .timm_zoo import _hub_reachable

    name = rest[len("hf-hub:"):]
    hint = (f"download open_clip_config.json and open_clip_model.safetensors from https://huggingface.co/{name} on a "
            "connected machine and pass them: --model open_clip:/path/open_clip_config.json@/path/"
            "open_clip_model.safetensors (the config's \"model_cfg\" is the configuration)")
    if not _hub_reachable():
        raise WeightsError(f"cannot reach the Hugging Face hub for {spec!r} (offline). {hint}")
    try:
        clip = open_clip.create_model(rest, pretrained=None)
        cfg = open_clip.get_model_config(rest) or {}
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"cannot load {spec!r} from the hub: {str(exc).splitlines()[0]}. {hint}") from None
    return wrap_openclip(spec, clip, cfg, layer, metric, device, preprocessing)
