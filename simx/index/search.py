"""Opening an index folder and searching it.

:func:`open_index` checks the folder (format version, files, row counts) and returns an :class:`Index`: the
manifest as :class:`~simx.data.Item` objects, the stored embeddings (memory-mapped), the FAISS index and, loaded
on first use, the model that built it. Every search returns, per query, a list of :class:`Hit` ranked by score,
where a higher score is always more similar: the cosine or inner product for ``cosine``/``ip`` indexes, minus the
squared Euclidean distance for ``l2`` indexes (the same convention as :meth:`SimModel.similarity`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

from ..data import Item, load_image, records_to_items
from ..errors import ModelMismatchError, SimxError, SimxIndexError
from .layout import (EMBEDDINGS_FILE, INDEX_FILE, MANIFEST_FILE, _OLD_RE, check_name, index_root, read_meta,
                     recover)

if TYPE_CHECKING:  # the models (and torch) load only when an index needs its model: listing and reading do not
    from ..models import SimModel


@dataclass(frozen=True)
class Hit:
    """One neighbour: gallery id, image path, label, score (higher = more similar) and 1-based rank."""

    id: str
    path: str
    label: str | None
    score: float
    rank: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _normalised_json(obj: Any) -> Any:
    """Tuples become lists, as after a JSON round trip, so stored and live records compare equal."""
    return json.loads(json.dumps(obj, default=str))


def model_differences(meta: dict[str, Any], model: SimModel) -> list[str]:
    """What differs between the model recorded in ``meta`` and ``model`` (empty when they match).

    Compared: spec, layer, metric, embedding dimension and every preprocessing field.
    """
    stored = meta.get("model", {})
    info = model.info()
    diffs = []
    for key in ("spec", "layer", "metric", "dim"):
        if stored.get(key) != getattr(info, key):
            diffs.append(f"{key}: index has {stored.get(key)!r}, model has {getattr(info, key)!r}")
    a = _normalised_json(stored.get("preprocessing", {}))
    b = _normalised_json(info.preprocessing)
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            diffs.append(f"preprocessing.{key}: index has {a.get(key)!r}, model has {b.get(key)!r}")
    return diffs


def _is_image_like(q: Any) -> bool:
    return isinstance(q, (Image.Image, str, os.PathLike, bytes, bytearray))


class Index:
    """An opened index folder (see :func:`open_index`; do not construct directly).

    Attributes: ``path`` (the folder), ``name``, ``meta`` (``meta.json`` as a dict), ``items`` (list of
    :class:`~simx.data.Item`, row i = FAISS id i), ``ids``, ``fingerprints``, ``embeddings`` (float32 (N, D),
    memory-mapped, normalised as the metric wants), ``faiss_index``, and ``model`` (loaded lazily).
    """

    def __init__(self, path: Path, meta: dict[str, Any], items: list[Item], fingerprints: list[str | None],
                 embeddings: np.ndarray, faiss_index: Any, model: SimModel | None = None):
        self.path = path
        self.meta = meta
        self.items = items
        self.fingerprints = fingerprints
        self.embeddings = embeddings
        self.faiss_index = faiss_index
        self.ids = [it.id for it in items]
        self._pos = {item_id: i for i, item_id in enumerate(self.ids)}
        self._model = model

    # -- basic facts -----------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def metric(self) -> str:
        return str(self.meta["model"]["metric"])

    @property
    def dim(self) -> int:
        return int(self.meta["model"]["dim"])

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: object) -> bool:
        """Whether ``item_id`` is a gallery id of this index."""
        return item_id in self._pos

    def __repr__(self) -> str:
        return f"Index({self.name!r}, n={len(self)}, model={self.meta['model']['spec']!r}, metric={self.metric!r})"

    def position(self, item_id: str) -> int:
        """Row of ``item_id`` in the manifest, embeddings and FAISS index."""
        try:
            return self._pos[item_id]
        except KeyError:
            raise SimxError(f"no item with id {item_id!r} in index {self.name!r}") from None

    def item(self, item_id: str) -> Item:
        """The gallery item with this id."""
        return self.items[self.position(item_id)]

    @property
    def model(self) -> SimModel:
        """The model that built the index, loaded on first use with the recorded spec, layer, metric and
        preprocessing; :class:`ModelMismatchError` if what loads today does not match the record."""
        if self._model is None:
            m = self.meta["model"]
            from ..models import load_model

            model = load_model(m["spec"], layer=m["layer"], metric=m["metric"], preprocessing=m["preprocessing"])
            check_model(self, model)
            self._model = model
        return self._model

    # -- queries ---------------------------------------------------------------------------------------------
    def query_vectors(self, queries: Any) -> np.ndarray:
        """Queries -> float32 (N, D) vectors normalised like the gallery.

        ``queries``: a vector (D,), a matrix (N, D) (numpy or torch; raw model embeddings are fine, cosine indexes
        L2-normalise them), or one image / a list of images (PIL images, file paths or encoded bytes), which are
        embedded with :attr:`model` exactly as the build embedded the gallery.
        """
        if _is_image_like(queries):
            queries = [queries]
        if isinstance(queries, (list, tuple)) and queries and all(_is_image_like(q) for q in queries):
            return self._embed_images(list(queries))
        if hasattr(queries, "detach"):
            queries = queries.detach().float().cpu().numpy()
        vecs = np.asarray(queries, dtype=np.float32)
        if vecs.ndim == 1:
            vecs = vecs[None, :]
        if vecs.ndim != 2 or vecs.shape[1] != self.dim:
            raise SimxError(f"query vectors must have shape (N, {self.dim}) for index {self.name!r}, "
                            f"got {tuple(vecs.shape)}")
        if self.metric == "cosine":
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            vecs = vecs / np.maximum(norms, 1e-12)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def _embed_images(self, images: list[Any]) -> np.ndarray:
        import torch

        from .embed import forward, prepare_model

        model = prepare_model(self.model)
        tensors = [model.preprocessing.to_tensor(load_image(im)) for im in images]
        return forward(model, torch.stack(tensors))

    @property
    def rerank(self) -> int:
        """Candidates fetched per wanted neighbour and re-scored with the exact stored embeddings (1 = none).

        Set at build time for indexes whose scores are approximate (product or scalar quantisation): FAISS
        returns ``rerank * k`` candidates, the exact similarities reorder them, and every reported score is exact.
        """
        return int(self.meta.get("faiss", {}).get("rerank", 1))

    def search_positions(self, vectors: np.ndarray, k: int,
                         exclude: Sequence[int | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw search on normalised vectors: ``(positions (N, k), scores (N, k))``, position -1 where fewer than
        ``k`` neighbours exist. ``exclude[i]`` is a row to drop from query i's results (its own copy)."""
        n = len(self)
        k = max(0, min(int(k), n - (1 if exclude is not None else 0)))
        nq = vectors.shape[0]
        pos_out = np.full((nq, k), -1, dtype=np.int64)
        score_out = np.full((nq, k), -np.inf, dtype=np.float32)
        if k == 0 or nq == 0:
            return pos_out, score_out
        extra = 1 if exclude is not None and any(e is not None for e in exclude) else 0
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        fetch = min(n, (k + extra) * self.rerank)
        scores, pos = self.faiss_index.search(vectors, fetch)
        if self.rerank > 1:
            scores, pos = exact_rescore(vectors, pos, self.embeddings, self.metric)
        elif self.metric == "l2":
            scores = -scores  # squared distance -> similarity
        for i in range(nq):
            drop = exclude[i] if exclude is not None else None
            keep = (pos[i] >= 0) & (pos[i] != (-2 if drop is None else drop))
            p, sc = pos[i][keep][:k], scores[i][keep][:k]
            pos_out[i, : len(p)] = p
            score_out[i, : len(sc)] = sc
        return pos_out, score_out

    def search(self, queries: Any, k: int = 10, exclude_self_ids: Sequence[str | None] | None = None) -> list[list[Hit]]:
        """The ``k`` nearest gallery items of each query (see :meth:`query_vectors` for accepted queries).

        ``exclude_self_ids[i]``: a gallery id removed from query i's results (the query itself). Returns one list
        of :class:`Hit` per query, best first.
        """
        vecs = self.query_vectors(queries)
        exclude = None
        if exclude_self_ids is not None:
            if len(exclude_self_ids) != vecs.shape[0]:
                raise SimxError(f"exclude_self_ids has {len(exclude_self_ids)} entries for {vecs.shape[0]} queries")
            exclude = [None if i is None else self.position(i) for i in exclude_self_ids]
        positions, scores = self.search_positions(vecs, k, exclude)
        return [[self._hit(int(p), float(s), r + 1) for r, (p, s) in enumerate(zip(prow, srow)) if p >= 0]
                for prow, srow in zip(positions, scores)]

    def search_id(self, item_id: str, k: int = 10) -> list[Hit]:
        """Neighbours of a gallery item (its stored embedding; the item itself is excluded)."""
        row = self.position(item_id)
        return self.search(np.asarray(self.embeddings[row])[None, :], k, exclude_self_ids=[item_id])[0]

    def search_image(self, image: Image.Image | str | os.PathLike | bytes, k: int = 10) -> list[Hit]:
        """Neighbours of an image (PIL image, path or encoded bytes), embedded with the index's model."""
        return self.search([image], k)[0]

    def text_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (N, D) query vectors from the index model's text tower (CLIP-style models only)."""
        return self.query_vectors(self.model.embed_texts(list(texts)))

    def search_text(self, text: str, k: int = 10) -> list[Hit]:
        """Neighbours of a text query (``"a red double-decker bus"``), for indexes built with a CLIP-style model."""
        return self.search(self.text_vectors([text]), k)[0]

    def _hit(self, pos: int, score: float, rank: int) -> Hit:
        it = self.items[pos]
        return Hit(id=it.id, path=it.path, label=it.label, score=score, rank=rank)


