"""Training SANE's attribute predictor on frozen, cached features (methods.md 4.2, 4.3, 7.3).

Pipeline (:func:`train_predictor`; :func:`train_for_index` wires it to an index folder):

1. **Features, once.** F(x) of the model's explained layer for every gallery image, computed in inference mode and
   cached as ``features.npy`` (float16, (N, C, h, w)) with ``features.json`` (model record, item ids, file
   fingerprints). A second training (other epochs, without L_heat, ...) reads the cache: the head then trains on
   CPU in minutes for thousands of images, because only a 3x3 conv on a 7x7 map is learnt.
2. **Saliency, for a subset.** For up to ``heat_images`` training images, saliency maps of the image w.r.t. its
   ``heat_refs`` nearest gallery neighbours (the matches a user would ask about; SANE uses up to 20 random
   positives, methods.md 4.2), from the first-order engine (:func:`simx.explain.explain`, RISE by default with a
   modest ``n_samples``; any registered method can be chosen). Maps are area-resized to the feature grid and
   cached in ``saliency.npy`` / ``saliency.json``. Images without maps contribute only L_cls, exactly as SANE's
   "mean over valid maps".
3. **Training.** Split by a hash of the item id (stable when the gallery grows): train / validation (best epoch)
   / test (reported mAP). Loss (methods.md 4.3, with two stated changes)::

       L = L_cls + heat_weight * L_heat
       L_cls  = BCEWithLogits(score, y, pos_weight = n_neg / n_pos per attribute)     (class-balanced)
       L_heat = mean over valid maps j of (1 - max_{a in G(x)} m_a(S_j))
       m_a(S) = 1 - || P_a - G ||_2 / (|| P_a ||_2 + || G ||_2),  P_a = softmax(z(H_a)), G = softmax(z(S))

   L_cls replaces SANE's SmoothL1 on an attribute softmax so that c_a = sigmoid(score_a), the confidence SANE's
   ranking uses (4.4 notes the mismatch), is what is trained; the max in L_heat runs over the ground-truth
   attributes only (-inf mask, the exact form 4.3 recommends); both maps are z-scored before the softmax (the
   flat-softmax pitfall of 4.4) and the distance is normalised by its bound (see
   :func:`simx.attributes.predictor.match_scores`), the same measure the ranking uses. Adam, lr ``lr * lr_decay^epoch`` (SANE: 5e-4, 0.985), best epoch by
   validation mAP.
4. **Metrics** (methods.md 7.3): mAP = mean over attributes with at least one positive test image of
   sklearn's average_precision_score; the chance level (mean prevalence) is recorded beside it. Per-attribute
   decision thresholds maximise F1 on the validation split (0.5 where it has no positive).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data import Item, file_fingerprint, load_image
from ..errors import ImageLoadError, SimxError
from ..models import SimModel
from ..attributes.predictor import (AttributeHead, AttributePredictor, PredictorError, _json_default, match_scores, model_record,
                        resize_maps)
from ..attributes.store import attributes_dir, predictor_dir
from ..attributes.vocab import EmptyVocabularyError, Vocabulary, vocabulary_from_items

#: Version of the feature / saliency cache files.
CACHE_FORMAT = 1
FEATURES_FILE = "features.npy"
SALIENCY_FILE = "saliency.npy"
#: Sub-folders of ``INDEX/attributes/`` holding the two predictors.
#: RISE parameters used for saliency supervision unless others are given (methods.md 4.2 uses N = 2000).
DEFAULT_SALIENCY_PARAMS: dict[str, dict[str, Any]] = {"rise": {"n_samples": 128}}


@dataclass
class TrainConfig:
    """Everything that shapes a training run (recorded in ``predictor.json``)."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    lr_decay: float = 0.985
    weight_decay: float = 1e-4
    heat: bool = True
    heat_weight: float = 1.0
    saliency: str = "rise"
    saliency_params: dict[str, Any] = field(default_factory=dict)
    heat_images: int = 160
    heat_refs: int = 3
    temperature: float = 1.0
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    min_count: int = 2
    max_pos_weight: float = 50.0
    seed: int = 0

    def saliency_kwargs(self) -> dict[str, Any]:
        return {**DEFAULT_SALIENCY_PARAMS.get(self.saliency, {}), **self.saliency_params}


