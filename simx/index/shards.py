"""Embedding shards: a distributed build's vectors on disk, one file pair per slice of the gallery.

A build on a distributed engine (:mod:`simx.index.ray_engine`) splits the files it must embed into consecutive
shards of :data:`DEFAULT_SHARD_SIZE` and writes each shard, as soon as all its files are embedded, into the hidden
folder ``ROOT/.NAME.shards/`` beside the index::

    shard-00003-<key>.npy       float32 (m, D): row j = the embedding of the shard's j-th file (zeros if skipped)
    shard-00003-<key>.parquet   the id table: id, path, ok, reason (written last: its presence marks the shard done)

``<key>`` hashes the model record and every (id, path, fingerprint) of the shard, so a shard file is reused only
for exactly the same files embedded by exactly the same model. A killed or failed job leaves its completed shards;
the next run embeds only the missing ones (resume). The final FAISS build reads the shards memory-mapped
(:func:`copy_into`) and never holds more than one shard's rows in memory besides the output memory map.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import SimxIndexError
from .layout import check_name, index_root

#: Files per shard: large enough that per-shard overhead (two small files, one task hand-off) is negligible,
#: small enough that a killed job loses at most a few minutes of a CPU worker (1024 images at ~7 images/s).
DEFAULT_SHARD_SIZE = 1024

_FILE_RE = re.compile(r"^shard-(?P<num>\d{5,})-(?P<key>[0-9a-f]{16})\.(?P<ext>npy|parquet)$")


def shard_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """The hidden folder ``ROOT/.NAME.shards`` holding the embedding shards of index ``name``."""
    return index_root(root) / f".{check_name(name)}.shards"


@dataclass(frozen=True)
class Shard:
    """One slice of the files to embed: its number, content key and the files (gallery positions, ids, paths)."""

    number: int
    key: str
    positions: tuple[int, ...]
    ids: tuple[str, ...]
    paths: tuple[str, ...]

    @property
    def stem(self) -> str:
        return f"shard-{self.number:05d}-{self.key}"

    def __len__(self) -> int:
        return len(self.positions)


def model_key(model_record: dict[str, Any]) -> str:
    """A stable hash of what determines the vectors: spec, layer, metric, dim and preprocessing."""
    wanted = {k: model_record.get(k) for k in ("spec", "layer", "metric", "dim", "preprocessing")}
    return hashlib.blake2b(json.dumps(wanted, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()


def plan_shards(positions: Sequence[int], ids: Sequence[str], paths: Sequence[str],
                fingerprints: Sequence[str | None], model_record: dict[str, Any],
                shard_size: int = DEFAULT_SHARD_SIZE) -> list[Shard]:
    """Cut the files to embed (in gallery order) into shards of ``shard_size`` and key each by its content."""
    if shard_size < 1:
        raise SimxIndexError(f"shard size must be at least 1, got {shard_size}")
    mkey = model_key(model_record)
    shards = []
    for number, start in enumerate(range(0, len(positions), shard_size)):
        sl = slice(start, start + shard_size)
        h = hashlib.blake2b(mkey.encode(), digest_size=8)
        for i, p, f in zip(ids[sl], paths[sl], fingerprints[sl]):
            h.update(f"\x00{i}\x01{p}\x02{f}".encode())
        shards.append(Shard(number, h.hexdigest(), tuple(positions[sl]), tuple(ids[sl]), tuple(paths[sl])))
    return shards


class ShardStore:
    """The shard folder of one index: which shards are complete, writing one atomically, reading them back."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def reset(self) -> None:
        """Forget every stored shard (``--no-resume``)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def is_complete(self, shard: Shard) -> bool:
        return (self.folder / f"{shard.stem}.parquet").is_file() and (self.folder / f"{shard.stem}.npy").is_file()

    def write(self, shard: Shard, vectors: np.ndarray, reasons: Sequence[str | None]) -> None:
        """Store a finished shard: the vectors first, then the id table (the completion marker), each through a
        temp file and ``os.replace``, so a killed writer leaves either a complete shard or none."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if vectors.shape[0] != len(shard) or len(reasons) != len(shard):
            raise SimxIndexError(f"{shard.stem}: {vectors.shape[0]} vectors and {len(reasons)} reasons for "
                                 f"{len(shard)} files")
        self.folder.mkdir(parents=True, exist_ok=True)
        tag = f".tmp-{os.getpid()}"
        npy = self.folder / f"{shard.stem}.npy"
        tmp = self.folder / f".{shard.stem}.npy{tag}"
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32))
        os.replace(tmp, npy)
        table = pa.table({"id": list(shard.ids), "path": list(shard.paths),
                          "ok": [r is None for r in reasons], "reason": [r or "" for r in reasons]})
        tmp = self.folder / f".{shard.stem}.parquet{tag}"
        pq.write_table(table, tmp)
        os.replace(tmp, self.folder / f"{shard.stem}.parquet")

    def read(self, shard: Shard) -> tuple[np.ndarray, list[str | None]]:
        """The shard's vectors (memory-mapped) and skip reasons (None for embedded files)."""
        import pyarrow.parquet as pq

        try:
            vectors = np.load(self.folder / f"{shard.stem}.npy", mmap_mode="r")
            table = pq.read_table(self.folder / f"{shard.stem}.parquet").to_pydict()
        except Exception as exc:  # noqa: BLE001 - a damaged shard is reported with its file name
            raise SimxIndexError(f"embedding shard {self.folder / shard.stem} is unreadable ({exc}); "
                                 "rebuild with --no-resume") from None
        if list(table["id"]) != list(shard.ids) or vectors.shape[0] != len(shard):
            raise SimxIndexError(f"embedding shard {self.folder / shard.stem} does not match its files; "
                                 "rebuild with --no-resume")
        return vectors, [None if ok else reason for ok, reason in zip(table["ok"], table["reason"])]

    def prune(self, keep: Iterable[Shard]) -> list[str]:
        """Delete shard files (and stray temp files) not belonging to ``keep``; returns the names removed."""
        wanted = {s.stem for s in keep}
        removed = []
        if not self.folder.is_dir():
            return removed
        for entry in self.folder.iterdir():
            m = _FILE_RE.match(entry.name)
            stale = (m is not None and f"shard-{m.group('num')}-{m.group('key')}" not in wanted) or (
                entry.name.startswith(".") and ".tmp-" in entry.name)
            if stale:
                entry.unlink(missing_ok=True)
                removed.append(entry.name)
        return removed


def reasons_by_position(store: ShardStore, shards: Sequence[Shard]) -> dict[int, tuple[int, str | None]]:
    """``{gallery position: (shard number, skip reason or None)}`` of every file of ``shards`` (id tables only)."""
    out: dict[int, tuple[int, str | None]] = {}
    for shard in shards:
        _, reasons = store.read(shard)
        out.update({pos: (shard.number, r) for pos, r in zip(shard.positions, reasons)})
    return out


def copy_into(out: np.ndarray, dest: dict[int, int], store: ShardStore, shards: Sequence[Shard]) -> None:
    """Copy each embedded file's vector from its shard (memory-mapped, one shard at a time) into ``out[dest[pos]]``;
    positions missing from ``dest`` (skipped files) are left out."""
    dim = out.shape[1]
    for shard in shards:
        vectors, _ = store.read(shard)
        if vectors.ndim != 2 or vectors.shape[1] != dim:
            raise SimxIndexError(f"embedding shard {shard.stem} has shape {vectors.shape}, expected (*, {dim})")
        rows = [j for j, pos in enumerate(shard.positions) if pos in dest]
        if rows:
            out[[dest[shard.positions[j]] for j in rows]] = vectors[rows]
