"""How good is a map? Faithfulness, localisation and sanity checks of explanation maps.

* :func:`insertion_deletion` (methods.md 7.1, SANE "Table 1", exact): insert / delete the top-ranked pixels of a
  map at 101 thresholds and watch the similarity to the unmasked reference; per-pair min-max normalised curves,
  trapezoid AUC x 100. :func:`faithfulness` runs it on every map of an :class:`Explanation` with the model
  that made it (a metric is a function over the explanation and the model; the explanation holds no model), at
  :data:`ESTIMATE_STEPS` for the cheap estimate beside every map or :data:`FULL_STEPS` for the full curve, with
  the fill that matches the model's padding, a flag for maps no better than a random map and a warning for maps
  whose mass sits on the padding.
* :func:`pointing_game` (methods.md 7.8): does the arg-max of a map fall in a ground-truth box (strict, and with the
  usual 15-pixel tolerance)? With the two reference points: a uniform random point and the image centre.
* :func:`randomisation_check` (Adebayo et al. 2018, "Sanity checks for saliency maps"): re-initialise the explained
  layer of a copy of the model and measure how much the maps change; a method whose maps survive the
  randomisation does not explain the model.
* :func:`random_maps`: the random-map baseline every number above should be compared with.

Coordinates: maps are (H, W) arrays at the model's input resolution, indexed ``map[y, x]``; pixel ``(x, y)``
covers ``[x, x + 1) x [y, y + 1)``. Boxes are ``(x0, y0, x1, y1)`` (or dicts with those keys) in the same pixel
coordinates, ``x1``/``y1`` exclusive. Gallery boxes are in original-image pixels: map them to model-input
coordinates with :func:`transform_boxes`, i.e. ``model.preprocessing.box_transform(width, height)`` ->
``(scale, dx, dy)`` and ``x' = x * scale + dx``.
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..errors import ExplainError
from ..models import Preprocessing, SimModel
from ..render.reading import DIRECTION, PADDING_WARNING, padding_share  # noqa: F401  (re-exported)
from .base import Cost, Explanation
from .engine import FEATURE_CACHE, PairContext, to_input

#: Similarity range below which an insertion/deletion curve counts as constant (0/0 guard): absolute part.
CONSTANT_ATOL = 1e-6
#: ... and relative part (times the largest absolute score of the curve).
CONSTANT_RTOL = 1e-5
#: Normalised value given to every point of a constant curve (so its AUC is 50: neither good nor bad).
CONSTANT_FILL = 0.5


# ------------------------------------------------------------------------------------------------ helpers
def thresholds(steps: int = 101) -> np.ndarray:
    """The fractions t of pixels revealed/removed: ``steps`` evenly spaced values from 0 to 1 (0, 0.01, ..., 1)."""
    if steps < 2:
        raise ExplainError(f"insertion/deletion needs at least 2 steps, got {steps}")
    return np.linspace(0.0, 1.0, int(steps))


def pixel_counts(n_pixels: int, steps: int = 101) -> np.ndarray:
    """n_t = max(round(N t), 1) for every threshold (methods.md 7.1; Python's round, half to even)."""
    last = int(steps) - 1
    return np.array([max(int(round(n_pixels * i / last)), 1) for i in range(int(steps))], dtype=np.int64)


def trapezoid_auc(curve: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Area under ``curve`` (..., T) over ``t`` (T,) by the trapezoid rule (what sklearn's ``auc`` computes)."""
    c = np.asarray(curve, dtype=np.float64)
    dt = np.diff(np.asarray(t, dtype=np.float64))
    return ((c[..., 1:] + c[..., :-1]) * 0.5 * dt).sum(axis=-1)


def normalise_curves(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-curve min-max normalisation (subtract the minimum, divide by the new maximum).

    Returns ``(normalised, constant)``. The 0/0 guard: a curve whose range is at most
    ``CONSTANT_ATOL + CONSTANT_RTOL * max|curve|`` (the masking never changes the score, beyond float noise) is
    *constant*; its normalised curve is ``CONSTANT_FILL`` (0.5) everywhere, so its AUC is 50, the midpoint that
    neither rewards nor penalises a map (the ordering of pixels had no effect). ``constant`` flags those curves so
    a caller can exclude them instead.
    """
    c = np.asarray(curves, dtype=np.float64)
    lo = c.min(axis=-1, keepdims=True)
    span = c.max(axis=-1, keepdims=True) - lo
    scale = np.abs(c).max(axis=-1, keepdims=True)
    constant = span <= CONSTANT_ATOL + CONSTANT_RTOL * scale
    out = np.where(constant, CONSTANT_FILL, (c - lo) / np.where(constant, 1.0, span))
    return out, constant[..., 0]


def _as_maps(maps: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(maps, dtype=np.float32) if not isinstance(maps, torch.Tensor) else maps)
    t = t.detach().float().cpu()
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3:
        raise ExplainError(f"maps must be (P, H, W) or (H, W), got shape {tuple(t.shape)}")
    return t


def _as_images(model: SimModel, images: Any, what: str) -> torch.Tensor:
    """Model inputs (U, 3, H, W) from a tensor or a sequence of tensors / PIL images / paths."""
    if isinstance(images, torch.Tensor):
        x = images.detach()
        if x.dim() == 3:
            x = x.unsqueeze(0)
        return torch.stack([to_input(model, xi, f"{what} {i}") for i, xi in enumerate(x)])
    if not isinstance(images, (list, tuple)):
        images = [images]
    return torch.stack([to_input(model, im, f"{what} {i}") for i, im in enumerate(images)])


def _broadcast_index(n: int, p: int, what: str) -> np.ndarray:
    if n == p:
        return np.arange(p)
    if n == 1:
        return np.zeros(p, dtype=np.int64)
    raise ExplainError(f"{what}: got {n} for {p} maps (give one per map, or one for all)")


# ------------------------------------------------------------------------------------- insertion / deletion
def _insertion_deletion_core(ctx: PairContext, images: torch.Tensor, image_index: np.ndarray, maps: torch.Tensor,
                             ref_embeddings: torch.Tensor, ref_index: np.ndarray, background: Any, steps: int,
                             batch_size: int | None) -> dict[str, Any]:
    """The harness behind :func:`insertion_deletion`; passes are counted in a fresh :class:`Cost` (returned)."""
    h, w = ctx.size
    n_pixels = h * w
    p = maps.shape[0]
    if tuple(maps.shape[-2:]) != (h, w):  # feature-resolution maps: bilinear to the input size (rule 4)
        maps = torch.as_tensor(ctx.upsample(maps))
    flat = maps.reshape(p, n_pixels)
    flat = torch.nan_to_num(flat, nan=-float("inf"))
    # One full ranking per map; the top-n_t set is the prefix of it (torch.topk, ties broken arbitrarily but
    # the same way at every threshold, so inserted sets are nested).
    order = torch.topk(flat, n_pixels, dim=1, sorted=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n_pixels).expand(p, n_pixels).contiguous())
    rank = rank.to(ctx.device)
    counts = pixel_counts(n_pixels, steps)
    counts_t = torch.as_tensor(counts, device=ctx.device)

    images = images.to(ctx.device)
    u = images.shape[0]
    if background == "blur":
        bgs = torch.cat([ctx.baseline("blur", images[i : i + 1]) for i in range(u)])
    else:
        bgs = ctx.baseline(background).expand(u, 3, h, w)
    refs = ref_embeddings.to(ctx.device).float()

    # Jobs: for pair i, steps insertion images then steps deletion images (2 * steps per pair), run in chunks
    # that mix pairs so every batched forward is full.
    n_jobs = 2 * steps * p
    bs = int(batch_size or ctx.batch_size)
    pair_of = torch.arange(n_jobs, device=ctx.device) // (2 * steps)
    within = torch.arange(n_jobs, device=ctx.device) % (2 * steps)
    deletion = within >= steps
    step_of = within % steps
    img_idx = torch.as_tensor(image_index, device=ctx.device)
    ref_idx = torch.as_tensor(ref_index, device=ctx.device)
    scores = torch.empty(n_jobs, device=ctx.device)

    saved, ctx.cost = ctx.cost, Cost()
    t0 = time.perf_counter()
    try:
        for s in range(0, n_jobs, bs):
            sl = slice(s, min(s + bs, n_jobs))
            pi = pair_of[sl]
            keep = rank[pi] < counts_t[step_of[sl]].unsqueeze(1)  # top-n_t pixels
            keep = keep ^ deletion[sl].unsqueeze(1)  # deletion keeps everything else
            m = keep.view(-1, 1, h, w)
            x = torch.where(m, images[img_idx[pi]], bgs[img_idx[pi]])
            emb = ctx.embed(x)
            r = refs[ref_idx[pi]]
            # similarity of each masked image with its own reference (the diagonal of model.similarity)
            scores[sl] = torch.diagonal(ctx.model.similarity(emb, r))
        cost = ctx.cost
        cost.seconds = time.perf_counter() - t0
    finally:
        ctx.cost = saved

    raw = scores.view(p, 2, steps).double().cpu().numpy()
    ins_raw, del_raw = raw[:, 0], raw[:, 1]
    ins_n, ins_const = normalise_curves(ins_raw)
    del_n, del_const = normalise_curves(del_raw)
    t = thresholds(steps)
    ins_auc = trapezoid_auc(ins_n, t) * 100
    del_auc = trapezoid_auc(del_n, t) * 100
    return {
        "insertion_auc": ins_auc,
        "deletion_auc": del_auc,
        "insertion": float(ins_auc.mean()),
        "deletion": float(del_auc.mean()),
        "insertion_curve": ins_n.mean(axis=0),
        "deletion_curve": del_n.mean(axis=0),
        "insertion_curves": ins_n,
        "deletion_curves": del_n,
        "insertion_raw": ins_raw,
        "deletion_raw": del_raw,
        "insertion_raw_auc": trapezoid_auc(ins_raw, t),
        "deletion_raw_auc": trapezoid_auc(del_raw, t),
        "insertion_constant": ins_const,
        "deletion_constant": del_const,
        "thresholds": t,
        "n_pixels": counts,
        "background": background if isinstance(background, (str, int, float)) else "tensor",
        "steps": int(steps),
        "cost": cost,
    }


def insertion_deletion(ctx_or_model: PairContext | SimModel, images: Any, maps: Any, references: Any,
                       background: str | float | torch.Tensor = "black", steps: int = 101,
                       batch_size: int | None = None) -> dict[str, Any]:
    """Insertion and deletion AUC of P maps (methods.md 7.1, SANE's exact protocol).

    ``images``: the explained images as model inputs, (P, 3, H, W) or (3, H, W) tensors, or PIL images / paths
    (preprocessed by the model); one image is shared by all P maps (the query side of an explanation).
    ``maps``: (P, H, W) (or (H, W)); feature-resolution maps are upsampled bilinearly first.
    ``references``: the other image of each pair, either as unmasked embeddings (P, D) / (1, D) or as images
    (embedded once, unmasked); one reference may be shared by all maps.
    ``background``: ``black``/``white``/``grey``/``mean``/``blur``, a grey level in [0, 1] or a tensor, in the
    sense of :meth:`PairContext.baseline` (the fill in model-input space, i.e. the background image passed
    through the same transform as the images).

    For every threshold t in ``thresholds(steps)`` (0, 0.01, ..., 1), n_t = max(round(N t), 1) top-ranked
    pixels (one ``torch.topk`` ranking per map, ties broken arbitrarily; the sets are nested): the insertion image
    keeps them and sets every other pixel to the background, the deletion image sets them to the background.
    Each image's score is the model's similarity of its embedding to the unmasked reference embedding. Each curve
    is min-max normalised per pair (constant curves: see :func:`normalise_curves`, 0.5 everywhere), its AUC
    taken by the trapezoid rule over t and multiplied by 100. All 2 x ``steps`` images of every pair go through
    batched forwards (``ctx.embed``) that mix pairs, composed chunk by chunk (never all images at once).

    Returns a dict: ``insertion_auc``/``deletion_auc`` (P,) per pair (x 100), ``insertion``/``deletion`` their
    means (= the AUC of the mean normalised curve, as SANE reports it), ``insertion_curve``/``deletion_curve``
    the mean normalised curves (steps,), ``insertion_curves``/``deletion_curves`` the normalised curves (P, steps),
    ``insertion_raw``/``deletion_raw`` the unnormalised similarity curves (P, steps) and their AUCs
    ``*_raw_auc`` (not x 100), ``*_constant`` (P,) flags of guarded curves, ``thresholds``, ``n_pixels`` (n_t),
    ``background``, ``steps`` and ``cost`` (the forwards made; also added to ``ctx.cost`` when a context is given).
    Insertion: higher is better; deletion: lower is better.
    """
    if isinstance(ctx_or_model, PairContext):
        ctx, own = ctx_or_model, False
    elif isinstance(ctx_or_model, SimModel):
        ctx, own = None, True
    else:
        raise ExplainError("insertion_deletion needs a PairContext or a SimModel as its first argument")
    model = ctx_or_model.model if ctx is not None else ctx_or_model
    imgs = _as_images(model, images, "image")
    if ctx is None:  # a private context: the engine's batching, baselines and pass counting
        ctx = PairContext(model, imgs[0], imgs[:1], batch_size=batch_size)
    maps_t = _as_maps(maps)
    p = maps_t.shape[0]
    img_index = _broadcast_index(imgs.shape[0], p, "images")
    n_ref = 0
    if isinstance(references, (torch.Tensor, np.ndarray)) and np.ndim(references) == 2:
        refs = torch.as_tensor(references, dtype=torch.float32).detach().to(ctx.device)  # embeddings
    else:
        ref_imgs = _as_images(model, references, "reference")
        refs = ctx.embed(ref_imgs.to(ctx.device))  # unmasked, once (counted in ctx.cost directly)
        n_ref = ref_imgs.shape[0]
    ref_index = _broadcast_index(refs.shape[0], p, "references")
    out = _insertion_deletion_core(ctx, imgs, img_index, maps_t, refs, ref_index, background, int(steps), batch_size)
    if not own:
        ctx.cost.forward += out["cost"].forward
    out["cost"].forward += n_ref
    return out


def _jsonable(x: Any) -> Any:
    """Plain Python (lists, floats, ints, str, None for NaN) from numpy / torch / nested containers."""
    if isinstance(x, Cost):
        return x.to_dict()
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()] if x.dtype.kind == "f" else x.tolist()
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return None if not np.isfinite(v) else v
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)


#: Steps of the cheap estimate computed with every map (issue 12 item 7): 11 thresholds (0, 0.1, ..., 1) cost
#: 2 x 11 forwards per map, batched. Measured on this 2-core CPU (docs/benchmarks.md, "Faithfulness beside every
#: map"): 21 steps (84 forwards per pair) took 5.7-6.4 s, over the 2 s target; 11 steps take 1.15-1.5 s for the
#: gradient and closed-form methods and still agree with the 101-step curve (correlation 0.999, mean |difference|
#: 0.7 AUC points). The full curve (:data:`FULL_STEPS`) is computed on demand.
ESTIMATE_STEPS = 11
#: SANE's 101 thresholds (methods.md 7.1).
FULL_STEPS = 101
#: A map is "no better than a random map" when insertion AUC - deletion AUC (x 100 units) is at most this.
#: For a random ranking, deleting a random fraction t keeps a random fraction 1 - t, so its deletion curve is its
#: insertion curve reversed and the two AUCs are equal in expectation. Measured (benchmarks/bench_faithfulness.py,
#: docs/benchmarks.md): random maps' margins on demo scenes have mean -0.1 and sd 1.2 at 21 steps, and mean +0.9,
#: sd 1.7 (95th percentile 3.5) at the 11 steps of :data:`ESTIMATE_STEPS`: 97 % of random maps are flagged, a map
#: that orders the evidence clearly better is not.
RANDOM_MARGIN = 5.0


def default_background(model: SimModel) -> str:
    """The fill of removed pixels that matches the model's preprocessing: the padding colour (white) for
    ``fit="pad"``, so removing a pixel makes it look like the padding the model already sees; black otherwise
    (SANE's fill)."""
    return "white" if model.preprocessing.fit == "pad" else "black"


def model_inputs(explanation: Explanation, model: SimModel) -> tuple[torch.Tensor, torch.Tensor]:
    """The model inputs of an explanation, (1, 3, H, W) and (K, 3, H, W), rebuilt from its pictures (the uint8
    images exactly as the model saw them, normalised again: identical to the original inputs for images
    preprocessed by simx, within half a grey level for tensors a caller passed)."""
    if explanation.query_image is None or explanation.neighbour_images is None:
        raise ExplainError("this explanation carries no images to score its maps on")

    def norm(pictures: np.ndarray) -> torch.Tensor:
        arr = np.asarray(pictures, dtype=np.float32) / 255.0
        return model.preprocessing.normalise(torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous())

    query = norm(np.asarray(explanation.query_image)[None])
    neighbours = norm(np.asarray(explanation.neighbour_images))
    if tuple(query.shape[-2:]) != model.input_size:
        raise ExplainError(f"this explanation's images are {tuple(query.shape[-2:])} but the model takes "
                           f"{model.input_size}: score it with the model that made it")
    return query, neighbours


def faithfulness(explanation: Explanation, model: SimModel, steps: int = FULL_STEPS, background: Any = None,
                 batch_size: int | None = None, keep: bool = True, progress: Any = None) -> dict[str, Any]:
    """Insertion/deletion AUC (methods.md 7.1) of every map of ``explanation`` under ``model``, JSON-safe.

    Query-side map k explains the query w.r.t. neighbour k: the query is masked and scored against neighbour k's
    unmasked embedding; neighbour-side map k masks neighbour k and scores it against the unmasked query. Both
    sides run in one batched harness; the model inputs are rebuilt from the explanation (:func:`model_inputs`).
    ``background`` (the fill of removed pixels) defaults to :func:`default_background` (the padding colour for
    ``fit="pad"``). ``steps`` = :data:`ESTIMATE_STEPS` gives the cheap estimate shown beside every map,
    :data:`FULL_STEPS` (default) the full curve. With ``keep`` the result is also stored in
    ``explanation.scores`` under ``"faithfulness"`` (full) or ``"faithfulness_estimate"`` (fewer steps).

    Returns ``{"query": {"insertion": [K], "deletion": [K], "insertion_mean", "deletion_mean",
    "insertion_curve", "deletion_curve", "insertion_curves", "deletion_curves", "insertion_raw", "deletion_raw",
    "constant", "margin", "better_than_random", "padding_share", "padding_warning"}, "neighbour": {...},
    "background", "background_source", "steps", "estimate", "direction", "random_margin", "thresholds",
    "cost"}``; a side without maps is absent. ``margin`` is insertion - deletion; ``better_than_random`` is
    False for a map whose margin is at most :data:`RANDOM_MARGIN` (a random map's margin is 0 in expectation);
    ``padding_share`` the share of the map's positive mass on padding (:func:`padding_share`), with
    ``padding_warning`` above :data:`PADDING_WARNING`. The passes are reported under ``cost`` and not added to
    the explanation's own cost. ``progress`` (a :class:`~simx.explain.progress.Progress`) is ticked at every
    pass and can cancel, as in :func:`simx.explain.explain` (:func:`simx.explain.scored.explain_scored` runs both
    under one progress bar).
    """
    source = "user" if background is not None else ("padding" if model.preprocessing.fit == "pad" else "default")
    background = default_background(model) if background is None else background
    sides = [side for side in ("query", "neighbour") if explanation.maps(side) is not None]
    result: dict[str, Any] = {"background": _jsonable(background) if not isinstance(background, torch.Tensor)
                              else "tensor", "background_source": source, "steps": int(steps),
                              "estimate": int(steps) < FULL_STEPS, "direction": DIRECTION,
                              "random_margin": RANDOM_MARGIN, "thresholds": _jsonable(thresholds(steps))}
    if sides:
        ctx = _context_for(explanation, model, batch_size)
        ctx.progress = progress
        _score_sides(explanation, ctx, sides, background, int(steps), batch_size, result)
    if keep:
        explanation.scores["faithfulness" if int(steps) >= FULL_STEPS else "faithfulness_estimate"] = result
    return result


def _context_for(explanation: Explanation, model: SimModel, batch_size: int | None) -> PairContext:
    """The engine context that scores an explanation's maps: its images rebuilt as model inputs, and for a text
    query (``params["text"]``, no query map) the text embedding as the reference of every neighbour map."""
    query, neighbours = model_inputs(explanation, model)
    text = explanation.params.get("text")
    if text is not None and explanation.query_maps is None:
        from .text import TextQueryContext

        return TextQueryContext(model, text, list(neighbours), batch_size=batch_size)
    return PairContext(model, query, neighbours, batch_size=batch_size)


def _score_sides(explanation: Explanation, ctx: PairContext, sides: list[str], background: Any, steps: int,
                 batch_size: int | None, result: dict[str, Any]) -> None:
    k = ctx.k
    images = torch.cat([ctx.query, ctx.neighbours])  # index 0 = query, 1..K = neighbours
    refs = torch.cat([ctx.query_embedding, ctx.neighbour_embeddings])  # same indexing
    maps, img_index, ref_index = [], [], []
    for side in sides:
        m = _as_maps(explanation.maps(side))
        if m.shape[0] != k:
            raise ExplainError(f"{side} maps: {m.shape[0]} maps for {k} neighbours")
        if tuple(m.shape[-2:]) != ctx.size:
            m = torch.as_tensor(ctx.upsample(m))
        maps.append(m)
        if side == "query":
            img_index += [0] * k
            ref_index += list(range(1, k + 1))
        else:
            img_index += list(range(1, k + 1))
            ref_index += [0] * k
    out = _insertion_deletion_core(ctx, images, np.array(img_index), torch.cat(maps), refs, np.array(ref_index),
                                   background, steps, batch_size)
    for j, side in enumerate(sides):
        sl = slice(j * k, (j + 1) * k)
        margin = out["insertion_auc"][sl] - out["deletion_auc"][sl]
        shares = [padding_share(maps[j][i].numpy(), explanation.box(side, i), explanation.baseline(side, i))
                  for i in range(k)]
        result[side] = {
            "insertion": _jsonable(out["insertion_auc"][sl]),
            "deletion": _jsonable(out["deletion_auc"][sl]),
            "insertion_mean": _jsonable(out["insertion_auc"][sl].mean()),
            "deletion_mean": _jsonable(out["deletion_auc"][sl].mean()),
            "insertion_curve": _jsonable(out["insertion_curves"][sl].mean(axis=0)),
            "deletion_curve": _jsonable(out["deletion_curves"][sl].mean(axis=0)),
            "insertion_curves": _jsonable(out["insertion_curves"][sl]),
            "deletion_curves": _jsonable(out["deletion_curves"][sl]),
            "insertion_raw": _jsonable(out["insertion_raw"][sl]),
            "deletion_raw": _jsonable(out["deletion_raw"][sl]),
            "constant": _jsonable(out["insertion_constant"][sl] | out["deletion_constant"][sl]),
            "margin": _jsonable(margin),
            "better_than_random": [bool(v > RANDOM_MARGIN) for v in margin],
            "padding_share": shares,
            "padding_warning": [bool(v is not None and v > PADDING_WARNING) for v in shares],
        }
    result["cost"] = out["cost"].to_dict()


# ------------------------------------------------------------------------------------------ pointing game
def _box_tuple(b: Any) -> tuple[float, float, float, float]:
    if isinstance(b, Mapping):
        return float(b["x0"]), float(b["y0"]), float(b["x1"]), float(b["y1"])
    x0, y0, x1, y1 = (float(v) for v in b)
    return x0, y0, x1, y1


def transform_boxes(boxes: Sequence[Any], preprocessing: Preprocessing, width: int, height: int) -> list[dict]:
    """Boxes in original-image pixels -> model-input pixels, ``x' = x * scale + dx`` with
    ``(scale, dx, dy) = preprocessing.box_transform(width, height)``; other keys of dict boxes are kept."""
    scale, dx, dy = preprocessing.box_transform(width, height)
    out = []
    for b in boxes:
        x0, y0, x1, y1 = _box_tuple(b)
        extra = {k: v for k, v in b.items() if k not in ("x0", "y0", "x1", "y1")} if isinstance(b, Mapping) else {}
        out.append({**extra, "x0": x0 * scale + dx, "y0": y0 * scale + dy, "x1": x1 * scale + dx,
                    "y1": y1 * scale + dy})
    return out


def box_mask(boxes: Sequence[Any], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: pixels whose centre ``(x + 0.5, y + 0.5)`` lies in the union of ``boxes`` (clipped to the
    image; ``x1``/``y1`` exclusive, so integer boxes cover exactly columns x0..x1-1 and rows y0..y1-1)."""
    h, w = shape
    mask = np.zeros((h, w), dtype=bool)
    for b in boxes:
        x0, y0, x1, y1 = _box_tuple(b)
        c0, c1 = max(int(np.ceil(x0 - 0.5)), 0), min(int(np.ceil(x1 - 0.5)), w)
        r0, r1 = max(int(np.ceil(y0 - 0.5)), 0), min(int(np.ceil(y1 - 0.5)), h)
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] = True
    return mask


def _distance_to_mask(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (in pixels, centre to centre) from every pixel to the nearest pixel of ``mask``."""
    from scipy.ndimage import distance_transform_edt

    if not mask.any():
        return np.full(mask.shape, np.inf)
    return distance_transform_edt(~mask)


def pointing_game(maps: Any, boxes_per_map: Sequence[Sequence[Any] | None], tolerance: float = 15) -> dict[str, Any]:
    """Pointing game (methods.md 7.8): a hit when a map's arg-max pixel lies in a ground-truth box.

    ``maps``: (N, H, W) (or a list of (H, W) arrays); ``boxes_per_map``: for each map a list of boxes
    ``(x0, y0, x1, y1)`` or dicts with those keys, in the map's own pixel coordinates (x1, y1 exclusive; map
    gallery boxes with :func:`transform_boxes` / ``model.preprocessing.box_transform(w, h)`` first). A pixel is
    in a box when its centre is. The arg-max is the first maximum in row-major order (``np.nanargmax``).

    *strict*: the arg-max pixel is in a box; *tolerance*: it lies within ``tolerance`` pixels (Euclidean, centre to
    centre) of a box pixel (the usual 15 px). Accuracy = hits / (hits + misses); maps with no box (None, [] or
    boxes entirely outside the map) are not scored (``skipped``).

    Baselines, on the same scored maps: ``random_point_baseline`` is the expected hit rate of a uniformly random
    point, i.e. the mean area fraction of the union of boxes (clipped to the image), and with tolerance the area
    fraction of that union grown by ``tolerance``; ``centre_baseline`` is the hit rate of always pointing at the
    centre pixel ``(W // 2, H // 2)``.
    """
    if isinstance(maps, (np.ndarray, torch.Tensor)) and np.ndim(maps) == 2:
        maps = [maps]
    maps = [np.asarray(m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else m, dtype=np.float64)
            for m in maps]
    if len(maps) != len(boxes_per_map):
        raise ExplainError(f"pointing_game: {len(maps)} maps but {len(boxes_per_map)} box lists")
    per_map: list[dict[str, Any]] = []
    hits = hits_tol = centre = centre_tol = 0
    area = area_tol = 0.0
    scored = 0
    for m, boxes in zip(maps, boxes_per_map):
        if m.ndim != 2:
            raise ExplainError(f"pointing_game: maps must be 2-D, got shape {m.shape}")
        mask = box_mask(boxes or [], m.shape)
        if not mask.any():
            per_map.append({"scored": False})
            continue
        scored += 1
        dist = _distance_to_mask(mask)
        if np.all(np.isnan(m)):
            y, x = 0, 0
        else:
            y, x = np.unravel_index(int(np.nanargmax(m)), m.shape)
        hit, hit_t = bool(mask[y, x]), bool(dist[y, x] <= tolerance)
        cy, cx = m.shape[0] // 2, m.shape[1] // 2
        hits += hit
        hits_tol += hit_t
        centre += bool(mask[cy, cx])
        centre_tol += bool(dist[cy, cx] <= tolerance)
        area += float(mask.mean())
        area_tol += float((dist <= tolerance).mean())
        per_map.append({"scored": True, "point": [int(x), int(y)], "hit": hit, "hit_tolerance": hit_t,
                        "distance": float(dist[y, x])})
    div = max(scored, 1)
    nan = float("nan")
    return {
        "n": scored,
        "skipped": len(maps) - scored,
        "tolerance": float(tolerance),
        "hits": int(hits),
        "misses": int(scored - hits),
        "accuracy": hits / scored if scored else nan,
        "hits_tolerance": int(hits_tol),
        "misses_tolerance": int(scored - hits_tol),
        "accuracy_tolerance": hits_tol / scored if scored else nan,
        "random_point_baseline": {"strict": area / div if scored else nan,
                                  "tolerance": area_tol / div if scored else nan},
        "centre_baseline": {"strict": centre / div if scored else nan,
                            "tolerance": centre_tol / div if scored else nan},
        "per_map": per_map,
    }


# ------------------------------------------------------------------------------------------ random maps
def random_maps(k: int, size: int | tuple[int, int], seed: int = 0) -> np.ndarray:
    """The random-map baseline: (k, H, W) float32 i.i.d. uniform [0, 1) values (SANE's "random" saliency),
    reproducible from ``seed``. It ignores the model and the images entirely."""
    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    return np.random.default_rng(seed).random((int(k), h, w), dtype=np.float32)


# --------------------------------------------------------------------------------- randomisation check
def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (skimage, Gaussian-free 7x7 windows) of the two maps after per-map min-max scaling to [0, 1]."""
    from skimage.metrics import structural_similarity

    def unit(m: np.ndarray) -> np.ndarray:
        m = np.nan_to_num(np.asarray(m, np.float64))
        span = np.ptp(m)
        return (m - m.min()) / span if span > 0 else np.zeros_like(m)

    a, b = unit(a), unit(b)
    win = min(7, *a.shape)
    win -= 1 - win % 2  # odd
    return float(structural_similarity(a, b, data_range=1.0, win_size=max(win, 3)))


def compare_maps(a: Any, b: Any) -> dict[str, list[float | None]]:
    """Per-map Spearman rank correlation and SSIM of two stacks of maps (K, H, W) (the randomisation-check
    numbers). A constant map has no ranking: its correlation is reported as None (NaN)."""
    a, b = _as_maps(a).numpy(), _as_maps(b).numpy()
    if a.shape != b.shape:
        raise ExplainError(f"compare_maps: shapes differ, {a.shape} vs {b.shape}")
    rho = [_spearman(x, y) for x, y in zip(a, b)]
    ssim = [_ssim(x, y) for x, y in zip(a, b)]
    return {"spearman": [None if np.isnan(r) else r for r in rho], "ssim": ssim}


def explained_module(model: SimModel) -> tuple[str, torch.nn.Module]:
    """(name, module) whose weights the randomisation check re-initialises: for a toy ``PooledModel`` the last
    ``Conv2d`` of its trunk; otherwise the module named ``model.layer`` (with its children), falling back to the
    network's last ``Conv2d``."""
    from ..models.toy import PooledModel

    net = model.net
    if isinstance(model, PooledModel):
        convs = [(f"trunk.{n}", m) for n, m in net["trunk"].named_modules() if isinstance(m, torch.nn.Conv2d)]
        if convs:
            return convs[-1]
    modules = dict(net.named_modules())
    if model.layer in modules and any(True for _ in modules[model.layer].parameters()):
        return model.layer, modules[model.layer]
    convs = [(n, m) for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise ExplainError(f"model {model.spec!r}: no layer with weights to randomise")
    return convs[-1]


def randomise_layer(model: SimModel, seed: int = 0) -> tuple[SimModel, str]:
    """A deep copy of ``model`` whose explained layer (see :func:`explained_module`) has freshly initialised
    weights; the user's model is never touched. Returns ``(copy, module name)``."""
    clone = copy.deepcopy(model)
    # a spec of its own, so the unperturbed-feature cache can never mix the copy with another model
    clone.spec = f"{model.spec}#randomised-{uuid.uuid4().hex[:12]}"
    clone.__dict__.pop("_feature_cache_token", None)  # and a cache token of its own (deepcopy copied the model's)
    name, module = explained_module(clone)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for sub in module.modules():
            if hasattr(sub, "reset_parameters") and callable(sub.reset_parameters):
                sub.reset_parameters()
            elif not list(sub.children()):
                for p in sub.parameters(recurse=False):
                    p.normal_(0.0, 0.02)
    for p in clone.net.parameters():
        p.requires_grad_(False)
    return clone, name


def _maps_of(result: Any) -> dict[str, np.ndarray | None]:
    if isinstance(result, Explanation):
        return {"query": result.query_maps, "neighbour": result.neighbour_maps}
    if isinstance(result, Mapping):
        return {"query": result.get("query"), "neighbour": result.get("neighbour")}
    q, n = result
    return {"query": q, "neighbour": n}


def randomisation_check(model: SimModel, query: Any, neighbours: Any, method: str | Callable[..., Any],
                        threshold: float = 0.5, side: str = "both", seed: int = 0, randomisation_seed: int = 1,
                        **params: Any) -> dict[str, Any]:
    """Model-parameter randomisation test (Adebayo et al. 2018) for one method on one query and its neighbours.

    Computes the maps with ``model``, re-initialises the explained layer's weights on a deep copy
    (:func:`randomise_layer`), recomputes the maps with the same seed and parameters, and compares original and
    randomised maps per pair and side: Spearman rank correlation and SSIM (:func:`compare_maps`). A method that
    explains the model must produce different maps for a different model: ``passed`` is True when the mean
    correlation is below ``threshold`` (constant maps count as correlation 0).

    ``method``: a registered method name (run through :func:`simx.explain.explain`) or a callable
    ``fn(model, query, neighbours, side=..., seed=...)`` returning an :class:`Explanation`, a dict with ``query`` /
    ``neighbour`` maps or a ``(query_maps, neighbour_maps)`` tuple (to check a method that is not registered).
    """
    from .engine import explain

    def run(m: SimModel) -> dict[str, np.ndarray | None]:
        if callable(method):
            return _maps_of(method(m, query, neighbours, side=side, seed=seed, **params))
        return _maps_of(explain(m, query, neighbours, method=method, side=side, seed=seed, **params))

    original = run(model)
    clone, layer = randomise_layer(model, randomisation_seed)
    try:
        randomised = run(clone)
    finally:
        FEATURE_CACHE.discard(clone)
    sides: dict[str, Any] = {}
    all_rho: list[float] = []
    all_ssim: list[float] = []
    for s in ("query", "neighbour"):
        a, b = original.get(s), randomised.get(s)
        if a is None or b is None:
            continue
        cmp = compare_maps(a, b)
        sides[s] = cmp
        all_rho += [0.0 if r is None else r for r in cmp["spearman"]]
        all_ssim += cmp["ssim"]
    if not all_rho:
        raise ExplainError("randomisation_check: the method returned no maps")
    mean_rho = float(np.mean(all_rho))
    return {
        "method": method if isinstance(method, str) else getattr(method, "__name__", "callable"),
        "layer": layer,
        "threshold": float(threshold),
        "spearman": mean_rho,
        "ssim": float(np.mean(all_ssim)),
        "passed": bool(mean_rho < threshold),
        "sides": sides,
    }


__all__ = ["insertion_deletion", "faithfulness", "default_background", "model_inputs", "padding_share",
           "ESTIMATE_STEPS", "FULL_STEPS", "DIRECTION", "RANDOM_MARGIN", "PADDING_WARNING", "pointing_game",
           "random_maps", "randomisation_check", "compare_maps", "randomise_layer", "explained_module",
           "transform_boxes", "box_mask", "thresholds", "pixel_counts", "normalise_curves", "trapezoid_auc"]
