"""Recording a transformer block's attention for gradient-weighted attention methods (attngrad) without putting the
attention matrix in the autograd graph.

A block's attention output is O = A V with A = softmax(q k^T * scale) (per head). The gradient of any score S
w.r.t. A is therefore (dS/dO) V^T, so recording O (in the graph, computed by the fused attention kernel) with q, k,
V (detached) gives both A and dS/dA exactly, with the fused kernel's forward and backward instead of an explicit
softmax whose (heads, T, T) matrix the graph keeps and back-propagates through (:func:`fused_recording_forward`).
Blocks this module cannot replay (open_clip's ``nn.MultiheadAttention``, EVA's rotary attention) record A itself,
explicitly; consumers handle both through :func:`probabilities_and_gradients`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SimxError


@dataclass
class SoftmaxAttention:
    """One block's attention: ``out`` = A V (B, heads, T, d) in the autograd graph; q, k, v (B, heads, T, d)
    detached; A = softmax(q k^T * scale)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    out: torch.Tensor
    scale: float

    def probabilities(self) -> torch.Tensor:
        """A (B, heads, T, T), formed without the graph."""
        return ((self.q.float() * self.scale) @ self.k.float().transpose(-2, -1)).softmax(dim=-1)

    def gradient(self, grad_out: torch.Tensor) -> torch.Tensor:
        """dS/dA = (dS/dO) V^T from the gradient w.r.t. ``out`` ((..., B, heads, T, d), batched or not)."""
        return grad_out.float() @ self.v.float().transpose(-2, -1)


def graph_targets(records: Sequence[torch.Tensor | SoftmaxAttention]) -> list[torch.Tensor]:
    """The tensors to differentiate: A itself for an explicit record, O for a :class:`SoftmaxAttention`."""
    return [r.out if isinstance(r, SoftmaxAttention) else r for r in records]


def probabilities_and_gradients(records: Sequence[torch.Tensor | SoftmaxAttention], grads: Sequence[torch.Tensor]
                                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """([A_l (B, heads, T, T)], [dS/dA_l]) from the records and the gradients w.r.t. their :func:`graph_targets`."""
    attn, dattn = [], []
    for r, g in zip(records, grads):
        if isinstance(r, SoftmaxAttention):
            attn.append(r.probabilities())
            dattn.append(r.gradient(g))
        else:
            attn.append(r.detach())
            dattn.append(g)
    return attn, dattn


def can_replay(mod: nn.Module) -> bool:
    """timm's plain ``Attention`` (ViT, DeiT, DINOv2, SigLIP): the block :func:`fused_recording_forward` replays."""
    return type(mod).__name__ == "Attention" and type(mod).__module__.startswith("timm.") and all(
        hasattr(mod, a) for a in ("qkv", "num_heads", "head_dim", "scale", "q_norm", "k_norm", "proj"))


def fused_recording_forward(mod: nn.Module, sink: list) -> Callable[..., torch.Tensor]:
    """timm ``Attention.forward`` with the fused kernel, appending a :class:`SoftmaxAttention` to ``sink``."""

    def forward(x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise SimxError("attention recording supports unmasked self-attention only")
        b, n, _ = x.shape
        gate = mod.gate(x).sigmoid() if getattr(mod, "gate", None) is not None else None
        qkv = mod.qkv(x).reshape(b, n, 3, mod.num_heads, mod.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = mod.q_norm(q), mod.k_norm(k)
        out = F.scaled_dot_product_attention(q, k, v, scale=mod.scale)
        sink.append(SoftmaxAttention(q.detach(), k.detach(), v.detach(), out, float(mod.scale)))
        y = out.transpose(1, 2).reshape(b, n, getattr(mod, "attn_dim", mod.num_heads * mod.head_dim))
        norm = getattr(mod, "norm", None)
        y = norm(y) if norm is not None else y
        if gate is not None:
            y = y * gate
        y = mod.proj(y)
        drop = getattr(mod, "proj_drop", None)
        return drop(y) if drop is not None else y

    return forward