@dataclass
class TrainResult:
    """A trained predictor and where it lives."""

    predictor: AttributePredictor
    path: Path | None
    seconds: float

    @property
    def metrics(self) -> dict[str, Any]:
        return self.predictor.metrics


# --------------------------------------------------------------------------------------------- splits


def split_items(ids: Sequence[str], val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """'train' / 'val' / 'test' per id from a hash of (seed, id): stable under gallery growth, no shuffling state.
    Every split gets at least one id when there are three or more."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise SimxError("val_fraction and test_fraction must be in [0, 1) and sum to less than 1")
    u = np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(), "little") / 2**64
                  for i in ids])
    out = np.where(u < test_fraction, "test", np.where(u < test_fraction + val_fraction, "val", "train")).astype(object)
    n = len(ids)
    if n >= 3:
        order = np.argsort(u)
        for name, pick in (("test", order[0]), ("val", order[1]), ("train", order[-1])):
            if not (out == name).any():
                out[pick] = name
    return out


# --------------------------------------------------------------------------------------------- caches


def _progress(iterable: Any, total: int | None, desc: str, enabled: bool) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img" if "featur" in desc or "salien" in desc else "it",
                leave=False, dynamic_ncols=True)


def _fingerprints(items: Sequence[Item]) -> list[str | None]:
    out: list[str | None] = []
    for it in items:
        try:
            out.append(file_fingerprint(it.path))
        except OSError:
            out.append(None)
    return out


def _load_input(model: SimModel, item: Item) -> torch.Tensor | None:
    try:
        return model.preprocess(load_image(item.path))
    except ImageLoadError:
        return None


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, default=_json_default), encoding="utf-8")
    os.replace(tmp, path)


def compute_features(model: SimModel, items: Sequence[Item], cache_dir: str | os.PathLike | None = None,
                     batch_size: int = 32, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Explained-layer features of every item, (N, C, h, w) float16, and a validity mask (N,) (False where the
    image could not be read). With ``cache_dir`` the result is stored as ``features.npy`` + ``features.json`` and
    reused while the model record, the item ids and the file fingerprints are unchanged."""
    rec = model_record(model)
    ids = [it.id for it in items]
    prints = _fingerprints(items)
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        meta_path, arr_path = cache / "features.json", cache / FEATURES_FILE
        if meta_path.is_file() and arr_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                if (meta.get("format") == CACHE_FORMAT and meta.get("model") == json.loads(json.dumps(rec))
                        and meta.get("ids") == ids and meta.get("fingerprints") == prints):
                    return np.load(arr_path, mmap_mode="r"), np.asarray(meta["valid"], dtype=bool)
            except (json.JSONDecodeError, ValueError, KeyError):
                pass
    if not model.has_features:
        raise PredictorError(f"model {model.spec!r} exposes no spatial feature map; SANE's attribute head needs one")
    with torch.inference_mode():
        probe = model.features(torch.zeros(1, 3, *model.input_size, device=model.device))
    shape = (len(items), *probe.shape[1:])
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp_arr = cache / (FEATURES_FILE + ".tmp.npy")
        feats = np.lib.format.open_memmap(tmp_arr, mode="w+", dtype=np.float16, shape=shape)
    else:
        feats = np.zeros(shape, dtype=np.float16)
    valid = np.zeros(len(items), dtype=bool)
    bar = _progress(None, len(items), "features", progress) if progress else None
    for start in range(0, len(items), batch_size):
        chunk = list(range(start, min(start + batch_size, len(items))))
        xs = [(i, _load_input(model, items[i])) for i in chunk]
        good = [(i, x) for i, x in xs if x is not None]
        if good:
            x = torch.stack([g[1] for g in good]).to(model.device)
            if model.device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), model.autocast():
                f = model.features(x).float().cpu().numpy()
            for (i, _), fi in zip(good, f):
                feats[i] = fi.astype(np.float16)
                valid[i] = True
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    if cache is not None:
        feats.flush()  # type: ignore[union-attr]
        del feats
        os.replace(cache / (FEATURES_FILE + ".tmp.npy"), cache / FEATURES_FILE)
        _write_json(cache / "features.json", {"format": CACHE_FORMAT, "model": rec, "ids": ids, "fingerprints": prints,
                                              "valid": valid.tolist(), "shape": list(shape), "dtype": "float16"})
        return np.load(cache / FEATURES_FILE, mmap_mode="r"), valid
    return feats, valid


