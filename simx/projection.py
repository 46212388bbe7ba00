"""A 2-D map of an index's embeddings for the dashboard's embedding map, computed once and kept beside the index.

:func:`projection` returns a DataFrame (``id``, ``label``, ``x``, ``y``), reading ``ROOT/NAME/projection.parquet``
when it describes the index's current embeddings and computing (then storing) it otherwise. The method is UMAP
when ``umap-learn`` is importable (cosine metric for cosine indexes), PCA otherwise (or when asked for). The file
``projection.json`` beside it records the method, the format version, the number of points and a fingerprint of
the embeddings, so a rebuilt index or another method is never served a stale map. Both files are written to a
temporary name and renamed into place (readers never see half a file; two writers both write a complete file).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SimxError

PROJECTION_FILE = "projection.parquet"
PROJECTION_META = "projection.json"
#: Bumped whenever the stored projection changes meaning.
VERSION = 1
METHODS = ("auto", "umap", "pca")


def umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


def pca_2d(x: np.ndarray) -> np.ndarray:
    """First two principal components of the rows of ``x`` (centred, deterministic signs), float32 (N, 2)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if n == 0:
        return np.zeros((0, 2), np.float32)
    xc = x - x.mean(axis=0, keepdims=True)
    if n == 1:
        return np.zeros((1, 2), np.float32)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    comps = vt[:2]
    # deterministic orientation: the largest-magnitude loading of each component is positive
    signs = np.sign(comps[np.arange(comps.shape[0]), np.abs(comps).argmax(axis=1)])
    signs[signs == 0] = 1
    out = xc @ (comps * signs[:, None]).T
    if out.shape[1] < 2:
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out.astype(np.float32)


def compute(embeddings: np.ndarray, method: str = "auto", metric: str = "cosine", seed: int = 0
            ) -> tuple[np.ndarray, str]:
    """(N, D) embeddings -> ((N, 2) coordinates, method actually used)."""
    if method not in METHODS:
        raise SimxError(f"unknown projection method {method!r}; choose one of {', '.join(METHODS)}")
    x = np.asarray(embeddings, dtype=np.float32)
    if method == "umap" and not umap_available():
        raise SimxError("projection method 'umap' needs the umap-learn package (pip install umap-learn)")
    if method in ("auto", "umap") and umap_available() and x.shape[0] >= 5:
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, x.shape[0] - 1), random_state=seed, n_jobs=1,
                            metric="cosine" if metric == "cosine" else "euclidean")
        return np.asarray(reducer.fit_transform(x), dtype=np.float32), "umap"
    return pca_2d(x), "pca"


def fingerprint(embeddings: np.ndarray) -> str:
    """Shape and a hash of the embeddings' bytes."""
    x = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
    return f"{x.shape[0]}x{x.shape[1] if x.ndim == 2 else 0}:" + hashlib.blake2b(x.tobytes(), digest_size=16).hexdigest()


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_stored(folder: Path) -> tuple[dict[str, Any], Any] | None:
    """(meta, DataFrame) of the stored projection in ``folder``, or None when absent or unreadable."""
    import pandas as pd

    try:
        meta = json.loads((folder / PROJECTION_META).read_text(encoding="utf-8"))
        df = pd.read_parquet(folder / PROJECTION_FILE)
    except Exception:  # noqa: BLE001 - absent or damaged: recompute
        return None
    return meta, df


#: Most points a map draws: larger indexes are mapped on a stratified sample of this size (a browser draws 20k
#: WebGL points smoothly, and UMAP of 20k points takes about a minute on 2 cores, where 1M would take hours).
MAP_POINTS = 20_000


def stratified_sample(labels: list[Any], max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted row numbers of at most ``max_points`` items, every label represented in proportion to its size
    (at least one item each, as long as there are fewer labels than points), drawn with ``seed``."""
    n = len(labels)
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    groups: dict[Any, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab, []).append(i)
    chosen: list[int] = []
    for key in sorted(groups, key=str):
        rows = groups[key]
        take = max(1, int(round(max_points * len(rows) / n)))
        chosen.extend(rng.choice(rows, size=min(take, len(rows)), replace=False).tolist())
    chosen_arr = np.array(sorted(chosen), dtype=np.int64)
    if len(chosen_arr) > max_points:  # rounding up small labels overshot: drop at random
        chosen_arr = np.sort(rng.choice(chosen_arr, size=max_points, replace=False))
    elif len(chosen_arr) < max_points:  # rounding down: top up at random from the rest
        rest = np.setdiff1d(np.arange(n), chosen_arr)
        extra = rng.choice(rest, size=max_points - len(chosen_arr), replace=False)
        chosen_arr = np.sort(np.concatenate([chosen_arr, extra]))
    return chosen_arr


def projection(index: Any, method: str = "auto", recompute: bool = False, seed: int = 0,
               max_points: int | None = None):
    """The 2-D projection of ``index`` (an opened :class:`simx.index.Index`) as a DataFrame
    ``id, label, x, y``, plus ``df.attrs["method"]`` and ``df.attrs["n_total"]``; stored beside the index.

    Up to ``max_points`` items (default :data:`MAP_POINTS`) row i is item i; a larger index is mapped on a
    :func:`stratified_sample` by label (seeded), so the map never holds more than ``max_points`` points."""
    import pandas as pd

    folder = Path(index.path)
    limit = MAP_POINTS if max_points is None else int(max_points)
    rows = stratified_sample([it.label for it in index.items], limit, seed)
    sampled = len(rows) < len(index.ids)
    ids = [index.ids[i] for i in rows] if sampled else list(index.ids)
    emb = np.asarray(index.embeddings[rows] if sampled else index.embeddings, dtype=np.float32)
    fp = fingerprint(emb)
    wanted = None if method == "auto" else method
    stored = None if recompute else read_stored(folder)
    if stored is not None:
        meta, df = stored
        if (meta.get("version") == VERSION and meta.get("fingerprint") == fp and len(df) == len(ids)
                and (wanted is None or meta.get("method") == wanted)
                and (method != "auto" or meta.get("method") == ("umap" if umap_available() else "pca"))
                and list(df["id"]) == ids):
            df.attrs["method"] = meta["method"]
            df.attrs["n_total"] = len(index.ids)
            return df
    coords, used = compute(emb, method=method, metric=getattr(index, "metric", "cosine"), seed=seed)
    df = pd.DataFrame({"id": ids, "label": [index.items[i].label for i in rows] if sampled
                       else [it.label for it in index.items], "x": coords[:, 0], "y": coords[:, 1]})
    meta = {"version": VERSION, "method": used, "n": int(len(df)), "fingerprint": fp, "seed": seed,
            "n_total": len(index.ids), "sample": "stratified by label" if sampled else None}
    try:
        _write_atomic(folder / PROJECTION_FILE, lambda p: df.to_parquet(p, index=False))
        _write_atomic(folder / PROJECTION_META, lambda p: p.write_text(json.dumps(meta, indent=2) + "\n",
                                                                       encoding="utf-8"))
    except OSError:  # a read-only index folder: serve the map without storing it
        pass
    df.attrs["method"] = used
    df.attrs["n_total"] = len(index.ids)
    return df


__all__ = ["projection", "stratified_sample", "MAP_POINTS", "compute", "pca_2d", "fingerprint", "umap_available", "PROJECTION_FILE", "PROJECTION_META",
           "VERSION"]
