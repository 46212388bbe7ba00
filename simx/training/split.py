"""Which weights of a model plug-in train, and a cache of the frozen part's output.

**Groups.** A network's parameters are grouped into its top-level units, in the order the embedding's forward
pass first runs them (found with forward hooks on a probe image, so it works for any plug-in whose weights live in
``model.net``): the first component of a module name, or the first two when the second is a number
(``blocks.6.0.conv_pw`` -> ``blocks.6``, ``conv_head``, ``bn2``; ``trunk.2`` -> ``trunk.2``; ``layer4.1.conv2``
-> ``layer4.1``). Modules that never run in the embedding pass (an ImageNet classifier) are not groups and never
train.

**Default trainable set** (:func:`default_unfreeze`): the smallest run of last groups that holds at least
:data:`DEFAULT_TRAIN_SHARE` of the embedding path's parameters: for EfficientNet-Lite0 that is its last stage
(``blocks.6``) plus its head (``conv_head``, ``bn2``), 1.0 M of 3.4 M weights; for the tiny test models the last
conv plus the linear head. Everything before stays frozen, which is what a few hundred labels can support without
over-fitting, and it lets the frozen part run once per image.

**Cut** (:class:`FrozenCut`): the input of the first trainable group is the frozen part's output. It is computed
once per image (:meth:`FrozenCut.prefix_features`) and replayed through the trainable part
(:meth:`FrozenCut.embed_from`) by a forward pre-hook that substitutes it for what a small dummy input produced.
The split is checked on real images before it is used: the replayed embedding must equal the plain one, else
the cut is refused (a network whose later groups read earlier outputs directly, e.g. a U-Net, cannot be cut).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import SimxError
from ..models import SimModel

#: Default share of the embedding path's parameters that trains (the last groups that reach it).
DEFAULT_TRAIN_SHARE = 0.2


class TrainingError(SimxError):
    """Fine-tuning cannot run as asked (no labels, an untrainable model, a bad option)."""


@dataclass(frozen=True)
class Group:
    """One top-level unit of the network: its name, module names and parameter count."""

    name: str
    modules: tuple[str, ...]
    n_params: int


def _group_key(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and parts[1].isdigit() else parts[0]


def parameter_groups(model: SimModel) -> list[Group]:
    """The parameterised top-level units of ``model.net`` in the order the embedding pass first runs them."""
    if not model.has_features or not isinstance(getattr(model, "net", None), torch.nn.Module):
        raise TrainingError(f"model {model.spec!r} exposes no trainable network (a TorchScript file?): fine-tune "
                            "it in PyTorch and export it again")
    order: list[str] = []
    handles = []
    for name, mod in model.net.named_modules():
        if name and any(True for _ in mod.parameters(recurse=False)):
            handles.append(mod.register_forward_hook(lambda _m, _i, _o, name=name: order.append(name)))
    try:
        with torch.no_grad():
            model.embed(torch.zeros(1, 3, *model.input_size, device=model.device))
    finally:
        for h in handles:
            h.remove()
    modules = dict(model.net.named_modules())
    groups: dict[str, list[str]] = {}
    for name in order:
        groups.setdefault(_group_key(name), [])
        if name not in groups[_group_key(name)]:
            groups[_group_key(name)].append(name)
    out = []
    for key, names in groups.items():
        n = sum(p.numel() for m in names for p in modules[m].parameters(recurse=False))
        out.append(Group(key, tuple(names), int(n)))
    if not out:
        raise TrainingError(f"model {model.spec!r} has no weights in its embedding pass")
    return out


def default_unfreeze(groups: list[Group], share: float = DEFAULT_TRAIN_SHARE) -> int:
    """Number of last groups to train: the fewest whose parameters reach ``share`` of the total."""
    total = sum(g.n_params for g in groups)
    acc = 0
    for n, g in enumerate(reversed(groups), start=1):
        acc += g.n_params
        if acc >= share * total:
            return n
    return len(groups)


def set_trainable(model: SimModel, groups: list[Group], n_trainable: int) -> list[torch.nn.Parameter]:
    """Freeze every weight of ``model.net`` but those of the last ``n_trainable`` groups; return those."""
    if not 1 <= n_trainable <= len(groups):
        raise TrainingError(f"--unfreeze must be between 1 and {len(groups)} (the model's groups: "
                            f"{', '.join(g.name for g in groups)}), got {n_trainable}")
    modules = dict(model.net.named_modules())
    for p in model.net.parameters():
        p.requires_grad_(False)
    params: list[torch.nn.Parameter] = []
    for g in groups[-n_trainable:]:
        for m in g.modules:
            for p in modules[m].parameters(recurse=False):
                p.requires_grad_(True)
                params.append(p)
    return params


class _Captured(Exception):
    """Stops a forward pass once the cut's input has been seen."""


class FrozenCut:
    """The frozen part of ``model`` up to group ``first``, computed once per image and replayed into the rest."""

    def __init__(self, model: SimModel, first: Group):
        self.model = model
        self.group = first
        modules = dict(model.net.named_modules())
        self.module = modules[first.name] if first.name in modules else modules[first.modules[0]]
        self.dummy_size = model.input_size[0]

    def prefix_features(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The inputs the first trainable group receives for images ``x`` (no gradient)."""
        box: dict[str, tuple] = {}

        def grab(_m, args):
            box["args"] = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
            raise _Captured

        handle = self.module.register_forward_pre_hook(grab)
        try:
            with torch.no_grad():
                self.model.embed(x)
        except _Captured:
            pass
        finally:
            handle.remove()
        if "args" not in box:
            raise TrainingError(f"group {self.group.name!r} is not reached by the embedding pass")
        return box["args"]

    def embed_from(self, args: tuple[torch.Tensor, ...], size: int | None = None) -> torch.Tensor:
        """Embeddings (not normalised) from the cached inputs of the first trainable group, differentiable in
        the trainable weights."""
        batch = next(a for a in args if isinstance(a, torch.Tensor)).shape[0]
        s = size or self.dummy_size
        dummy = torch.zeros(batch, 3, s, s, device=self.model.device)
        handle = self.module.register_forward_pre_hook(lambda _m, _a: args)
        try:
            return self.model.embed(dummy)
        finally:
            handle.remove()

    def calibrate(self, x: torch.Tensor, atol: float = 1e-4) -> dict[str, Any]:
        """Check the replay on images ``x`` and pick the smallest dummy input it is exact with."""
        with torch.no_grad():
            want = self.model.embed(x).float()
            cached = self.prefix_features(x)
            worst = float("inf")
            for s in sorted({32, 64, self.model.input_size[0]}):
                if s > self.model.input_size[0]:
                    continue
                try:
                    got = self.embed_from(cached, s).float()
                except Exception:  # noqa: BLE001 - this dummy size does not fit the network; try a larger one
                    continue
                err = float((got - want).abs().max()) / max(float(want.abs().max()), 1e-12)
                worst = min(worst, err)
                if err <= atol:
                    self.dummy_size = s
                    return {"dummy_size": s, "relative_error": err}
        raise TrainingError(f"the model cannot be cut before group {self.group.name!r} (replaying the frozen part's "
                            f"output changes the embedding by {worst:.2g} relative); try --unfreeze with another "
                            "number of groups")