def nearest_references(embeddings: np.ndarray, rows: Sequence[int], k: int, allowed: np.ndarray | None = None,
                       metric: str = "cosine") -> list[list[int]]:
    """The ``k`` most similar gallery rows of each row in ``rows`` (itself excluded; only ``allowed`` rows)."""
    e = torch.from_numpy(np.array(embeddings, dtype=np.float32))
    if metric == "cosine":
        e = F.normalize(e, dim=1)
    q = e[list(rows)]
    sims = -torch.cdist(q, e).pow(2) if metric == "l2" else q @ e.T
    if allowed is not None:
        sims[:, ~torch.as_tensor(allowed)] = -float("inf")
    sims[torch.arange(len(rows)), torch.as_tensor(list(rows))] = -float("inf")
    kk = min(k, e.shape[0] - 1)
    top = torch.topk(sims, kk, dim=1)
    return [[int(j) for j, s in zip(ti, si) if np.isfinite(float(s))] for ti, si in zip(top.indices, top.values)]


def compute_saliency(model: SimModel, items: Sequence[Item], queries: Sequence[int], refs: Sequence[Sequence[int]],
                     feature_hw: tuple[int, int], method: str = "rise", params: dict[str, Any] | None = None,
                     seed: int = 0, cache_dir: str | os.PathLike | None = None,
                     progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Saliency maps S_j of each query image w.r.t. each of its references, from :func:`simx.explain.explain`
    (query side, fixed reference), area-resized to the feature grid: ((M, R, h, w) float32, valid (M, R)).

    Cached per query in ``saliency.npy`` / ``saliency.json`` keyed by method, parameters, seed, model, the
    query's and references' ids and file fingerprints; only missing entries are computed."""
    from ..explain import explain

    params = dict(params or {})
    r = max((len(x) for x in refs), default=0)
    h, w = feature_hw
    maps = np.zeros((len(queries), r, h, w), dtype=np.float32)
    valid = np.zeros((len(queries), r), dtype=bool)
    rec = json.loads(json.dumps(model_record(model)))
    key_base = {"method": method, "params": json.loads(json.dumps(params, default=str)), "seed": int(seed),
                "model": rec, "hw": [h, w]}
    prints = {}

    def fp(i: int) -> str | None:
        if i not in prints:
            try:
                prints[i] = file_fingerprint(items[i].path)
            except OSError:
                prints[i] = None
        return prints[i]

    def entry_key(q: int, rs: Sequence[int]) -> str:
        return json.dumps([items[q].id, fp(q), [[items[j].id, fp(j)] for j in rs]])

    old: dict[str, np.ndarray] = {}
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None and (cache / "saliency.json").is_file() and (cache / SALIENCY_FILE).is_file():
        try:
            meta = json.loads((cache / "saliency.json").read_text(encoding="utf-8"))
            if meta.get("format") == CACHE_FORMAT and meta.get("key") == key_base:
                arr = np.load(cache / SALIENCY_FILE)
                for n, ek in enumerate(meta["entries"]):
                    old[ek] = arr[n]
        except (json.JSONDecodeError, ValueError, KeyError, OSError):
            old = {}
    todo = []
    for m, (q, rs) in enumerate(zip(queries, refs)):
        ek = entry_key(q, rs)
        if ek in old and old[ek].shape[0] >= len(rs):
            maps[m, : len(rs)] = old[ek][: len(rs)]
            valid[m, : len(rs)] = np.isfinite(old[ek][: len(rs)]).all(axis=(1, 2))
        else:
            todo.append(m)
    bar = _progress(None, len(todo), f"saliency ({method})", progress) if progress and todo else None

    def flush() -> None:
        """Write every entry known so far (the computed ones and the old ones still valid), so an interrupted
        run resumes where it stopped."""
        if cache is None:
            return
        cache.mkdir(parents=True, exist_ok=True)
        store = np.where(valid[..., None, None], maps, np.nan).astype(np.float32)
        keys = [entry_key(q, rs) for q, rs in zip(queries, refs)]
        done = [n for n in range(len(queries)) if n not in pending]
        extra = [k for k in old if k not in set(keys)]
        arr = np.concatenate([store[done]] + [old[k][None, :r] if old[k].shape[0] >= r else
                                              np.pad(old[k], ((0, r - old[k].shape[0]), (0, 0), (0, 0)),
                                                     constant_values=np.nan)[None] for k in extra]) \
            if done or extra else np.zeros((0, r, h, w), np.float32)
        tmp = cache / (SALIENCY_FILE + ".tmp.npy")
        np.save(tmp, arr.astype(np.float32))
        os.replace(tmp, cache / SALIENCY_FILE)
        _write_json(cache / "saliency.json", {"format": CACHE_FORMAT, "key": key_base,
                                              "entries": [keys[n] for n in done] + extra})

    pending = set(todo)
    for count, m in enumerate(todo, 1):
        q, rs = queries[m], list(refs[m])
        xq = _load_input(model, items[q])
        xr = [(j, _load_input(model, items[j])) for j in rs]
        good = [(n, x) for n, (j, x) in enumerate(xr) if x is not None]
        if xq is not None and good:
            exp = explain(model, xq, torch.stack([g[1] for g in good]), method=method, side="query", seed=seed,
                          **params)
            sal = exp.query_maps if exp.query_maps is not None else exp.query_feature_maps
            small = resize_maps(np.asarray(sal, dtype=np.float32), (h, w)).numpy()
            for (n, _), s in zip(good, small):
                if np.isfinite(s).all() and float(s.std()) > 0:
                    maps[m, n] = s
                    valid[m, n] = True
        pending.discard(m)
        if count % 10 == 0 and count < len(todo):
            flush()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if todo:
        flush()
    return maps, valid


# --------------------------------------------------------------------------------------------- metrics


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision of one attribute, sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds (the
    step-wise definition of sklearn's ``average_precision_score``, without importing sklearn)."""
    y = np.asarray(y).astype(bool)
    npos = int(y.sum())
    if npos == 0:
        return float("nan")
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="mergesort")
    s, t = np.asarray(score, dtype=np.float64)[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # last index of each distinct score
    tp = np.cumsum(t)[last]
    precision = tp / (last + 1)
    recall = tp / npos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(targets: np.ndarray, scores: np.ndarray, names: Sequence[str] | None = None
                           ) -> tuple[float, dict[str, float], float]:
    """(mAP, per-attribute AP, chance mAP) over attributes with at least one positive (methods.md 7.3: the mean of
    average_precision_score over attributes with a positive). Chance = mean prevalence of those attributes, the
    expected AP of a random ranking."""
    aps: dict[str, float] = {}
    prev = []
    for a in range(targets.shape[1]):
        col = targets[:, a]
        if col.sum() == 0:
            continue
        key = names[a] if names is not None else str(a)
        aps[key] = average_precision(col, scores[:, a])
        prev.append(float(np.mean(col > 0)))
    if not aps:
        return float("nan"), {}, float("nan")
    return float(np.mean(list(aps.values()))), aps, float(np.mean(prev))


def f1_thresholds(targets: np.ndarray, probs: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per attribute, the probability threshold maximising F1 on (targets, probs); ``default`` without positives."""
    out = np.full(targets.shape[1], default, dtype=np.float32)
    for a in range(targets.shape[1]):
        y, p = targets[:, a].astype(bool), probs[:, a]
        if y.sum() == 0 or y.all():
            continue
        cands = np.unique(p)
        best, best_t = -1.0, default
        for t in cands:
            pred = p >= t
            tp = float((pred & y).sum())
            f1 = 2 * tp / max(float(pred.sum() + y.sum()), 1e-9)
            if f1 > best:
                best, best_t = f1, float(t)
        out[a] = best_t
    return out


# --------------------------------------------------------------------------------------------- training


def heat_loss(maps: torch.Tensor, saliency: torch.Tensor, valid: torch.Tensor, targets: torch.Tensor,
              temperature: float = 1.0) -> torch.Tensor:
    """L_heat (methods.md 4.3): mean over valid maps j of 1 - max_{a in G(x)} m_a(S_j), with the matching m of
    :func:`~simx.attributes.predictor.match_scores` (the measure the ranking uses, 4.4).

    ``maps`` (B, A, h, w) AAMs, ``saliency`` (B, R, h, w), ``valid`` (B, R) bool, ``targets`` (B, A) 0/1.
    The max runs over ground-truth attributes only (-inf mask); rows without any ground truth are ignored."""
    match = match_scores(maps, saliency, temperature)  # (B, R, A)
    gt = targets.bool().unsqueeze(1).expand_as(match)
    best = match.masked_fill(~gt, -float("inf")).amax(dim=-1)  # (B, R)
    ok = valid & targets.bool().any(dim=1, keepdim=True) & torch.isfinite(best)
    if not ok.any():
        return maps.sum() * 0.0
    return (1.0 - best[ok]).mean()


def _scores(head: AttributeHead, feats: np.ndarray, rows: np.ndarray, batch: int = 256) -> np.ndarray:
    out = []
    head.eval()
    with torch.no_grad():
        for s in range(0, len(rows), batch):
            f = torch.from_numpy(np.asarray(feats[rows[s : s + batch]], dtype=np.float32))
            out.append(torch.sigmoid(head(f)[1]).numpy())
    return np.concatenate(out) if out else np.zeros((0, head.conv.out_channels), np.float32)


def train_predictor(model: SimModel, items: Sequence[Item], out_dir: str | os.PathLike | None = None,
                    config: TrainConfig | None = None, vocabulary: Vocabulary | None = None,
                    embeddings: np.ndarray | None = None, cache_dir: str | os.PathLike | None = None,
                    progress: bool = True) -> TrainResult:
    """Train SANE's attribute head for ``model`` on the gallery ``items`` (see the module docstring).

    ``vocabulary`` defaults to the gallery's own (:func:`vocabulary_from_items` with ``config.min_count``);
    ``embeddings`` (N, D) pick each heat image's nearest references (computed from the cached features when
    absent); ``cache_dir`` holds the feature and saliency caches; ``out_dir`` receives the predictor.
    """
    cfg = config or TrainConfig()
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    items = list(items)
    if len(items) < 3:
        raise EmptyVocabularyError(f"need at least 3 gallery images to train and validate, got {len(items)}")
    vocab_full = vocabulary or vocabulary_from_items(items, min_count=cfg.min_count)
    feats, valid = compute_features(model, items, cache_dir, progress=progress)
    y_all = vocab_full.targets(items)
    split = split_items([it.id for it in items], cfg.val_fraction, cfg.test_fraction, cfg.seed)
    usable = valid & (y_all.sum(1) > 0)  # SANE trains on items with at least one attribute (methods.md 4.3)
    tr = np.flatnonzero(usable & (split == "train"))
    va = np.flatnonzero(usable & (split == "val"))
    te = np.flatnonzero(usable & (split == "test"))
    if len(tr) == 0 or len(va) == 0:
        raise EmptyVocabularyError(f"not enough annotated images to train: {len(tr)} train, {len(va)} validation "
                                   f"(of {len(items)} images, {int(usable.sum())} readable with an attribute)")
    pos = y_all[tr].sum(0)
    keep = np.flatnonzero((pos > 0) & (pos < len(tr)))
    if len(keep) == 0:
        raise EmptyVocabularyError("no attribute has both positive and negative training images")
    vocab = Vocabulary(names=[vocab_full.names[a] for a in keep], source=vocab_full.source,
                       counts=[int(vocab_full.counts[a]) for a in keep], members=vocab_full.members,
                       description=vocab_full.description)
    y = y_all[:, keep].astype(np.float32)
    c = int(feats.shape[1])
    hw = (int(feats.shape[2]), int(feats.shape[3]))

    # feature standardisation from the training split
    s1 = np.zeros(c, np.float64)
    s2 = np.zeros(c, np.float64)
    for s in range(0, len(tr), 256):
        f = np.asarray(feats[tr[s : s + 256]], dtype=np.float64)
        s1 += f.sum(axis=(0, 2, 3))
        s2 += (f**2).sum(axis=(0, 2, 3))
    n = len(tr) * hw[0] * hw[1]
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 1e-12))
    head = AttributeHead(c, len(vocab))
    with torch.no_grad():
        head.feat_mean.copy_(torch.from_numpy(mean).float())
        head.feat_std.copy_(torch.from_numpy(np.maximum(std, 1e-3 * std.mean() + 1e-6)).float())

    # saliency supervision
    heat_rows = np.zeros(0, dtype=np.int64)
    sal = np.zeros((0, 0, *hw), np.float32)
    sal_ok = np.zeros((0, 0), bool)
    sal_info: dict[str, Any] = {}
    if cfg.heat and cfg.heat_weight > 0 and cfg.heat_images > 0:
        heat_rows = np.sort(rng.permutation(tr)[: cfg.heat_images])
        if embeddings is None:
            with torch.inference_mode():
                emb = []
                for s in range(0, len(items), 128):
                    f = torch.from_numpy(np.asarray(feats[s : s + 128], dtype=np.float32)).to(model.device)
                    emb.append(model.head(f).float().cpu())
            embeddings = torch.cat(emb).numpy()
        refs = nearest_references(np.asarray(embeddings), heat_rows, cfg.heat_refs, allowed=valid,
                                  metric=model.metric)
        sal, sal_ok = compute_saliency(model, items, list(heat_rows), refs, hw, cfg.saliency, cfg.saliency_kwargs(),
                                       cfg.seed, cache_dir, progress)
        sal_info = {"images": int(len(heat_rows)), "maps": int(sal_ok.sum()), "method": cfg.saliency,
                    "params": cfg.saliency_kwargs(), "refs": int(cfg.heat_refs)}
    heat_index = {int(r): n for n, r in enumerate(heat_rows)}

    pos_weight = torch.from_numpy(np.clip((len(tr) - pos[keep]) / np.maximum(pos[keep], 1), 1.0,
                                          cfg.max_pos_weight)).float()
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: cfg.lr_decay**e)
    # small galleries: at least ~8 optimiser steps per epoch
    batch = int(min(cfg.batch_size, max(16, -(-len(tr) // 8))))
    feats_tr = torch.from_numpy(np.asarray(feats[tr], dtype=np.float16))
    y_tr = torch.from_numpy(y[tr])
    best_map, best_state, best_epoch = -1.0, copy.deepcopy(head.state_dict()), -1
    history = []
    bar = _progress(range(cfg.epochs), cfg.epochs, "train" + (" (L_heat)" if len(heat_rows) else ""), progress)
    for epoch in bar:
        head.train()
        order = torch.from_numpy(rng.permutation(len(tr)))
        tot_cls = tot_heat = 0.0
        nb = 0
        for s in range(0, len(tr), batch):
            b = order[s : s + batch]
            f = feats_tr[b].float()
            maps, scores = head(f)
            loss_cls = F.binary_cross_entropy_with_logits(scores, y_tr[b], pos_weight=pos_weight)
            loss = loss_cls
            lh = torch.zeros(())
            if len(heat_rows):
                rows = tr[b.numpy()]
                sel = [n for n, r in enumerate(rows) if int(r) in heat_index]
                if sel:
                    hidx = [heat_index[int(rows[n])] for n in sel]
                    lh = heat_loss(maps[sel], torch.from_numpy(sal[hidx]), torch.from_numpy(sal_ok[hidx]),
                                   y_tr[b][sel], cfg.temperature)
                    loss = loss + cfg.heat_weight * lh
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot_cls += float(loss_cls.detach())
            tot_heat += float(lh.detach())
            nb += 1
        sched.step()
        probs_va = _scores(head, feats, va)
        val_map, _, _ = mean_average_precision(y[va], probs_va)
        history.append({"epoch": epoch, "loss_cls": tot_cls / max(nb, 1), "loss_heat": tot_heat / max(nb, 1),
                        "val_map": val_map})
        if np.isfinite(val_map) and val_map > best_map:
            best_map, best_state, best_epoch = val_map, copy.deepcopy(head.state_dict()), epoch
        if progress and hasattr(bar, "set_postfix"):
            bar.set_postfix(cls=f"{tot_cls / max(nb, 1):.3f}", heat=f"{tot_heat / max(nb, 1):.3f}",
                            val_mAP=f"{val_map:.3f}")
    head.load_state_dict(best_state)
    head.eval()
    probs_va = _scores(head, feats, va)
    thresholds = f1_thresholds(y[va], probs_va)
    val_map, _, val_chance = mean_average_precision(y[va], probs_va)
    metrics: dict[str, Any] = {"val_map": val_map, "val_chance_map": val_chance, "best_epoch": best_epoch,
                               "n_train": int(len(tr)), "n_val": int(len(va)), "n_test": int(len(te)),
                               "history": history}
    if len(te):
        probs_te = _scores(head, feats, te)
        test_map, test_aps, test_chance = mean_average_precision(y[te], probs_te, vocab.names)
        metrics.update({"test_map": test_map, "test_chance_map": test_chance, "test_ap": test_aps})
    if len(heat_rows):
        with torch.no_grad():
            hr = np.asarray(heat_rows)
            maps_h, _ = head(torch.from_numpy(np.asarray(feats[hr], dtype=np.float32)))
            metrics["heat_loss_final"] = float(heat_loss(maps_h, torch.from_numpy(sal), torch.from_numpy(sal_ok),
                                                         torch.from_numpy(y[hr]), cfg.temperature))
    seconds = time.perf_counter() - t0
    metrics["seconds"] = round(seconds, 2)
    training = {**asdict(cfg), "heat": bool(len(heat_rows)), "saliency_info": sal_info, "effective_batch_size": batch,
                "split": {"train": int((split == "train").sum()), "val": int((split == "val").sum()),
                          "test": int((split == "test").sum())}, "feature_hw": list(hw),
                "n_images": len(items)}
    pred = AttributePredictor(head, vocab, model_record(model), thresholds, metrics, training)
    path = pred.save(out_dir) if out_dir is not None else None
    return TrainResult(pred, path, seconds)


# --------------------------------------------------------------------------------------------- indexes


def train_for_index(index: Any, config: TrainConfig | None = None, progress: bool = True,
                    vocabulary: Vocabulary | None = None) -> TrainResult:
    """Train on an opened index (:func:`simx.index.open_index`): its model, items and embeddings; caches and the
    predictor go to ``INDEX/attributes/`` (``predictor/`` with L_heat, ``predictor-no-heat/`` without)."""
    cfg = config or TrainConfig()
    return train_predictor(index.model, index.items, predictor_dir(index, cfg.heat), cfg, vocabulary=vocabulary,
                           embeddings=np.asarray(index.embeddings), cache_dir=attributes_dir(index),
                           progress=progress)


def compare_heat(index: Any, config: TrainConfig | None = None, retrain: bool = False,
                 progress: bool = True) -> dict[str, Any]:
    """Attribute mAP (methods.md 7.3) with and without saliency supervision on the same split, training either
    predictor that is missing (or both with ``retrain``). Returns {"heat": metrics, "no_heat": metrics}."""
    cfg = config or TrainConfig()
    out: dict[str, Any] = {}
    for heat in (True, False):
        folder = predictor_dir(index, heat)
        pred = None
        if not retrain and (folder / "predictor.json").is_file():
            try:
                pred = AttributePredictor.load(folder)
                pred.check_model(index.model)
            except PredictorError:
                pred = None
        if pred is None:
            pred = train_for_index(index, TrainConfig(**{**asdict(cfg), "heat": heat}), progress).predictor
        out["heat" if heat else "no_heat"] = {**pred.metrics, "path": str(folder),
                                              "saliency": pred.training.get("saliency_info", {})}
    return out
