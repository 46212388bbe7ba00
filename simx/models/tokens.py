"""Transformer plug-ins: ViT / DeiT / DINOv2 / SigLIP / EVA-02 / Swin / OpenCLIP image towers as :class:`SimModel`.

A token model is a stack of *layers* (transformer blocks, Swin stages, the final norm) between an embedding step
(patch embedding, position embedding, class / register tokens) and a pooling step (class token, mean of patch tokens,
attention pool / MAP head, then any projection). Splitting at layer ``i``:

* ``features(x)`` runs the embedding and layers 0..i and returns the patch tokens as a (B, C, h, w)
  :class:`~simx.models.tokenmap.TokenMap` (a *view*: ViT tokens are transposed and unflattened, Swin's NHWC stage
  output is permuted; neither is copied), carrying the class / distillation / register tokens;
* ``head(F)`` puts the prefix tokens back in front of the grid and runs layers i+1.. and the pooling, so
  ``head(features(x))`` is the model's own embedding (the tests check atol 1e-5 for every family).

Default explained layer: the final norm's output where the pooling reads the patch tokens (mean pooling, MAP head,
Swin), so the head is the pooling alone; the *input of the last block* where the embedding is the class token, since
at the final norm the class token no longer depends on any patch token (every gradient and closed form would be 0
there; pytorch-grad-cam's ViT recipe explains ``blocks[-1].norm1`` for the same reason). ``--layer blocks.7`` or
``stages.2`` (Swin) picks another layer; position embeddings are built for the index's input size (absolute ones
are resampled when a checkpoint was trained at another size, rotary ones are computed for the grid at hand).

Attention recording (for attention-based explanations): ``head(F, attention=list)`` appends a record of every later
block's attention with its autograd graph (:mod:`simx.models.attention_record`: the fused kernel's output A V for
timm's plain attention, the explicitly computed probabilities (B, heads, T, T) elsewhere). Families whose attention is windowed (Swin) report ``global_attention = False``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelSpecError, SimxError
from .attention_record import can_replay, fused_recording_forward
from .base import LinearHead, Preprocessing, SimModel
from .tokenmap import TokenMap, plain, prefix_of


class TokenLayout:
    """How one family's network is walked: embedding, named layers, pooling. Subclasses per family."""

    #: True when every block attends over all tokens (a token-to-token attention matrix exists).
    global_attention = True
    #: canonical layer names, in forward order (the last one is the final norm where the family has one)
    layers: list[str]

    def __init__(self, net: nn.Module):
        self.net = net

    def aliases(self, name: str) -> str:
        return name

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Input (B, 3, H, W) -> (state before layer 0, content-independent context such as rotary tables)."""
        raise SimxError(f"{type(self).__name__} cannot embed")

    def run(self, state: torch.Tensor, start: int, stop: int, ctx: dict, attention: list | None) -> torch.Tensor:
        raise SimxError(f"{type(self).__name__} cannot run layers")

    def to_map(self, state: torch.Tensor, ctx: dict) -> TokenMap:
        raise SimxError(f"{type(self).__name__} has no map")

    def from_map(self, feats: torch.Tensor, ctx: dict) -> torch.Tensor:
        raise SimxError(f"{type(self).__name__} has no map")

    def pool(self, state: torch.Tensor) -> torch.Tensor:
        raise SimxError(f"{type(self).__name__} cannot pool")

    def default_layer(self) -> str:
        return self.layers[-1]

    def readout(self, relevance: torch.Tensor) -> torch.Tensor:
        raise SimxError(f"{type(self).__name__} has no global token-to-token attention")

    #: number of non-grid (prefix) tokens
    num_prefix: int = 0


# -- attention recording ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def recording(attn_modules: list[nn.Module], sink: list | None):
    """While active, timm attention modules append their attention to sink: plain ``Attention`` (ViT, DeiT, DINOv2,
    SigLIP) as a :class:`~simx.models.attention_record.SoftmaxAttention` computed by the fused kernel, others (EVA)
    their softmax computed explicitly, with its graph."""
    if sink is None:
        yield
        return
    handles, fused, replayed = [], [], []
    for mod in attn_modules:
        if can_replay(mod):  # fused kernel, A V recorded (simx.models.attention_record)
            mod.forward = fused_recording_forward(mod, sink)
            replayed.append(mod)
            continue
        drop = getattr(mod, "attn_drop", None)
        if drop is None or not hasattr(mod, "fused_attn"):
            raise SimxError(f"attention module {type(mod).__name__} cannot record its attention map")
        fused.append((mod, mod.fused_attn))
        mod.fused_attn = False
        handles.append(drop.register_forward_hook(lambda _m, _i, out: sink.append(out)))
    try:
        yield
    finally:
        for mod in replayed:
            del mod.forward  # back to the class's forward
        for mod, was in fused:
            mod.fused_attn = was
        for h in handles:
            h.remove()


@contextlib.contextmanager
def unfused(net: nn.Module, enabled: bool):
    """Explicit (unfused) attention in every timm attention module of ``net`` while active: PyTorch's fused CPU
    attention kernel has no double backward, which second-order methods (jointhessian) need."""
    mods = [m for m in net.modules() if hasattr(m, "fused_attn")] if enabled else []
    was = [m.fused_attn for m in mods]
    for m in mods:
        m.fused_attn = False
    try:
        yield
    finally:
        for m, w in zip(mods, was):
            m.fused_attn = w


def _grid_tokens(state: torch.Tensor, num_prefix: int, grid: tuple[int, int]) -> TokenMap:
    """(B, T, C) tokens -> TokenMap (B, C, h, w) view of the patch tokens + prefix (B, P, C)."""
    patches = state[:, num_prefix:]
    if patches.shape[1] != grid[0] * grid[1]:
        raise SimxError(f"{patches.shape[1]} patch tokens do not form the {grid[0]} x {grid[1]} grid")
    return TokenMap.wrap(patches.transpose(1, 2).unflatten(2, grid), state[:, :num_prefix])


def _tokens_from_map(feats: torch.Tensor, num_prefix: int, what: str) -> torch.Tensor:
    """TokenMap (B, C, h, w) -> (B, P + h w, C) tokens; a map without its prefix is refused when one is needed."""
    grid = plain(feats).flatten(2).transpose(1, 2)
    if num_prefix == 0:
        return grid
    prefix = prefix_of(feats)
    if prefix is None:
        raise SimxError(f"{what} needs the class/register tokens that travel with its feature maps; this map is a "
                        "plain tensor (it lost them, e.g. after a numpy round trip): pass the model's own "
                        "features() output, or explain at the final norm (--layer norm) where the head reads "
                        "only patch tokens")
    if prefix.is_inference() and not torch.is_inference_mode_enabled():
        prefix = prefix.clone()
    if prefix.shape[0] != grid.shape[0]:
        prefix = prefix.expand(grid.shape[0], -1, -1)
    return torch.cat([prefix.to(grid.dtype), grid], dim=1)


class TimmViTLayout(TokenLayout):
    """timm ``VisionTransformer`` (ViT, DeiT incl. distilled, DINOv2, SigLIP, CLIP towers) and ``Eva`` (EVA-02)."""

    def __init__(self, net: nn.Module, post: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__(net)
        self.post = post
        self.blocks = list(net.blocks)
        self.layers = [f"blocks.{i}" for i in range(len(self.blocks))] + ["norm"]
        self.num_prefix = int(getattr(net, "num_prefix_tokens", 0))
        self.is_eva = hasattr(net, "rope")

    def aliases(self, name: str) -> str:
        return {"fc_norm": "norm", "final": "norm"}.get(name, name)

    def uses_prefix_pooling(self) -> bool:
        net = self.net
        if getattr(net, "attn_pool", None) is not None:
            return bool(getattr(net, "pool_include_prefix", False))
        return self.num_prefix > 0 and getattr(net, "global_pool", "token") in ("token", "")

    def default_layer(self) -> str:
        if self.uses_prefix_pooling() and len(self.blocks) >= 2:
            return self.layers[-3]  # output of the second-last block = input of the last one
        return "norm"

    def embed(self, x):
        net = self.net
        x = net.patch_embed(x)
        grid = tuple(x.shape[1:3]) if x.dim() == 4 else tuple(net.patch_embed.grid_size)
        ctx: dict[str, Any] = {"grid": grid}
        if self.is_eva:
            x, rope = net._pos_embed(x)
            ctx["rope"] = rope
        else:
            x = net._pos_embed(x)
        drop = getattr(net, "patch_drop", None)  # identity in eval; EVA applies its own inside _pos_embed
        if drop is not None and not self.is_eva:
            x = drop(x)
        x = net.norm_pre(x)
        return x, ctx

    def run(self, state, start, stop, ctx, attention):
        rope = ctx.get("rope")
        mixed = self.is_eva and getattr(self.net, "rope_mixed", False)
        for i in range(start, min(stop, len(self.blocks))):
            blk = self.blocks[i]
            with recording([blk.attn], attention):
                if self.is_eva:
                    state = blk(state, rope=rope[i] if (mixed and rope is not None) else rope)
                else:
                    state = blk(state)
        if start <= len(self.blocks) < stop:
            state = self.net.norm(state)
        return state

    def to_map(self, state, ctx):
        return _grid_tokens(state, self.num_prefix, ctx["grid"])

    def from_map(self, feats, ctx):
        return _tokens_from_map(feats, self.num_prefix, "this transformer's head")

    def pool(self, state):
        e = self.net.forward_head(state, pre_logits=True)
        return self.post(e) if self.post is not None else e

    def readout(self, relevance: torch.Tensor) -> torch.Tensor:
        p = self.num_prefix
        if self.uses_prefix_pooling():
            rows = 2 if "Distilled" in type(self.net).__name__ else 1
            return relevance[:, :rows].mean(dim=1)
        return relevance[:, p:].mean(dim=1)


class TimmSwinLayout(TokenLayout):
    """timm ``SwinTransformer`` (v1/v2): NHWC stage outputs, permuted (not copied) to NCHW maps."""

    global_attention = False

    def __init__(self, net: nn.Module):
        super().__init__(net)
        self.stages = list(net.layers)
        self.layers = [f"layers.{i}" for i in range(len(self.stages))] + ["norm"]

    def aliases(self, name: str) -> str:
        if name.startswith("stages."):
            return "layers." + name.split(".", 1)[1]
        return name

    def embed(self, x):
        return self.net.patch_embed(x), {}

    def run(self, state, start, stop, ctx, attention):
        if attention is not None:
            raise SimxError("Swin attends within shifted windows: it has no token-to-token attention matrix")
        for i in range(start, min(stop, len(self.stages))):
            state = self.stages[i](state)
        if start <= len(self.stages) < stop:
            state = self.net.norm(state)
        return state

    def to_map(self, state, ctx):
        return TokenMap.wrap(state.permute(0, 3, 1, 2), None)

    def from_map(self, feats, ctx):
        return plain(feats).permute(0, 2, 3, 1)

    def pool(self, state):
        return self.net.forward_head(state, pre_logits=True)


class OpenClipViTLayout(TokenLayout):
    """open_clip's own ``VisionTransformer`` (CLIP / OpenCLIP ViT image towers): conv1 patches, class token,
    ``transformer.resblocks``, ``ln_post``, pooling (class token or mean), projection ``proj``."""

    def __init__(self, visual: nn.Module):
        super().__init__(visual)
        if getattr(visual, "attn_pool", None) is not None:
            raise ModelSpecError("open_clip towers with an attentional pooler (CoCa) are not supported; use the "
                                 "contrastive CLIP / OpenCLIP ViT towers")
        if not getattr(visual.transformer, "batch_first", True):
            raise ModelSpecError("open_clip tower with batch_first=False is not supported")
        self.blocks = list(visual.transformer.resblocks)
        self.pool_type = getattr(visual, "pool_type", "tok")
        self.ln_after_pool = bool(getattr(visual, "final_ln_after_pool", False))
        # the per-token ln_post is a layer of its own when it comes before the pooling
        self.layers = [f"blocks.{i}" for i in range(len(self.blocks))] + ([] if self.ln_after_pool else ["norm"])
        self.num_prefix = 1

    def aliases(self, name: str) -> str:
        if name.startswith("transformer.resblocks."):
            return "blocks." + name.rsplit(".", 1)[1]
        return {"ln_post": "norm"}.get(name, name)

    def default_layer(self) -> str:
        if self.pool_type == "tok" and len(self.blocks) >= 2:
            return f"blocks.{len(self.blocks) - 2}"
        return self.layers[-1]

    def embed(self, x):
        v = self.net
        state = v._embeds(x)
        return state, {"grid": tuple(v.grid_size)}

    def run(self, state, start, stop, ctx, attention):
        for i in range(start, min(stop, len(self.blocks))):
            blk = self.blocks[i]
            explicit = attention is not None or torch.is_grad_enabled()  # fused MHA has no double backward
            state = _resblock_recording(blk, state, attention if attention is not None else []) if explicit \
                else blk(state)
        if start <= len(self.blocks) < stop and not self.ln_after_pool:
            state = self.net.ln_post(state)
        return state

    def to_map(self, state, ctx):
        return _grid_tokens(state, 1, ctx["grid"])

    def from_map(self, feats, ctx):
        return _tokens_from_map(feats, 1, "this CLIP tower's head")

    def readout(self, relevance: torch.Tensor) -> torch.Tensor:
        return relevance[:, 0] if self.pool_type == "tok" else relevance[:, 1:].mean(dim=1)

    def pool(self, state):
        v = self.net
        pooled = state[:, 1:].mean(dim=1) if self.pool_type == "avg" else (
            state[:, 0] if self.pool_type == "tok" else state)
        if self.ln_after_pool:
            pooled = v.ln_post(pooled)
        return pooled @ v.proj if v.proj is not None else pooled


def _resblock_recording(blk: nn.Module, x: torch.Tensor, sink: list) -> torch.Tensor:
    """open_clip ``ResidualAttentionBlock`` forward with the attention softmax computed explicitly and recorded."""
    attn = blk.attn
    if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim:
        raise SimxError(f"cannot record the attention of {type(blk).__name__}")
    y = blk.ln_1(x)
    b, t, c = y.shape
    h = attn.num_heads
    qkv = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).reshape(b, t, 3, h, c // h).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    probs = ((q * (c // h) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    sink.append(probs)
    out = (probs @ v).transpose(1, 2).reshape(b, t, c)
    x = x + blk.ls_1(attn.out_proj(out))
    return x + blk.ls_2(blk.mlp(blk.ln_2(x)))


def layout_for(net: nn.Module, post: Callable | None = None) -> TokenLayout | None:
    """The layout of a supported transformer family, or None when ``net`` is not one."""
    cls = type(net).__name__
    mro = {c.__name__ for c in type(net).__mro__}
    if "SwinTransformer" in mro or "SwinTransformerV2" in mro:
        return TimmSwinLayout(net)
    if ("VisionTransformer" in mro and hasattr(net, "blocks") and hasattr(net, "_pos_embed")) or cls == "Eva":
        return TimmViTLayout(net, post)
    if hasattr(net, "transformer") and hasattr(net, "class_embedding") and hasattr(net, "conv1"):
        return OpenClipViTLayout(net)
    return None


class TokenModel(SimModel):
    """A transformer split at one of its layers (see the module docstring)."""

    def __init__(self, spec: str, net: nn.Module, layout: TokenLayout, preprocessing: Preprocessing,
                 layer: str | None = None, metric: str = "cosine", device=None,
                 classifier: Callable | None = None, class_names: list[str] | None = None):
        name = layout.aliases(layer) if layer else layout.default_layer()
        if name not in layout.layers:
            raise ModelSpecError(f"layer {layer!r} is not a layer of this transformer; choose one of "
                                 f"{', '.join(layout.layers[::-1][:14])}{', ...' if len(layout.layers) > 14 else ''}")
        super().__init__(spec, net, preprocessing, name, metric, device)
        self.layout = layout
        self.index = layout.layers.index(name)
        self._ctx: dict[tuple, dict] = {}
        self._classifier = classifier
        self._class_names = class_names
        self._linear: LinearHead | None = None
        self._probe_linear()

    # -- the split ------------------------------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> TokenMap:
        state, ctx = self.layout.embed(x)
        self._ctx[tuple(x.shape[-2:])] = ctx
        state = self.layout.run(state, 0, self.index + 1, ctx, None)
        return self.layout.to_map(state, ctx)

    def _context(self) -> dict:
        ctx = self._ctx.get(self.input_size)
        if ctx is None:
            with torch.inference_mode():
                self.features(torch.zeros(1, 3, *self.input_size, device=self.device))
            ctx = self._ctx[self.input_size]
        return ctx

    def head(self, feats: torch.Tensor, attention: list | None = None) -> torch.Tensor:
        """Embedding (B, D) from the explained layer's map; ``attention`` (a list) receives the attention
        probabilities of every later block (see :meth:`TokenLayout.run`)."""
        ctx = self._context()
        state = self.layout.from_map(feats, ctx)
        with unfused(self.net, torch.is_grad_enabled()):
            state = self.layout.run(state, self.index + 1, len(self.layout.layers), ctx, attention)
            return self.layout.pool(state)

    def run_from_input(self, x: torch.Tensor, attention: list | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        """(embedding (B, D), patch grid (h, w)) of an input batch through the whole network, every block's
        attention probabilities appended to ``attention`` in order (class tokens stay in the graph throughout)."""
        with unfused(self.net, torch.is_grad_enabled()):
            state, ctx = self.layout.embed(x)
            state = self.layout.run(state, 0, len(self.layout.layers), ctx, attention)
            return self.layout.pool(state), tuple(ctx.get("grid", state.shape[1:3]))

    def readout(self, relevance: torch.Tensor) -> torch.Tensor:
        """Token-to-token relevance (B, T, T) -> relevance of every token for the pooled embedding (B, T): the class
        token's row (the mean of class and distillation rows for DeiT), or the mean of the patch rows for
        mean-pooled and attention-pooled (MAP) heads, whose pooled vector reads every patch token."""
        return self.layout.readout(relevance)

    @property
    def num_prefix_tokens(self) -> int:
        return self.layout.num_prefix

    @property
    def global_attention(self) -> bool:
        return self.layout.global_attention

    def linear_head(self) -> LinearHead | None:
        return self._linear

    def _probe_linear(self) -> None:
        """Closed forms need a head that is the mean of the grid cells: check it numerically on random maps (it
        holds for mean-pooled ViTs without fc_norm and Swin explained at their final norm)."""
        if self.index != len(self.layout.layers) - 1:
            return
        with torch.inference_mode():
            c = self.feature_channels
            g = torch.Generator().manual_seed(0)
            grid = torch.randn(2, c, 3, 3, generator=g).to(self.device)
            prefix = torch.randn(2, self.layout.num_prefix, c, generator=g).to(self.device)
            try:
                e = self.head(TokenMap.wrap(grid, prefix))
            except (SimxError, RuntimeError, ValueError):
                return
            if e.shape == (2, c) and torch.allclose(e, grid.mean(dim=(2, 3)), atol=1e-5):
                self._linear = LinearHead(pool="avg")

    @torch.inference_mode()
    def classify(self, image, k: int = 5) -> list[tuple[str, float]]:
        if self._classifier is None or self._class_names is None:
            return super().classify(image, k)
        logits = self._classifier(self.embed(self.preprocess_batch([image])))
        probs = F.softmax(logits.float(), dim=-1)[0]
        top = torch.topk(probs, k)
        return [(self._class_names[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]
