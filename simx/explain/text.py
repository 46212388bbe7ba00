"""Explaining a *text* query's neighbours on the image side (CLIP-style models).

A text query ("a red double-decker bus") has no pixels, so only the neighbour side exists: map k shows which regions
of neighbour k make it match the text, i.e. every method's neighbour-side map with the text embedding in the place
of the query image's embedding. :class:`TextQueryContext` is a :class:`PairContext` whose query embedding is the
text tower's output; every neighbour-side computation (gradients of s(text, y_k) through the head, masked-neighbour
scores of perturbation methods, the faithfulness curves of :mod:`simx.explain.metrics`) reads the query only through
that embedding, so the maps and scores are the same functions as for an image query.

The query "image" of the context is the mean-colour image (zeros in normalised space); it only fills the
explanation's ``query_image`` slot and is never explained. Joint methods pair cells of two images and are refused.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch

from ..errors import ExplainError
from ..models import SimModel
from .base import Explanation
from .engine import PairContext, _as_list, _explanation, _method


class TextQueryContext(PairContext):
    """A PairContext whose query is a text embedding (1, D) from the model's text tower."""

    def __init__(self, model: SimModel, text: str, neighbours: Sequence[Any], seed: int = 0,
                 batch_size: int | None = None):
        if not getattr(model, "supports_text", False):
            raise ExplainError(f"model {model.spec!r} has no text tower: text queries need a CLIP-style model "
                               "(open_clip:ARCH@WEIGHTS)")
        blank = torch.zeros(3, *model.input_size)
        super().__init__(model, blank, neighbours, seed=seed, batch_size=batch_size)
        self.text = str(text)
        self._text_embedding: torch.Tensor | None = None

    def _features_embeddings(self, which: str, features: bool = False):
        if which == "query":
            feats = super()._features_embeddings("query", features)[0] if self.model.has_features else None
            if self._text_embedding is None:
                with torch.inference_mode():
                    self._text_embedding = self.model.text_encoder([self.text]).float().to(self.device).clone()
            return feats, self._text_embedding
        return super()._features_embeddings(which, features)


def explain_text(model: SimModel, text: str, neighbours: Sequence[Any] | Any, method: str = "gradcam",
                 seed: int = 0, batch_size: int | None = None, **params: Any) -> Explanation:
    """Explain why each of ``neighbours`` matches ``text``: neighbour-side maps (K, H, W), similarities s(text, y_k),
    cost; :func:`simx.explain.metrics.faithfulness` scores its maps against the text embedding."""
    spec = _method(model, method, "neighbour", params)
    if spec.kind == "joint":
        raise ExplainError(f"{method} is a joint method: it pairs cells of two images, and a text query has no "
                           "cells; use a first-order method (gradcam, searchcam, rise, ...)")
    ctx = TextQueryContext(model, text, _as_list(neighbours), seed=seed, batch_size=batch_size)
    t0 = time.perf_counter()
    out = spec.fn(ctx, "neighbour", **params)
    out.query_maps = out.query_feature_maps = None
    exp = _explanation(method, ctx, out, t0)
    exp.params["text"] = ctx.text
    return exp
