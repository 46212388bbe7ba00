"""Where indexes live on disk and how a new one replaces an old one without ever showing a half index.

An index called ``NAME`` is the folder ``ROOT/NAME/`` holding four files (see ``docs/index-format.md``)::

    index.faiss        the FAISS index (faiss.write_index)
    embeddings.npy     float32 (N, D), row i = FAISS id i, normalised as the model's metric wants
    manifest.parquet   one row per embedded image, row i = FAISS id i (id, path, label, labels, ..., fingerprint)
    meta.json          format version, model record, FAISS factory, counts, skipped files, versions (written last)

``ROOT`` is ``--root``, else ``$SIMX_INDEXES``, else ``./indexes``.

Atomicity: a build writes everything into the hidden sibling ``ROOT/.NAME.tmp-<pid>`` and then publishes it.
On Linux the publication is one ``renameat2(RENAME_EXCHANGE)`` system call that swaps the two folders, so a reader
always sees either the complete old index or the complete new one; elsewhere it is two renames (old aside to
``.NAME.old-*``, new into place) and :func:`recover` puts the old one back if a crash fell between them. The old
folder is deleted afterwards. Hidden folders are never listed as indexes; :func:`clean_stale` deletes temp folders
whose build process is gone. Files other modules keep beside an index (``labels.sqlite``, the stored projection)
are hard-linked into the new folder before the swap (:func:`carry_over`), so a rebuild never loses them.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from ..errors import SimxIndexError

#: Version of the on-disk layout written into ``meta.json``; bumped on any incompatible change.
#: 2 added the manifest's ``labels`` column (every label of an item, for multi-label relevance).
FORMAT_VERSION = 2
#: Versions this simx opens: a version-1 index has no ``labels`` column, so each item has its one ``label``.
READABLE_VERSIONS = (1, 2)
#: Environment variable naming the default index root.
ROOT_ENV = "SIMX_INDEXES"

INDEX_FILE = "index.faiss"
EMBEDDINGS_FILE = "embeddings.npy"
MANIFEST_FILE = "manifest.parquet"
META_FILE = "meta.json"
#: The files every complete index folder has.
REQUIRED_FILES = (META_FILE, INDEX_FILE, EMBEDDINGS_FILE, MANIFEST_FILE)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)$")
_OLD_RE = re.compile(r"^\.(?P<name>.+)\.old-(?P<tag>[0-9-]+)$")


def index_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding all indexes: ``root`` if given, else ``$SIMX_INDEXES``, else ``./indexes``."""
    if root is not None and str(root) != "":
        return Path(root)
    env = os.environ.get(ROOT_ENV)
    return Path(env) if env else Path("indexes")


def check_name(name: str) -> str:
    """Reject names that could escape the root or collide with the hidden temp/old folders."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise SimxIndexError(
            f"invalid index name {name!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return name


def index_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """``ROOT/NAME`` after validating ``name``."""
    return index_root(root) / check_name(name)


def temp_dir(name: str, root: str | os.PathLike | None = None, pid: int | None = None) -> Path:
    """The hidden folder a build of ``name`` by process ``pid`` writes into before publishing."""
    return index_root(root) / f".{check_name(name)}.tmp-{os.getpid() if pid is None else pid}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale(root: str | os.PathLike | None = None) -> list[Path]:
    """Delete leftovers of interrupted builds under ``root``: temp folders whose process is gone, and old
    folders whose index has been published again (after :func:`recover`). Returns what was removed."""
    base = index_root(root)
    removed: list[Path] = []
    if not base.is_dir():
        return removed
    for entry in base.iterdir():
        if not entry.is_dir():
            continue
        m = _TMP_RE.match(entry.name)
        if m and not _pid_alive(int(m.group("pid"))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
            continue
        m = _OLD_RE.match(entry.name)
        if m and (base / m.group("name")).exists():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def recover(name: str, root: str | os.PathLike | None = None) -> bool:
    """If a publication was interrupted between its two renames (``NAME`` gone, ``.NAME.old-*`` present), move
    the newest old folder back to ``NAME``. Returns True when something was restored."""
    base = index_root(root)
    final = base / check_name(name)
    if final.exists() or not base.is_dir():
        return False
    olds = sorted(
        (p for p in base.iterdir() if p.is_dir() and (m := _OLD_RE.match(p.name)) and m.group("name") == name
         and (p / META_FILE).is_file()),
        key=lambda p: p.stat().st_mtime_ns,
    )
    if not olds:
        return False
    try:
        os.rename(olds[-1], final)
    except OSError:
        return False
    return True


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux ``renameat2(RENAME_EXCHANGE)``; False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


#: Files an index build writes or derives from its own embeddings: never carried into a rebuilt folder.
_OWN_RE = re.compile(r"^(meta\.json|index\.faiss|embeddings\.npy|manifest\.parquet|eval_k\d+_\w+\.parquet"
                     r"|duplicates(_across_.+)?_t[-0-9.]+\.parquet|explanations)$")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def carry_over(old: Path, new: Path) -> list[str]:
    """Bring into the rebuilt folder ``new`` everything other modules keep beside an index in ``old`` (the label
    store ``labels.sqlite``, the stored projection, files users put there), so a rebuild never loses them.

    Files are hard-linked (copied across file systems), so both folders show the same data until the swap and a
    process with one of them open keeps writing to the surviving copy. Not carried: the index's own files, its
    evaluation caches (they describe the old vectors) and half-written temp files. Returns the names carried.
    """
    carried: list[str] = []
    if not old.is_dir():
        return carried
    for entry in sorted(old.iterdir()):
        if _OWN_RE.match(entry.name) or ".tmp-" in entry.name or (new / entry.name).exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, symlinks=True, copy_function=_link_or_copy)
        elif entry.is_symlink():
            os.symlink(os.readlink(entry), new / entry.name)
        else:
            _link_or_copy(str(entry), str(new / entry.name))
        carried.append(entry.name)
    return carried


def publish(tmp: Path, final: Path) -> None:
    """Make the complete folder ``tmp`` visible as ``final``, replacing any previous index there.

    Files other modules keep beside the previous index are carried over first (:func:`carry_over`). The previous
    folder passes through ``.NAME.old-<pid>-<ns>`` and is deleted at the end.
    """
    old = final.parent / f".{final.name}.old-{os.getpid()}-{time.time_ns()}"
    if not final.exists():
        os.rename(tmp, final)
        return
    carry_over(final, tmp)
    if _exchange(tmp, final):
        os.rename(tmp, old)  # tmp now holds the previous index
    else:
        os.rename(final, old)
        os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def read_meta(folder: Path) -> dict[str, Any]:
    """Read and check an index folder's ``meta.json`` and the presence of its files.

    Raises :class:`SimxIndexError` naming the folder and what is wrong: missing folder, missing files, unreadable
    JSON or an unknown format version.
    """
    if not folder.is_dir():
        raise SimxIndexError(f"no index at {folder} (folder not found)")
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if META_FILE in missing:
        raise SimxIndexError(f"{folder} is not a complete simx index: {META_FILE} is missing")
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SimxIndexError(f"{folder}/{META_FILE} is unreadable: {exc}") from None
    if not isinstance(meta, dict):
        raise SimxIndexError(f"{folder}/{META_FILE} is not a JSON object")
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise SimxIndexError(
            f"{folder} has index format version {version!r}; this simx reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}. Rebuild the index with `simx index build`."
        )
    if missing:
        raise SimxIndexError(f"{folder} is incomplete: missing {', '.join(missing)}")
    return meta


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temp file and ``os.replace`` (readers never see a partial file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")
    os.replace(tmp, path)
