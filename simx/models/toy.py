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
