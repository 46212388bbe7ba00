"""Loading checkpoints safely: never unpickle arbitrary objects, and say exactly which keys do not fit."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from ..errors import WeightsError


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.pth``/``.pt``/``.bin`` (``torch.load(weights_only=True)``) or ``.safetensors`` checkpoint.

    Common wrappers (``state_dict``, ``model``, ``model_state_dict``) and a ``module.`` prefix from
    DataParallel are unwrapped.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: object = load_file(str(p))
    else:
        try:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise WeightsError(
                f"cannot read {p} as a plain tensor checkpoint (weights_only=True refuses pickled objects): "
                f"{str(exc).splitlines()[0]}"
            ) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{p} does not hold a state dict of tensors")
    out = {}
    for k, v in sd.items():
        out[k[7:] if k.startswith("module.") else k] = v
    return out


def load_strict(net: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with a readable error naming the first missing, unexpected and
    mis-shaped keys."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:5])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:5])})")
        if shapes:
            parts.append(f"{len(shapes)} with wrong shape (first: {'; '.join(shapes[:3])})")
        raise WeightsError(f"{source} does not fit the architecture: " + "; ".join(parts))
    net.load_state_dict(dict(state), strict=True)
