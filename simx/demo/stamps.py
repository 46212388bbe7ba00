"""The Tux Paint stamps gallery: real, categorised PNGs taken from a Debian package at setup time.

The images come from the Debian package ``tuxpaint-stamps-default`` (GPL-2+, mixed upstream sources), so they are
never committed to the repository: :func:`prepare_stamps` copies them from an installed package
(``/usr/share/tuxpaint/stamps``) or, failing that, from a ``.deb`` fetched with ``apt-get download`` and unpacked
without root. The result is a plain simx folder gallery::

    dest/animals/birds/blackbird.png     label "animals/birds" (the folder path)
    dest/animals/birds/blackbird.txt     "A blackbird." (read as metadata["description"])
    dest/COPYRIGHT                       the package's copyright file, kept because the images are copyleft
    dest/.complete.json                  marker written last: counts and source

Alphabet glyphs (``symbols/alphabets``) and ``*_mirror`` flipped twins are dropped: glyphs would swamp the
gallery with near-identical letters and mirrors are exact near-duplicates of another stamp.

:func:`stamp_pool` lists the stamps usable as scene objects (see :mod:`simx.demo.scenes`). This module also holds
:func:`build_atomically`, the temp-directory-then-rename helper both demo builders use so that a killed run never
leaves a half-built gallery behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from PIL import Image

log = logging.getLogger(__name__)

#: Debian package holding the stamps.
STAMPS_PACKAGE = "tuxpaint-stamps-default"
#: Where the package installs its stamps.
SYSTEM_STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")
#: The package's copyright file (kept next to any copy of the images).
SYSTEM_COPYRIGHT = Path("/usr/share/doc/tuxpaint-stamps-default/copyright")
#: Category folders left out of the gallery (relative to ``stamps/``).
EXCLUDED_CATEGORIES = ("symbols/alphabets",)
#: Name of the completion marker written last into a finished gallery folder.
MARKER_NAME = ".complete.json"
#: Bumped when the layout of a prepared stamps folder changes, so old copies are rebuilt.
STAMPS_FORMAT = 1

HOW_TO_GET_STAMPS = (
    f"install the Debian package with `sudo apt-get install {STAMPS_PACKAGE}` "
    f"(or make `apt-get download {STAMPS_PACKAGE}` work, e.g. after `sudo apt-get update`) and run again"
)


# --------------------------------------------------------------------------------------------- atomic folders


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The parsed completion marker of ``folder``, or None when it is missing or unreadable."""
    try:
        data = json.loads((Path(folder) / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_marker(folder: Path, data: dict[str, Any]) -> None:
    """Write the completion marker atomically (temp file + rename); it must be the last file written."""
    path = Path(folder) / MARKER_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_builds(dest: Path) -> None:
    """Remove temp build folders of ``dest`` left by runs that were killed (their process is gone)."""
    prefix = f".{dest.name}.build-"
    if not dest.parent.is_dir():
        return
    for sibling in dest.parent.iterdir():
        if not sibling.name.startswith(prefix) or not sibling.is_dir():
            continue
        pid_part = sibling.name[len(prefix):].split("-", 1)[0]
        if pid_part.isdigit() and int(pid_part) != os.getpid() and not _pid_alive(int(pid_part)):
            log.info("removing leftover partial build %s", sibling)
            shutil.rmtree(sibling, ignore_errors=True)


@contextlib.contextmanager
def build_atomically(dest: Path) -> Iterator[Path]:
    """Yield an empty temp folder next to ``dest``; on a clean exit it replaces ``dest`` in one rename.

    Why: a gallery is only ever seen complete or not at all. If the block raises (or the process is killed) the
    temp folder is dropped (or cleaned by the next run) and any previous ``dest`` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_builds(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.build-{os.getpid()}-", dir=dest.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}-{os.urandom(4).hex()}"
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def progress_bar(iterable: Any, total: int | None, desc: str, enabled: bool) -> Any:
    """Wrap ``iterable`` in a tqdm bar on stderr when ``enabled`` and tqdm is installed, else return it as is."""
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with the dependencies
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="img", leave=False)


# --------------------------------------------------------------------------------------------- selection


def _excluded(rel: Path) -> bool:
    """True for stamps left out of every demo: alphabet glyphs and ``*_mirror`` flipped twins."""
    posix = rel.as_posix()
    if any(posix == c or posix.startswith(c + "/") for c in EXCLUDED_CATEGORIES):
        return True
    return "_mirror" in rel.stem


def _english_description(txt: Path) -> str | None:
    """First non-empty line of a Tux Paint description file (the English text), or None."""
    try:
        text = txt.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        line = line.strip().lstrip("\ufeff").strip()
        if line:
            return line
    return None


def _selected_pngs(stamps_root: Path) -> list[Path]:
    """Sorted stamp PNGs under ``stamps_root`` that belong in the gallery (files directly in the root have no
    category and are skipped)."""
    out = []
    for p in stamps_root.rglob("*.png"):
        if not p.is_file():
            continue
        rel = p.relative_to(stamps_root)
        if rel.parent == Path(".") or _excluded(rel):
            continue
        out.append(p)
    return sorted(out, key=lambda p: p.relative_to(stamps_root).as_posix())


# --------------------------------------------------------------------------------------------- sources


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 1800) -> subprocess.CompletedProcess[str] | None:
    """Run a command quietly; None (and a debug log) if it cannot start or times out."""
    try:
        return subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("%s failed to run: %s", cmd[0], exc)
        return None


def _extract_deb_stamps(deb: Path, out: Path) -> Path | None:
    """Unpack only the stamp PNG/TXT files of the package (no root needed) into ``out``; returns the stamps
    folder or None. Streams ``dpkg-deb --fsys-tarfile`` so the ~190 MB of sounds are never written to disk."""
    if shutil.which("dpkg-deb") is None:
        log.warning("dpkg-deb not found, cannot unpack %s", deb.name)
        return None
    prefix = "usr/share/tuxpaint/stamps/"
    doc = "usr/share/doc/tuxpaint-stamps-default/copyright"
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|*") as tar:
            for member in tar:
                name = member.name.lstrip("./")
                if not member.isfile():
                    continue
                if name == doc or (name.startswith(prefix) and name.endswith((".png", ".txt"))):
                    target = out / name
                    if out.resolve() not in target.resolve().parents:
                        continue  # never write outside the extraction folder
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(member)
                    if src is not None:
                        with open(target, "wb") as fh:
                            shutil.copyfileobj(src, fh)
    except (tarfile.TarError, OSError) as exc:
        log.warning("could not unpack %s: %s", deb.name, exc)
        return None
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
        proc.wait()
    stamps = out / prefix
    return stamps if stamps.is_dir() else None


def _download_stamps(work: Path) -> Path | None:
    """``apt-get download`` the package into ``work`` and unpack its stamps there; None if that fails."""
    if shutil.which("apt-get") is None:
        return None
    work.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s with apt-get (about 160 MB)...", STAMPS_PACKAGE)
    res = _run(["apt-get", "download", STAMPS_PACKAGE], cwd=work)
    debs = sorted(work.glob(f"{STAMPS_PACKAGE}_*.deb"))
    if res is None or res.returncode != 0 or not debs:
        reason = (res.stderr or res.stdout).strip().splitlines()[-1:] if res is not None else ["could not run"]
        log.warning("apt-get download %s failed: %s", STAMPS_PACKAGE, reason[0] if reason else "unknown error")
        return None
    return _extract_deb_stamps(debs[-1], work / "root")


def _install_stamps() -> Path | None:
    """As root only: ``apt-get install`` the package and return the installed stamps folder, or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    log.info("installing %s with apt-get...", STAMPS_PACKAGE)
    res = _run(["apt-get", "install", "-y", "--no-install-recommends", STAMPS_PACKAGE])
    if res is None or res.returncode != 0:
        log.warning("apt-get install %s failed", STAMPS_PACKAGE)
        return None
    return SYSTEM_STAMPS_DIR if SYSTEM_STAMPS_DIR.is_dir() else None


def _package_version() -> str | None:
    """Installed version of the package according to dpkg, or None."""
    if shutil.which("dpkg-query") is None:
        return None
    res = _run(["dpkg-query", "-W", "-f=${Version}", STAMPS_PACKAGE], timeout=30)
    if res is None or res.returncode != 0:
        return None
    return res.stdout.strip() or None


# --------------------------------------------------------------------------------------------- copy


def _complete(dest: Path) -> dict[str, Any] | None:
    """The marker of ``dest`` when it holds a finished copy in the current format, else None."""
    marker = read_marker(dest)
    if not marker or marker.get("format") != STAMPS_FORMAT or marker.get("kind") != "tuxpaint-stamps":
        return None
    n = sum(1 for _ in dest.rglob("*.png"))
    return marker if n == marker.get("n_images") else None


def _copy_stamps(src_root: Path, out: Path, copyright_file: Path | None, source: str, progress: bool) -> dict[str, Any]:
    """Copy the selected PNGs (checked to be readable) and their English descriptions from ``src_root`` to
    ``out``; returns the marker contents."""
    pngs = _selected_pngs(src_root)
    n_images = n_desc = n_bad = 0
    categories: set[str] = set()
    for png in progress_bar(pngs, len(pngs), "stamps", progress):
        rel = png.relative_to(src_root)
        try:
            with Image.open(png) as im:
                if im.width <= 0 or im.height <= 0:
                    raise OSError("zero-sized image")
        except Exception as exc:  # noqa: BLE001 - any unreadable stamp is skipped and counted
            log.warning("skipping unreadable stamp %s: %s", rel, exc)
            n_bad += 1
            continue
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, target)
        n_images += 1
        categories.add(rel.parent.as_posix())
        desc = _english_description(png.with_suffix(".txt"))
        if desc:
            target.with_suffix(".txt").write_text(desc + "\n", encoding="utf-8")
            n_desc += 1
    if copyright_file is not None and copyright_file.is_file():
        shutil.copyfile(copyright_file, out / "COPYRIGHT")
    return {
        "format": STAMPS_FORMAT,
        "kind": "tuxpaint-stamps",
        "package": STAMPS_PACKAGE,
        "source": source,
        "licence": "GPL-2+ (see COPYRIGHT)",
        "n_images": n_images,
        "n_descriptions": n_desc,
        "n_unreadable": n_bad,
        "n_categories": len(categories),
        "excluded": list(EXCLUDED_CATEGORIES) + ["*_mirror*"],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def prepare_stamps(
    dest: Path,
    progress: bool = True,
    *,
    source: Path | None = None,
    allow_download: bool = True,
) -> Path | None:
    """Build the Tux Paint stamps folder gallery at ``dest`` and return ``dest`` (None if no stamps can be had).

    Sources, in order: ``source`` when given (a ``stamps/`` folder laid out like the package's), else the
    installed package at ``/usr/share/tuxpaint/stamps``, else (``allow_download``) ``apt-get download`` plus an
    unprivileged unpack into a temp folder, else (only as root) ``apt-get install``. When every source fails a
    warning explains how to get the package and None is returned, so callers can fall back to procedural data.

    Idempotent: a ``dest`` that already holds a complete copy (its ``.complete.json`` marker matches the files)
    is returned untouched. Atomic: the copy is built in a temp sibling and renamed into place.
    """
    dest = Path(dest)
    if _complete(dest) is not None:
        log.debug("stamps already prepared in %s", dest)
        return dest

    copyright_file: Path | None = SYSTEM_COPYRIGHT
    if source is not None:
        src = Path(source)
        if not src.is_dir():
            log.warning("stamps source %s is not a folder; %s", src, HOW_TO_GET_STAMPS)
            return None
        candidate = src.parent.parent / "doc" / STAMPS_PACKAGE / "copyright"
        copyright_file = candidate if candidate.is_file() else None
        if not _selected_pngs(src):
            log.warning("no stamp PNGs under %s; %s", src, HOW_TO_GET_STAMPS)
            return None
        return _build_from(src, dest, copyright_file, str(src), progress)
    if SYSTEM_STAMPS_DIR.is_dir() and _selected_pngs(SYSTEM_STAMPS_DIR):
        version = _package_version()
        label = f"{SYSTEM_STAMPS_DIR} ({STAMPS_PACKAGE} {version})" if version else str(SYSTEM_STAMPS_DIR)
        return _build_from(SYSTEM_STAMPS_DIR, dest, copyright_file, label, progress)

    if allow_download:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{dest.name}.download-", dir=dest.parent) as work:
            stamps = _download_stamps(Path(work))
            if stamps is not None and _selected_pngs(stamps):
                cr = Path(work) / "root" / "usr/share/doc/tuxpaint-stamps-default/copyright"
                return _build_from(stamps, dest, cr if cr.is_file() else None, f"apt-get download {STAMPS_PACKAGE}",
                                   progress)
        installed = _install_stamps()
        if installed is not None and _selected_pngs(installed):
            return _build_from(installed, dest, SYSTEM_COPYRIGHT, f"apt-get install {STAMPS_PACKAGE}", progress)

    log.warning("Tux Paint stamps are not available (%s not found and could not be fetched): %s",
                SYSTEM_STAMPS_DIR, HOW_TO_GET_STAMPS)
    return None


class _NothingUsable(Exception):
    """Internal: aborts a build whose source had no readable stamp."""


def _build_from(src: Path, dest: Path, copyright_file: Path | None, label: str, progress: bool) -> Path | None:
    """Copy ``src`` into ``dest`` atomically; None (and a warning) if not one stamp could be read."""
    try:
        with build_atomically(dest) as tmp:
            marker = _copy_stamps(src, tmp, copyright_file, label, progress)
            if marker["n_images"] == 0:
                raise _NothingUsable
            write_marker(tmp, marker)
    except _NothingUsable:
        log.warning("no readable stamp PNG in %s; %s", src, HOW_TO_GET_STAMPS)
        return None
    log.info("prepared %d stamps (%d with descriptions) in %s", marker["n_images"], marker["n_descriptions"], dest)
    return dest


# --------------------------------------------------------------------------------------------- scene pool


@dataclass(frozen=True)
class StampRecord:
    """A stamp usable as a scene object.

    ``stamp_id`` is the path relative to the stamps folder without ``.png`` (``animals/birds/blackbird``), ``top``
    the first folder (``animals``), ``leaf`` the whole folder path (``animals/birds``), ``description`` the English
    text if any.
    """

    path: Path
    stamp_id: str
    top: str
    leaf: str
    description: str | None
    width: int
    height: int


def stamp_pool(stamps_dir: Path, min_side: int = 64) -> list[StampRecord]:
    """Stamps of ``stamps_dir`` (a prepared gallery or a raw ``stamps/`` folder) fit to paste into scenes.

    Leaves out alphabet glyphs, ``*_mirror`` twins, unreadable files and stamps whose longest side is below
    ``min_side`` pixels (they would be blurry once upscaled to a third of a scene). Sorted by ``stamp_id`` so the
    pool, and hence every scene built from it, is deterministic.
    """
    root = Path(stamps_dir)
    if not root.is_dir():
        return []
    out = []
    for png in _selected_pngs(root):
        try:
            with Image.open(png) as im:
                w, h = im.size
        except Exception:  # noqa: BLE001 - unreadable stamps are simply not in the pool
            continue
        if max(w, h) < min_side:
            continue
        rel = png.relative_to(root)
        leaf = rel.parent.as_posix()
        out.append(
            StampRecord(
                path=png,
                stamp_id=rel.with_suffix("").as_posix(),
                top=rel.parts[0],
                leaf=leaf,
                description=_english_description(png.with_suffix(".txt")),
                width=w,
                height=h,
            )
        )
    return out
