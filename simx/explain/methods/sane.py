"""``sane``: the attribute that best explains a match (SANE, Plummer et al.; methods.md 4.4, 11.1).

For a pair (x, y) with x the explained image (the query on the query side, neighbour k on the neighbour side):

1. Saliency S_x of x w.r.t. y from the first-order engine (``saliency``, RISE by default; fixed reference).
2. Attribute activation maps H_a(x) and confidences c_a = sigmoid(GAP(H_a) + b_a) from a trained
   :class:`~simx.attributes.AttributePredictor` (methods.md 4.3), or, for the default model without one, the
   ImageNet classifier's classes and groups with class activation maps (:class:`~simx.attributes.ImageNetAttributes`).
3. Candidates: the attributes the pair *shares*, i.e. present in x and in y. Present means annotated (when
   ``query_attributes`` / ``neighbour_attributes`` are given, SANE's "annotated attributes") or predicted with a
   confidence at or above the predictor's per-attribute threshold (``min_confidence`` overrides it). A pair that
   shares nothing gets no attribute: ``extras["shared"][k] == []`` and a message saying so.
4. Three scores per candidate (methods.md 4.4):

       confidence  c_a
       matching    m_a = 1 - || P_a - G ||_2 / (|| P_a ||_2 + || G ||_2),  P_a = softmax(z(H_a) / temperature),
                   G = softmax(z(S_x resized to h x w) / temperature)
       removal     R_a = s(x, y) - s(x with the top ``removal_fraction`` of the upsampled H_a set to the
                   ``baseline``, y)

   and the ranking score ``(1 - removal_weight) * (attr_weight * c_a + (1 - attr_weight) * m_a)
   + removal_weight * R_a / max_b R_b`` (R clipped at 0; ``removal_weight = 0`` is exactly 4.4 step 3).
   ``rank_by`` = ``"confidence"``, ``"matching"`` or ``"removal"`` ranks by one term alone (the rankers of 7.4).
   ``removal=False`` skips the removal forwards (its scores are then 0).
   Both maps are z-scored before the softmax because raw RISE values make it nearly flat (the 4.4 pitfall), and
   the distance is divided by its bound so that m spans [0, 1] on any grid
   (:func:`simx.attributes.predictor.match_scores`, the measure L_heat trains).

Returns the best attribute's AAM per pair as ``query_feature_maps`` / ``neighbour_feature_maps`` (zeros where a
pair shares nothing) and, in ``extras``: ``shared`` (K lists), ``message`` (one string, empty when every pair
shares an attribute) and ``messages`` (K), ``query_ranking`` / ``neighbour_ranking`` (K ranked lists of dicts with
attribute, confidence, confidence_other, matching, removal, removal_norm, score, threshold, present and
present_other: whether the explained and the other image have the attribute, annotated or predicted at or above
the threshold), ``query_best`` /
``neighbour_best`` (K names or None), ``query_saliency`` / ``neighbour_saliency`` (K, H, W: the maps matched
against), ``attributes`` (the predictor's description). ``saliency_maps={"query": (K, H, W), "neighbour": ...}``
supplies maps already computed (e.g. the RISE maps the user is looking at) instead of running ``saliency``. Cost: the saliency method's cost, one attribute-head
pass per image and one forward per (pair, candidate) for removal.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Sequence

import numpy as np
import torch

from ...attributes.predictor import (AttributePredictor, ImageNetAttributes, PredictorError, load_predictor,
                                    match_scores, resize_maps)
from ...attributes.vocab import Vocabulary, expand_attribute
from ...errors import ExplainError
from ..base import REGISTRY, MethodOutput, register
from ..engine import PairContext

RANKERS = ("combined", "confidence", "matching", "removal")
CANDIDATES = ("shared", "explained", "all")
_IMAGENET_CACHE: dict[tuple[int, float], ImageNetAttributes] = {}


def resolve_attributes(model: Any, predictor: Any = None, min_confidence: float | None = None) -> Any:
    """The attribute source for ``model``: an :class:`AttributePredictor` (object or folder), ``"imagenet"``, or
    None (the ImageNet classifier of a model that has one, else a clear error)."""
    try:
        if predictor is None or (isinstance(predictor, str) and predictor == "imagenet"):
            key = (id(model), float(0.1 if min_confidence is None else min_confidence))
            if key not in _IMAGENET_CACHE:
                _IMAGENET_CACHE[key] = ImageNetAttributes(model, key[1])
            src = _IMAGENET_CACHE[key]
        elif isinstance(predictor, (AttributePredictor, ImageNetAttributes)):
            src = predictor
        elif isinstance(predictor, (str, os.PathLike)):
            src = load_predictor(predictor)
        else:
            raise ExplainError(f"predictor must be an AttributePredictor, a folder path or 'imagenet', "
                               f"got {type(predictor).__name__}")
        src.check_model(model)
    except PredictorError as exc:
        raise ExplainError(f"sane: {exc}") from None
    return src


def _present(vocab: Vocabulary, names: Sequence[str] | None) -> np.ndarray | None:
    """Annotated attribute names -> bool (A,) over the vocabulary (every level of each path counts)."""
    if names is None:
        return None
    out = np.zeros(len(vocab), dtype=bool)
    for n in names:
        for level in expand_attribute(str(n)):
            if level in vocab:
                out[vocab.index(level)] = True
    return out


def _per_pair(value: Any, k: int, what: str) -> list[Any]:
    """``neighbour_attributes``: one list for K = 1, or K lists."""
    if value is None:
        return [None] * k
    if k == 1 and (not value or isinstance(value[0], str)):
        return [value]
    if len(value) != k or not all(v is None or isinstance(v, (list, tuple)) for v in value):
        raise ExplainError(f"{what} must be a list of attribute names per neighbour ({k} lists)")
    return list(value)


def _saliency(ctx: PairContext, method: str, side: str, n_samples: int | None, params: dict[str, Any]) -> Any:
    from ..engine import explain

    if method == "sane" or method not in REGISTRY:
        raise ExplainError(f"sane: unknown saliency method {method!r}; choose one of "
                           f"{', '.join(sorted(m for m in REGISTRY if m != 'sane'))}")
    kwargs = dict(params)
    if n_samples is not None and "n_samples" in inspect.signature(REGISTRY[method].fn).parameters:
        kwargs.setdefault("n_samples", int(n_samples))
    exp = explain(ctx.model, ctx.query[0], ctx.neighbours, method=method, side=side, seed=ctx.seed,
                  batch_size=ctx.batch_size, progress=ctx.progress, **kwargs)  # its passes tick the same bar
    ctx.cost.forward += exp.cost.forward
    ctx.cost.backward += exp.cost.backward
    return exp


def _removal_masks(ctx: PairContext, maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """Keep-masks (N, H, W): 0 on the top ``fraction`` of pixels of each upsampled map, 1 elsewhere."""
    up = torch.from_numpy(ctx.upsample(maps.detach().float().cpu()))
    n, h, w = up.shape
    top = max(1, int(round(fraction * h * w)))
    idx = torch.topk(up.reshape(n, -1), top, dim=1).indices
    keep = torch.ones(n, h * w)
    keep.scatter_(1, idx, 0.0)
    return keep.reshape(n, h, w)


def _rank(names: Sequence[str], cand: np.ndarray, conf: np.ndarray, conf_other: np.ndarray, match: np.ndarray,
          removal: np.ndarray, attr_weight: float, removal_weight: float, rank_by: str, thr: np.ndarray,
          present: np.ndarray, present_other: np.ndarray) -> list[dict[str, Any]]:
    if len(cand) == 0:
        return []
    r = removal[cand]
    top = float(r.max()) if len(r) else 0.0
    r_norm = np.clip(r / top, 0.0, 1.0) if top > 1e-12 else np.zeros_like(r)
    base = attr_weight * conf[cand] + (1 - attr_weight) * match[cand]
    combined = (1 - removal_weight) * base + removal_weight * r_norm
    key = {"combined": combined, "confidence": conf[cand], "matching": match[cand], "removal": r}[rank_by]
    order = np.lexsort((-conf[cand], -key))  # ties broken by confidence
    return [{"attribute": names[int(cand[i])], "confidence": float(conf[cand[i]]),
             "confidence_other": float(conf_other[cand[i]]), "matching": float(match[cand[i]]),
             "removal": float(r[i]), "removal_norm": float(r_norm[i]), "score": float(combined[i]),
             "rank_score": float(key[i]), "threshold": float(thr[cand[i]]), "present": bool(present[cand[i]]),
             "present_other": bool(present_other[cand[i]])} for i in order]


def passes(k: int, side: str, size: tuple[int, int], params: dict) -> tuple[int, int]:
    """The saliency method's passes on this side (none when ``saliency_maps`` are given) plus, with removal, at
    most one forward per (pair, candidate) (the candidate count is only known once the attributes are predicted,
    so this is the bound ``max_candidates``)."""
    forward = backward = 0
    if not (params.get("saliency_maps") or {}).get(side):
        saliency = REGISTRY.get(params.get("saliency", "rise"))
        sub = dict(params.get("saliency_params") or {})
        n_samples = params.get("n_samples", 500)
        if saliency is not None and n_samples is not None and "n_samples" in inspect.signature(saliency.fn).parameters:
            sub.setdefault("n_samples", int(n_samples))
        if saliency is not None and saliency.passes is not None:
            forward, backward = saliency.passes(k, side, size, sub)
    if params.get("removal", True):
        forward += k * int(params.get("max_candidates") or 25)
    return forward, backward


@register("sane", "SANE: the shared attribute that best explains the match, ranked by confidence, saliency "
          "matching and removal (4.4); needs a trained attribute predictor or the default model's ImageNet classes",
          kind="attribute", needs_features=True, passes=passes)
def attribute(ctx: PairContext, side: str, predictor: Any = None, saliency: str = "rise", n_samples: int | None = 500,
              saliency_params: dict[str, Any] | None = None, attr_weight: float = 0.5, removal_weight: float = 0.0,
              removal_fraction: float = 0.15, baseline: str | float = "mean", candidates: str = "shared",
              min_confidence: float | None = None, query_attributes: Sequence[str] | None = None,
              neighbour_attributes: Any = None, max_candidates: int | None = 25, temperature: float = 1.0,
              rank_by: str = "combined", saliency_maps: dict[str, np.ndarray] | None = None,
              removal: bool = True) -> MethodOutput:
    if not 0.0 <= attr_weight <= 1.0 or not 0.0 <= removal_weight <= 1.0:
        raise ExplainError("sane: attr_weight and removal_weight must lie in [0, 1]")
    if not 0.0 < removal_fraction < 1.0:
        raise ExplainError("sane: removal_fraction must lie strictly between 0 and 1")
    if rank_by not in RANKERS:
        raise ExplainError(f"sane: rank_by must be one of {', '.join(RANKERS)}, got {rank_by!r}")
    if not removal and (rank_by == "removal" or removal_weight > 0):
        raise ExplainError("sane: removal=False cannot rank by removal or give it a weight")
    if candidates not in CANDIDATES:
        raise ExplainError(f"sane: candidates must be one of {', '.join(CANDIDATES)}, got {candidates!r}")
    src = resolve_attributes(ctx.model, predictor, min_confidence)
    vocab: Vocabulary = src.vocabulary
    names = vocab.names
    k = ctx.k
    thr = (np.full(len(vocab), float(min_confidence), np.float32) if min_confidence is not None
           else np.asarray(src.thresholds(), np.float32))

    maps_q, conf_q = src.attribute_maps(ctx.model, ctx.query, ctx.query_features)  # (1, A, h, w), (1, A)
    maps_n, conf_n = src.attribute_maps(ctx.model, ctx.neighbours, ctx.neighbour_features)  # (K, A, h, w)
    cq = conf_q[0].float().cpu().numpy()
    cn = conf_n.float().cpu().numpy()
    ann_q = _present(vocab, query_attributes)
    ann_n = [_present(vocab, a) for a in _per_pair(neighbour_attributes, k, "neighbour_attributes")]
    pres_q = ann_q if ann_q is not None else cq >= thr
    pres_n = [a if a is not None else cn[j] >= thr for j, a in enumerate(ann_n)]
    how_q = "annotated" if ann_q is not None else "predicted"
    shared_mask = [pres_q & pres_n[j] for j in range(k)]

    do_q, do_n = side == "query", side == "neighbour"  # the engine calls once per side
    given = dict(saliency_maps or {})
    for key in given:
        if key not in ("query", "neighbour"):
            raise ExplainError(f"sane: saliency_maps keys are 'query' and 'neighbour', got {key!r}")
        arr = np.asarray(given[key], dtype=np.float32)
        if arr.ndim != 3 or arr.shape[0] != k:
            raise ExplainError(f"sane: saliency_maps[{key!r}] must be ({k}, H, W) or ({k}, h, w), got {arr.shape}")
        given[key] = arr if tuple(arr.shape[-2:]) == ctx.size else ctx.upsample(arr)
    if (not do_q or "query" in given) and (not do_n or "neighbour" in given):
        sal_params: dict[str, Any] = {"given": True}
        s_q_given, s_n_given = given.get("query"), given.get("neighbour")
    else:
        exp = _saliency(ctx, saliency, side, n_samples, dict(saliency_params or {}))
        sal_params = {**exp.params}
        s_q_given = given.get("query", exp.query_maps if exp.query_maps is not None
                              else (None if exp.query_feature_maps is None else ctx.upsample(exp.query_feature_maps)))
        s_n_given = given.get("neighbour", exp.neighbour_maps if exp.neighbour_maps is not None
                              else (None if exp.neighbour_feature_maps is None
                                    else ctx.upsample(exp.neighbour_feature_maps)))
    hw = tuple(maps_q.shape[-2:])
    sims = ctx.similarities().float().cpu().numpy()
    out = MethodOutput(params={"saliency": saliency, "saliency_params": sal_params, "attr_weight": attr_weight,
                               "removal_weight": removal_weight, "removal_fraction": removal_fraction,
                               "baseline": baseline, "candidates": candidates, "rank_by": rank_by,
                               "min_confidence": min_confidence, "max_candidates": max_candidates,
                               "temperature": temperature, "removal": removal})

    def candidate_set(j: int, explained_conf: np.ndarray, explained_present: np.ndarray) -> np.ndarray:
        if candidates == "shared":
            mask = shared_mask[j]
        elif candidates == "explained":
            mask = explained_present
        else:
            mask = np.ones(len(vocab), dtype=bool)
        cand = np.flatnonzero(mask)
        cand = cand[np.argsort(-explained_conf[cand], kind="stable")]
        return cand[:max_candidates] if max_candidates else cand

    extras: dict[str, Any] = {"attributes": src.describe(), "vocabulary_size": len(vocab),
                              "shared": [[names[a] for a in np.flatnonzero(m)[np.argsort(-cq[np.flatnonzero(m)],
                                                                                           kind="stable")]]
                                         for m in shared_mask]}
    messages: list[str | None] = []
    for j in range(k):
        if shared_mask[j].any() or candidates != "shared":
            messages.append(None)
            continue
        how_n = "annotated" if ann_n[j] is not None else "predicted"
        detail = (f"query: {how_q} {int(pres_q.sum())} attribute(s), neighbour: {how_n} {int(pres_n[j].sum())}, "
                  "none in common")
        messages.append(f"pair {j}: the query and the neighbour share no attribute ({detail}); SANE gives no "
                        "explaining attribute rather than invent one")

    # ---- query side: x = query, y = neighbour j ---------------------------------------------------------------
    if do_q:
        s_q = np.asarray(s_q_given, dtype=np.float32)
        m_q = match_scores(maps_q[0].cpu(), resize_maps(s_q, hw), temperature).numpy()  # (K, A)
        cands = [candidate_set(j, cq, pres_q) for j in range(k)]
        union = np.unique(np.concatenate(cands)) if any(len(c) for c in cands) else np.zeros(0, np.int64)
        drops = np.zeros((k, len(vocab)), np.float32)
        if len(union) and removal:
            keep = _removal_masks(ctx, maps_q[0][torch.as_tensor(union)], removal_fraction)
            s_rem = ctx.query_mask_scores(keep, baseline).float().cpu().numpy()  # (|U|, K)
            drops[:, union] = (sims[None, :] - s_rem).T
        rankings = [_rank(names, cands[j], cq, cn[j], m_q[j], drops[j], attr_weight, removal_weight, rank_by, thr,
                          pres_q, pres_n[j]) for j in range(k)]
        best = [r[0]["attribute"] if r else None for r in rankings]
        fmaps = np.zeros((k, *hw), np.float32)
        for j, b in enumerate(best):
            if b is not None:
                fmaps[j] = maps_q[0, vocab.index(b)].float().cpu().numpy()
        out.query_feature_maps = fmaps
        extras.update({"query_ranking": rankings, "query_best": best, "query_saliency": s_q.astype(np.float32)})

    # ---- neighbour side: x = neighbour j, y = query -----------------------------------------------------------
    if do_n:
        s_n = np.asarray(s_n_given, dtype=np.float32)
        rankings, best = [], []
        fmaps = np.zeros((k, *hw), np.float32)
        for j in range(k):
            m_n = match_scores(maps_n[j].cpu(), resize_maps(s_n[j : j + 1], hw), temperature).numpy()[0]
            cand = candidate_set(j, cn[j], pres_n[j])
            drop = np.zeros(len(vocab), np.float32)
            if len(cand) and removal:
                keep = _removal_masks(ctx, maps_n[j][torch.as_tensor(cand)], removal_fraction)
                emb = ctx.embed_masked(ctx.neighbours[j], keep, baseline)
                s_rem = ctx.model.similarity(emb, ctx.query_embedding)[:, 0].float().cpu().numpy()
                drop[cand] = sims[j] - s_rem
            r = _rank(names, cand, cn[j], cq, m_n, drop, attr_weight, removal_weight, rank_by, thr, pres_n[j],
                      pres_q)
            rankings.append(r)
            best.append(r[0]["attribute"] if r else None)
            if r:
                fmaps[j] = maps_n[j, vocab.index(r[0]["attribute"])].float().cpu().numpy()
        out.neighbour_feature_maps = fmaps
        extras.update({"neighbour_ranking": rankings, "neighbour_best": best,
                       "neighbour_saliency": s_n.astype(np.float32)})

    extras["messages"] = messages
    extras["message"] = "; ".join(m for m in messages if m) if any(messages) else ""
    out.extras = extras
    return out


def shared_attribute_rows(extras: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of one pair's SANE ranking (``extras`` of a pair view) that may be presented as *shared*:
    attributes both images have (annotated, or predicted at or above the attribute's threshold), best first.

    Anything else is dropped, so a table of shared attributes can never show an attribute that neither image (or
    only one) is predicted to have. The neighbour side's ranking is used when present, else the query side's.
    Each row: attribute, score, query confidence, neighbour confidence, threshold, matching, removal.
    """
    ranking, neighbour_side = extras.get("neighbour_ranking"), True
    if not ranking:
        ranking, neighbour_side = extras.get("query_ranking") or [], False
    rows = []
    for r in ranking:
        if not isinstance(r, dict):
            continue
        thr = float(r.get("threshold", 0.0))
        own, other = float(r.get("confidence", 0.0)), float(r.get("confidence_other", 0.0))
        if not (bool(r.get("present", own >= thr)) and bool(r.get("present_other", other >= thr))):
            continue
        q_conf, n_conf = (other, own) if neighbour_side else (own, other)
        rows.append({"attribute": str(r.get("attribute")), "score": float(r.get("score", 0.0)),
                     "query confidence": q_conf, "neighbour confidence": n_conf, "threshold": thr,
                     "matching": float(r.get("matching", 0.0)), "removal": float(r.get("removal", 0.0))})
    return rows
