"""``TokenMap``: a transformer's patch tokens as a (B, C, h, w) map that keeps its non-grid tokens.

A vision transformer's explained layer holds patch tokens, which form the spatial grid every explanation method
works on, and *prefix* tokens (class, distillation, register tokens) that are not cells of the grid but that the
rest of the network reads (a CLS-pooled ViT explained at the input of its last block needs the class token there to
reproduce its embedding). A ``TokenMap`` is an ordinary ``torch.Tensor`` of shape (B, C, h, w) holding the patch
tokens, with the prefix tokens (B, P, C) riding along in ``.prefix``, so the engine and every method keep handling
a plain map (slice it, cache it, replicate it K times, mask it) while ``head`` still gets the tokens it needs.

The prefix follows the batch axis through the operations methods apply to feature maps:

* indexing (``f[1:]``, ``f[j:j+1]``, ``f[idx]``) indexes the prefix's batch axis the same way;
* ``torch.cat``/``torch.stack`` along the batch axis concatenate the prefixes;
* any other operation whose result keeps the batch size keeps the prefix (elementwise maths, ``clone``,
  ``detach``, ``float``, masking); a result with a larger batch from a one-image map (``expand``, broadcasting)
  repeats the single prefix;
* anything else (a reduction over the batch, a permutation of axes that moves the batch) returns a plain tensor;
  the head then refuses it with a clear message instead of guessing.

The prefix is a detached constant: derivatives w.r.t. the map are partial derivatives with the non-grid tokens
held at their unperturbed values, which is exactly what pytorch-grad-cam computes with a token
``reshape_transform`` (the gradient at the class token is dropped there).
"""

from __future__ import annotations

from typing import Any

import torch

_BATCH_JOIN = {torch.cat, torch.concat, torch.concatenate, torch.stack}


def _first_map(obj: Any) -> "TokenMap | None":
    if isinstance(obj, TokenMap):
        return obj
    if isinstance(obj, (list, tuple)):
        for item in obj:
            found = _first_map(item)
            if found is not None:
                return found
    return None


class TokenMap(torch.Tensor):
    """(B, C, h, w) patch-token map with the non-grid tokens (B, P, C) in ``prefix`` (P may be 0)."""

    prefix: torch.Tensor | None

    @staticmethod
    def wrap(grid: torch.Tensor, prefix: torch.Tensor | None) -> "TokenMap":
        """View ``grid`` as a TokenMap carrying ``prefix`` (no copy of either)."""
        out = grid.as_subclass(TokenMap)
        out.prefix = None if prefix is None or prefix.shape[1] == 0 else prefix.detach()
        return out

    def plain(self) -> torch.Tensor:
        """The patch-token map as an ordinary tensor (no copy)."""
        return self.as_subclass(torch.Tensor)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        src = _first_map(args)
        if src is None:
            src = _first_map(list(kwargs.values()))
        if src is None or not isinstance(out, torch.Tensor) or out.dim() < 1:
            return out
        prefix = getattr(src, "prefix", None)
        if prefix is None:
            return TokenMap.wrap(out, None) if out.dim() == src.dim() else out
        if func in _BATCH_JOIN:
            return _joined(func, args, kwargs, out)
        if func is torch.Tensor.__getitem__:
            return _indexed(args[1], prefix, out)
        return _same_batch(prefix, out, func)


def _joined(func, args, kwargs, out: torch.Tensor) -> torch.Tensor:
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    parts = list(args[0])
    if func is torch.stack or dim != 0 or not all(isinstance(p, TokenMap) and p.prefix is not None for p in parts):
        return out
    return TokenMap.wrap(out, torch.cat([p.prefix for p in parts]))


def _indexed(index: Any, prefix: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    first = index[0] if isinstance(index, tuple) and index else index
    if isinstance(first, int) or first is None or first is Ellipsis or out.dim() < 2:
        return out  # the batch axis went away or moved: no longer a batch of maps
    try:
        picked = prefix[first]
    except (IndexError, TypeError, RuntimeError):
        return out
    return TokenMap.wrap(out, picked) if picked.shape[0] == out.shape[0] else out


def _same_batch(prefix: torch.Tensor, out: torch.Tensor, func) -> torch.Tensor:
    if func in (torch.Tensor.clone, torch.clone):
        prefix = prefix.clone()
    if out.shape[0] == prefix.shape[0]:
        return TokenMap.wrap(out, prefix)
    if prefix.shape[0] == 1:
        return TokenMap.wrap(out, prefix.expand(out.shape[0], -1, -1))
    return out


def prefix_of(feats: torch.Tensor) -> torch.Tensor | None:
    """The non-grid tokens a map carries, or None for a plain tensor or a map without any."""
    return getattr(feats, "prefix", None) if isinstance(feats, TokenMap) else None


def plain(feats: torch.Tensor) -> torch.Tensor:
    """An ordinary tensor view of ``feats`` (TokenMap or not)."""
    return feats.as_subclass(torch.Tensor) if isinstance(feats, TokenMap) else feats
