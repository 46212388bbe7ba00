"""The training losses: a margin triplet loss on labelled triplets and Zheng et al.'s similarity-mining constraint.

**Why a margin triplet loss** (and not multi-similarity or InfoNCE). The supervision is a few hundred verdicts on
(query, neighbour) pairs; every other pair of the gallery is *unknown*, not negative: in a retrieval gallery many
unlabelled items are right answers (in the shortcut demo every scene shares objects with several others).
InfoNCE and multi-similarity draw their negatives from the batch, so they would push away exactly those
unlabelled right answers, and InfoNCE never stops pulling, so it keeps moving embeddings that the labels already
order correctly. The hinge ``max(0, z(q, n) - z(q, p) + margin)`` uses only labelled pairs, is exactly zero (no
gradient) once a triplet is ordered with the margin, so satisfied queries are left alone, and its value reads
directly: the mean shortfall of labelled orderings. Each query weighs the same however many triplets its labels
make (:func:`simx.training.pairs.query_weights`).

**Why standardised similarities.** ``z(q, x)`` is the index's own similarity (cosine by default) of ``q`` and ``x``
z-scored over the other images of the batch (:func:`standardised_similarities`), so the margin (0.5 by default)
is in standard deviations of the query's similarities. On raw cosines the hinge has a cheap way down when the
bad matches start above the good ones: shrink every difference by contracting the whole space. Measured on the
tiny test model with planted labels: raw-cosine hinge training moved all pairwise cosines from 0.992-0.998 to
0.9986-0.9998, the loss fell only from 0.1007 to 0.1000 (= the margin, collapse) and the planted bad matches stayed
at rank 1-2; on z-scores the loss fell from 1.02 to 0.44 and the bad matches moved to ranks 2-4. A z-score cannot
be lowered by scaling, only by reordering.

**L_sm** (methods.md 2.3, opt-in): for each triplet (a, p, n), the similarity attention of every image is computed
with the triplet weight vector ``w = clamp(1 - |f_a - f_p|, 0) * |f_a - f_n|`` on L2-normalised embeddings (the
clamp is the pitfall of 2.3.3: components of normalised embeddings make ``1 - |.|`` negative otherwise) and treated
as a constant (stop-gradient, the recommended default of 2.3.3), ``s_i = w^T f_i``, ``alpha^i_k = mean_u
d s_i / d A_i[k, u]`` (with ``create_graph`` so that the loss reaches the map), ``M_i = minmax(ReLU(sum_k alpha_k
A_i[k])))`` upsampled to the input; the attended regions are erased with the soft mask ``T(M) = sigmoid(omega (M -
sigma))`` (omega = 10, sigma = 0.5: GAIN's values, fixed rather than learnt), ``I* = I (1 - T(M))`` in normalised
input space (erased pixels become the mean colour), and ``L_sm = | ||f*_a - f*_p|| - ||f*_a - f*_n|| |`` per
triplet (per triplet, not over the batch: the third-party pitfall of 2.3.4), averaged, added as ``gamma L_sm``
(gamma = 0.5). Its intent: after erasing what the attention found, positive and negative must be inseparable, so
the attention has to cover all the evidence the model uses. Cost: about 3-4x a plain step (double backward and a
second forward of the erased images through the whole network).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models import SimModel

DEFAULT_MARGIN = 0.5
SM_OMEGA = 10.0
SM_SIGMA = 0.5
DEFAULT_SM_WEIGHT = 0.5


def standardised_similarities(model: SimModel, e: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """(A, U): similarity of each anchor row of ``e`` to every row of ``e``, z-scored per anchor over the other
    rows (the anchor itself left out of the mean and deviation)."""
    s = model.similarity(e[anchors], e)
    mask = torch.ones_like(s, dtype=torch.bool)
    mask[torch.arange(len(anchors), device=s.device), anchors] = False
    n = mask.sum(1, keepdim=True).clamp_min(1)
    mean = (s * mask).sum(1, keepdim=True) / n
    var = (((s - mean) * mask) ** 2).sum(1, keepdim=True) / n
    return (s - mean) / var.sqrt().clamp_min(1e-6)


def triplet_loss(model: SimModel, e: torch.Tensor, triplets: torch.Tensor, weights: torch.Tensor,
                 margin: float = DEFAULT_MARGIN) -> torch.Tensor:
    """Weighted mean of ``max(0, z(q, n) - z(q, p) + margin)`` for triplets of row indices into embeddings ``e``
    (U, D), ``z`` the query's similarities standardised over all rows of ``e`` (:func:`standardised_similarities`)."""
    anchors, inv = torch.unique(triplets[:, 0], return_inverse=True)
    z = standardised_similarities(model, e, anchors)
    per = F.relu(z[inv, triplets[:, 2]] - z[inv, triplets[:, 1]] + margin)
    return (per * weights).sum() / weights.sum().clamp_min(1e-12)


def pair_similarity(model: SimModel, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise similarity of two (T, D) embedding batches in the model's metric (higher = more similar)."""
    a, b = a.float(), b.float()
    if model.metric == "cosine":
        return (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1)
    if model.metric == "ip":
        return (a * b).sum(-1)
    return -(a - b).pow(2).sum(-1)


def _explained_module(model: SimModel) -> torch.nn.Module:
    modules = dict(model.net.named_modules())
    if model.layer not in modules:
        from .split import TrainingError

        raise TrainingError(f"L_sm needs the explained layer {model.layer!r} as a module of the network")
    return modules[model.layer]


def embed_with_maps(model: SimModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings (B, D) and the explained layer's maps A (B, C, h, w) of one differentiable forward."""
    box: dict[str, torch.Tensor] = {}
    handle = _explained_module(model).register_forward_hook(lambda _m, _i, out: box.__setitem__("A", out))
    try:
        e = model.embed(x)
    finally:
        handle.remove()
    return e, box["A"]


def similarity_attention(w: torch.Tensor, f: torch.Tensor, A: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """M (B, H, W) in [0, 1]: Grad-CAM of ``s = w^T f`` at A, min-max normalised, differentiable (create_graph)."""
    s = (w.detach() * f).sum()
    (grad,) = torch.autograd.grad(s, A, create_graph=True)
    alpha = grad.mean(dim=(2, 3), keepdim=True)
    m = F.relu((alpha * A).sum(1, keepdim=True))
    m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)[:, 0]
    lo = m.flatten(1).min(1).values[:, None, None]
    hi = m.flatten(1).max(1).values[:, None, None]
    return (m - lo) / (hi - lo).clamp_min(1e-8)


def similarity_mining_loss(model: SimModel, x: torch.Tensor, f: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """L_sm of methods.md 2.3.4 for T triplets stacked as anchors, positives, negatives: images ``x`` (3T, 3, H, W),
    their embeddings ``f`` (3T, D) and explained maps ``A`` (3T, C, h, w) from one differentiable forward."""
    fa, fp, fn = F.normalize(f.float(), dim=-1).chunk(3)
    w = ((1 - (fa - fp).abs()).clamp_min(0) * (fa - fn).abs()).detach()
    M = similarity_attention(w.repeat(3, 1), torch.cat([fa, fp, fn]), A, tuple(x.shape[-2:]))
    erased = x * (1 - torch.sigmoid(SM_OMEGA * (M - SM_SIGMA)))[:, None]
    ea, ep, en = model.embed(erased).float().chunk(3)
    return ((ea - ep).norm(dim=-1) - (ea - en).norm(dim=-1)).abs().mean()
