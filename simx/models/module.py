"""Wrap any ``torch.nn.Module`` as a :class:`~simx.models.base.SimModel` by splitting it at a named layer.

``features`` runs the network up to the explained layer and stops there (a forward hook captures the output and
aborts the rest of the forward). ``head`` continues from a given feature map: at the network's last spatial layer
it is the model's own pooling (fast path, no extra work); for an earlier layer the rest of the network is run
with that layer's output replaced by the given map, which keeps the head exact and differentiable for any
architecture, at the price of re-running the (cheap, discarded) stem on a dummy input.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import ModelSpecError
from .base import LinearHead, Preprocessing, SimModel


class _Stop(Exception):
    """Raised inside a hook to end a forward pass early."""


def named_module(net: torch.nn.Module, name: str) -> torch.nn.Module:
    modules = dict(net.named_modules())
    if name not in modules:
        spatial = [n for n in spatial_layers(net, 64) if n]
        raise ModelSpecError(
            f"layer {name!r} not found in the model; spatial layers (last first): {', '.join(spatial[::-1][:12])}"
        )
    return modules[name]


def spatial_layers(net: torch.nn.Module, size: int = 224) -> list[str]:
    """Names of modules whose output is a 4-D map with more than one position, in completion order.

    Where a module and its children end on the same tensor, the outermost module comes last, so the last entry
    is "the last spatial block before pooling".
    """
    order: list[str] = []
    handles = []

    def make_hook(name: str) -> Callable:
        def hook(_m, _i, out):
            if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-1] * out.shape[-2] > 1:
                order.append(name)

        return hook

    for name, mod in net.named_modules():
        if name:
            handles.append(mod.register_forward_hook(make_hook(name)))
    try:
        device = next((p.device for p in net.parameters()), torch.device("cpu"))
        with torch.inference_mode():
            net(torch.zeros(1, 3, size, size, device=device))
    finally:
        for h in handles:
            h.remove()
    return order


def last_spatial_layer(net: torch.nn.Module, size: int = 224) -> str:
    layers = spatial_layers(net, size)
    if not layers:
        raise ModelSpecError("the model has no spatial (B, C, h, w) layer to explain; pass --layer")
    return layers[-1]


class ModuleModel(SimModel):
    """A network split at ``layer``; the embedding is ``pool_fn`` applied to the network's last spatial map.

    ``pool_fn`` maps the last spatial map (B, C, h, w) to the embedding (B, D); by default global average pooling.
    ``classifier`` (optional) maps the embedding to ImageNet logits for :meth:`classify`.
    """

    def __init__(
        self,
        spec: str,
        net: torch.nn.Module,
        preprocessing: Preprocessing,
        layer: str | None = None,
        metric: str = "cosine",
        device: str | torch.device | None = None,
        pool_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        last_layer: str | None = None,
        classifier: Callable[[torch.Tensor], torch.Tensor] | None = None,
        class_names: list[str] | None = None,
        linear_pool: str | None = "avg",
    ):
        last = last_layer or last_spatial_layer(net.eval(), preprocessing.size)
        super().__init__(spec, net, preprocessing, layer or last, metric, device)
        self._last = last
        self._layer_mod = named_module(self.net, self.layer)
        self._last_mod = named_module(self.net, last)
        self._pool_fn = pool_fn or (lambda f: f.mean(dim=(2, 3)))
        self._linear_pool = linear_pool
        self._classifier = classifier
        self._class_names = class_names

    def _run_until(self, x: torch.Tensor, module: torch.nn.Module, replace: torch.Tensor | None = None,
                   at: torch.nn.Module | None = None) -> torch.Tensor:
        box: dict[str, torch.Tensor] = {}

        def capture(_m, _i, out):
            box["out"] = out
            raise _Stop

        handles = [module.register_forward_hook(capture)]
        if replace is not None and at is not None:
            handles.insert(0, at.register_forward_hook(lambda _m, _i, _o: replace))
        try:
            self.net(x)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        if "out" not in box:
            raise ModelSpecError(f"layer {self.layer!r} was not reached in the forward pass")
        return box["out"]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._run_until(x, self._layer_mod)

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        if self._layer_mod is self._last_mod:
            last = feats
        else:
            dummy = torch.zeros(feats.shape[0], 3, *self.input_size, device=feats.device, dtype=feats.dtype)
            last = self._run_until(dummy, self._last_mod, replace=feats, at=self._layer_mod)
        return self._pool_fn(last)

    def linear_head(self) -> LinearHead | None:
        if self._layer_mod is self._last_mod and self._linear_pool is not None:
            return LinearHead(pool=self._linear_pool)
        return None

    @torch.inference_mode()
    def classify(self, image, k: int = 5) -> list[tuple[str, float]]:
        if self._classifier is None or self._class_names is None:
            return super().classify(image, k)
        x = self.preprocess_batch([image])
        logits = self._classifier(self._pool_fn(self._run_until(x, self._last_mod)))
        probs = F.softmax(logits.float(), dim=-1)[0]
        top = torch.topk(probs, k)
        return [(self._class_names[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]