def exact_rescore(vectors: np.ndarray, positions: np.ndarray, embeddings: np.ndarray, metric: str,
                  chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Exact similarities (higher = more similar) of each query with its candidate rows of ``embeddings``, and the
    candidates re-sorted by them; position -1 (no candidate) stays last with score -inf."""
    scores = np.full(positions.shape, -np.inf, dtype=np.float32)
    for s in range(0, len(vectors), chunk):
        pos = positions[s : s + chunk]
        valid = pos >= 0
        cand = np.asarray(embeddings[np.where(valid, pos, 0).ravel()], dtype=np.float32)
        cand = cand.reshape(pos.shape[0], pos.shape[1], -1)
        q = vectors[s : s + chunk]
        sim = np.einsum("qcd,qd->qc", cand, q)
        if metric == "l2":  # -||c - q||^2 = 2 c.q - ||c||^2 - ||q||^2
            sim = 2 * sim - np.einsum("qcd,qcd->qc", cand, cand) - np.einsum("qd,qd->q", q, q)[:, None]
        scores[s : s + chunk] = np.where(valid, sim, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(positions, order, axis=1)


def check_model(index: Index, model: SimModel) -> None:
    """Raise :class:`ModelMismatchError` naming every difference between ``model`` and the index's record."""
    diffs = model_differences(index.meta, model)
    if diffs:
        raise ModelMismatchError(f"index {index.name!r} ({index.path}) was built with a different model: "
                                 + "; ".join(diffs))


def _resolve_folder(name: str | os.PathLike, root: str | os.PathLike | None) -> Path:
    if isinstance(name, os.PathLike) or os.sep in str(name):
        return Path(name)
    check_name(str(name))
    recover(str(name), root)
    folder = index_root(root) / str(name)
    if not folder.exists():
        known = [s["name"] for s in list_indexes(root)]
        hint = f" (available: {', '.join(known)})" if known else " (no indexes there yet: run `simx index build`)"
        raise SimxIndexError(f"no index named {name!r} in {index_root(root)}{hint}")
    return folder


def open_index(name: str | os.PathLike, root: str | os.PathLike | None = None,
               model: SimModel | str | None = None) -> Index:
    """Open the index ``ROOT/name`` (or the folder ``name`` when it is a path).

    ``model``: a :class:`SimModel` (or a spec string) to use for image queries instead of loading the recorded
    one; it must match the record (spec, layer, metric, dim, preprocessing) or :class:`ModelMismatchError` says
    what differs. Raises :class:`SimxIndexError` for a missing, incomplete or unknown-format folder.
    """
    import faiss
    import pyarrow.parquet as pq

    folder = _resolve_folder(name, root)
    meta = read_meta(folder)
    try:
        rows = pq.read_table(folder / MANIFEST_FILE).to_pylist()
    except Exception as exc:  # noqa: BLE001
        raise SimxIndexError(f"{folder}/{MANIFEST_FILE} is unreadable: {exc}") from None
    try:
        embeddings = np.load(folder / EMBEDDINGS_FILE, mmap_mode="r")
    except Exception as exc:  # noqa: BLE001
        raise SimxIndexError(f"{folder}/{EMBEDDINGS_FILE} is unreadable: {exc}") from None
    try:
        fidx = faiss.read_index(str(folder / INDEX_FILE))
    except Exception as exc:  # noqa: BLE001
        raise SimxIndexError(f"{folder}/{INDEX_FILE} is unreadable by FAISS: {str(exc).splitlines()[0]}") from None
    dim = int(meta.get("model", {}).get("dim", -1))
    sizes = {"manifest rows": len(rows), "embeddings rows": int(embeddings.shape[0]), "FAISS ntotal": int(fidx.ntotal)}
    if len(set(sizes.values())) != 1:
        raise SimxIndexError(f"{folder} is inconsistent: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    if embeddings.ndim != 2 or embeddings.shape[1] != dim or fidx.d != dim:
        raise SimxIndexError(f"{folder} is inconsistent: meta dim {dim}, embeddings {tuple(embeddings.shape)}, "
                             f"FAISS d {fidx.d}")
    params = meta.get("faiss", {}).get("search_params")
    if params:
        faiss.ParameterSpace().set_index_parameters(fidx, params)
    index = Index(folder, meta, records_to_items(rows), [r.get("fingerprint") for r in rows], embeddings, fidx)
    if model is not None:
        if isinstance(model, str):
            m = meta["model"]
            from ..models import load_model

            model = load_model(model, layer=m["layer"], metric=m["metric"], preprocessing=m["preprocessing"])
        check_model(index, model)
        index._model = model
    return index


def list_indexes(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every index folder under ``root`` (hidden temp/old folders are ignored), sorted by name.

    Each entry: ``name``, ``path``, ``ok`` and, for a readable index, ``model``, ``metric``, ``dim``, ``factory``,
    ``images``, ``embedded``, ``skipped``, ``built_at``; for a broken one, ``error`` says what is wrong.
    """
    base = index_root(root)
    if not base.is_dir():
        return []
    for entry in list(base.iterdir()):  # an interrupted publication leaves only .NAME.old-*: put it back
        m = _OLD_RE.match(entry.name)
        if m and not (base / m.group("name")).exists():
            recover(m.group("name"), root)
    out = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        entry: dict[str, Any] = {"name": folder.name, "path": str(folder)}
        try:
            meta = read_meta(folder)
        except SimxIndexError as exc:
            entry.update(ok=False, error=str(exc))
        else:
            c = meta.get("counts", {})
            entry.update(ok=True, error=None, model=meta["model"]["spec"], metric=meta["model"]["metric"],
                         dim=meta["model"]["dim"], factory=meta["faiss"]["factory"], images=c.get("images"),
                         embedded=c.get("embedded"), skipped=c.get("skipped"), built_at=meta.get("built_at"))
        out.append(entry)
    return out
