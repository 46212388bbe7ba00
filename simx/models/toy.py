"""Tiny random models for tests, examples and benchmarks of the explanation maths.

They are ordinary plug-ins (``python:simx.models.toy:tiny_linear`` works as a model spec) and have known
structure, so closed forms can be checked exactly: a small CNN trunk, then global average (or max) pooling, then
an identity, affine or MLP head.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import LinearHead, Preprocessing, SimModel


def tiny_trunk(channels: int = 16, seed: int = 0, depth: int = 2) -> nn.Sequential:
    """A random conv trunk with stride 4 per two layers: 3 x S x S -> channels x S/2^depth x S/2^depth."""
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    c_in = 3
    for i in range(depth):
        conv = nn.Conv2d(c_in, channels, 3, stride=2, padding=1)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / (9 * c_in)) ** 0.5)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.1)
        layers += [conv, nn.ReLU()]
        c_in = channels
    return nn.Sequential(*layers)


class PooledModel(SimModel):
    """trunk -> pool (avg or max) -> head (identity, affine ``W p + b`` or a 2-layer MLP)."""

    def __init__(self, trunk: nn.Module, head: nn.Module | None = None, pool: str = "avg",
                 metric: str = "cosine", size: int = 64, spec: str = "toy", device=None):
        net = nn.ModuleDict({"trunk": trunk, "head": head or nn.Identity()})
        pre = Preprocessing(size=size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), fit="squash")
        super().__init__(spec, net, pre, layer="trunk", metric=metric, device=device)
        self.pool = pool

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net["trunk"](x)

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        p = feats.mean(dim=(2, 3)) if self.pool == "avg" else feats.amax(dim=(2, 3))
        return self.net["head"](p)

    def linear_head(self) -> LinearHead | None:
        h = self.net["head"]
        if isinstance(h, nn.Identity):
            return LinearHead(pool=self.pool)
        if isinstance(h, nn.Linear):
            return LinearHead(pool=self.pool, weight=h.weight.detach(), bias=None if h.bias is None else h.bias.detach())
        return None


def _linear(c_in: int, c_out: int, seed: int, bias: bool = True) -> nn.Linear:
    g = torch.Generator().manual_seed(seed + 1000)
    lin = nn.Linear(c_in, c_out, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) / c_in**0.5)
        if bias:
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * 0.1)
    return lin


def tiny_linear(channels: int = 16, dim: int = 12, seed: int = 0, metric: str = "cosine", pool: str = "avg",
                size: int = 64, bias: bool = True) -> PooledModel:
    """Random CNN + GAP + affine head (the model class for which the closed forms are exact)."""
    return PooledModel(tiny_trunk(channels, seed), _linear(channels, dim, seed, bias), pool=pool, metric=metric,
                       size=size, spec="python:simx.models.toy:tiny_linear")


def tiny_gap(channels: int = 16, seed: int = 0, metric: str = "cosine", size: int = 64) -> PooledModel:
    """Random CNN + GAP, identity head."""
    return PooledModel(tiny_trunk(channels, seed), None, metric=metric, size=size,
                       spec="python:simx.models.toy:tiny_gap")


def tiny_mlp(channels: int = 16, hidden: int = 24, dim: int = 12, seed: int = 0, metric: str = "cosine",
             size: int = 64) -> PooledModel:
    """Random CNN + GAP + 2-layer MLP head (a non-linear head)."""
    head = nn.Sequential(_linear(channels, hidden, seed), nn.Tanh(), _linear(hidden, dim, seed + 1))
    return PooledModel(tiny_trunk(channels, seed), head, metric=metric, size=size,
                       spec="python:simx.models.toy:tiny_mlp")


def tiny_classifier_net(seed: int = 0, channels: int = 16) -> nn.Module:
    """A plain ``nn.Module`` (trunk, pool, fc) as a factory would return it, for the generic wrapper."""
    return nn.Sequential(tiny_trunk(channels, seed), nn.AdaptiveAvgPool2d(1), nn.Flatten(), _linear(channels, 10, seed))


# -- tiny random transformers (issue 13): real timm / open_clip architectures, a few thousand parameters ------------
TOKEN_PRE = dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), fit="squash")


def _seeded(seed: int):
    import contextlib

    @contextlib.contextmanager
    def ctx():
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            yield
    return ctx()


def tiny_vit(pool: str = "token", reg_tokens: int = 0, seed: int = 0, size: int = 32, depth: int = 3,
             metric: str = "cosine", layer: str | None = None, dist: bool = False):
    """A random timm ViT on ``size`` px inputs with 8 px patches: ``pool`` is ``token`` (class token), ``avg``
    (mean of patch tokens, no fc_norm: a linear head) or ``map`` (SigLIP's attention-pool head); ``reg_tokens``
    adds DINOv2-style register tokens; ``dist`` makes it a distilled DeiT (class + distillation token)."""
    import timm

    from .tokens import TokenModel, layout_for

    kwargs = dict(img_size=size, patch_size=8, embed_dim=32, depth=depth, num_heads=2, mlp_ratio=2.0, num_classes=0,
                  global_pool=pool, class_token=pool == "token" or dist, reg_tokens=reg_tokens,
                  fc_norm=False if pool == "avg" else None, init_values=None)
    arch = "deit_tiny_distilled_patch16_224" if dist else "vit_tiny_patch16_224"
    if dist:
        kwargs.pop("class_token"), kwargs.pop("reg_tokens"), kwargs.pop("fc_norm")
    with _seeded(seed):
        net = timm.create_model(arch, pretrained=False, **kwargs)
    name = "tiny_vit_dist" if dist else ("tiny_vit_reg" if reg_tokens else f"tiny_vit_{pool}")
    return TokenModel(f"python:simx.models.toy:{name}", net, layout_for(net), Preprocessing(size=size, **TOKEN_PRE),
                      layer=layer, metric=metric, device="cpu")


def tiny_vit_token(layer: str | None = None):
    """Class-token ViT (``python:simx.models.toy:tiny_vit_token``)."""
    return tiny_vit("token", layer=layer)


def tiny_vit_avg(layer: str | None = None):
    """Mean-pooled ViT with a linear head (``python:simx.models.toy:tiny_vit_avg``)."""
    return tiny_vit("avg", layer=layer)


def tiny_vit_reg(layer: str | None = None):
    """Class token + 2 register tokens (``python:simx.models.toy:tiny_vit_reg``)."""
    return tiny_vit("token", reg_tokens=2, layer=layer)


def tiny_vit_map(layer: str | None = None):
    """SigLIP-style attention-pool (MAP) head (``python:simx.models.toy:tiny_vit_map``)."""
    return tiny_vit("map", layer=layer)


def tiny_vit_dist(layer: str | None = None):
    """Distilled DeiT: class + distillation token (``python:simx.models.toy:tiny_vit_dist``)."""
    return tiny_vit(dist=True, layer=layer)


def tiny_eva(seed: int = 0, size: int = 32, metric: str = "cosine", layer: str | None = None):
    """A random two-block timm EVA-02 (rotary position embeddings, SwiGLU MLP) on ``size`` px inputs with 8 px
    patches (``python:simx.models.toy:tiny_eva``)."""
    import timm

    from .tokens import TokenModel, layout_for

    with _seeded(seed):
        net = timm.create_model("eva02_tiny_patch14_224", pretrained=False, img_size=size, patch_size=8, embed_dim=32,
                                depth=2, num_heads=2, num_classes=0)
    return TokenModel("python:simx.models.toy:tiny_eva", net, layout_for(net), Preprocessing(size=size, **TOKEN_PRE),
                      layer=layer, metric=metric, device="cpu")


def tiny_swin(seed: int = 0, size: int = 32, metric: str = "cosine", layer: str | None = None):
    """A random two-stage timm Swin on ``size`` px inputs (``python:simx.models.toy:tiny_swin``)."""
    import timm

    from .tokens import TokenModel, layout_for

    with _seeded(seed):
        net = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=size, patch_size=4,
                                window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4), num_classes=0)
    return TokenModel("python:simx.models.toy:tiny_swin", net, layout_for(net),
                      Preprocessing(size=size, **TOKEN_PRE), layer=layer, metric=metric, device="cpu")


#: open_clip model configuration of :func:`tiny_openclip` (also what ``open_clip:FILE.json`` specs look like)
TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def tiny_openclip(seed: int = 0):
    """A random two-tower OpenCLIP model (32 px images, 16-token texts) with the CLIP tokenizer
    (``python:simx.models.toy:tiny_openclip``; supports text queries)."""
    from .clip import build_openclip

    with _seeded(seed):
        return build_openclip("python:simx.models.toy:tiny_openclip", TINY_CLIP_CONFIG, None, device="cpu",
                              preprocessing=Preprocessing(size=32, **TOKEN_PRE))


class ThumbnailModel(SimModel):
    """The image itself, shrunk: an 8 x 8 average-pooled thumbnail (the spatial map), flattened and centred per
    image (the head). Copies of an image (resized, re-encoded) map to nearly the same vector while different
    pictures do not: the model of the near-duplicate tests, where a random trunk would call everything alike."""

    def __init__(self, size: int = 64, grid: int = 8, metric: str = "cosine"):
        net = nn.Sequential(nn.AdaptiveAvgPool2d(grid))
        pre = Preprocessing(size=size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), fit="squash")
        super().__init__("python:simx.models.toy:tiny_thumbnail", net, pre, layer="pool", metric=metric)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        flat = feats.flatten(1)
        return flat - flat.mean(dim=1, keepdim=True)


def tiny_thumbnail(metric: str = "cosine") -> ThumbnailModel:
    """See :class:`ThumbnailModel`."""
    return ThumbnailModel(metric=metric)
