"""Tux Paint stamps gallery: selection, descriptions, idempotency, atomicity, the unavailable case, real data."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from shutil import which as shutil_which

import numpy as np
import pytest
from PIL import Image

from simx.data import open_gallery
from simx.demo import stamps as stamps_mod
from simx.demo.stamps import MARKER_NAME, prepare_stamps, read_marker, stamp_pool

REAL_STAMPS = Path("/usr/share/tuxpaint/stamps")


def _png(path: Path, side: int = 80, mode: str = "RGBA") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((side, side, 4), dtype=np.uint8)
    arr[side // 4: 3 * side // 4, side // 4: 3 * side // 4] = (200, 30, 30, 255)
    Image.fromarray(arr, mode="RGBA").convert(mode).save(path)


@pytest.fixture()
def fake_source(tmp_path: Path) -> Path:
    """A small stamps/ tree laid out like the Debian package, with every case the selection must handle."""
    src = tmp_path / "pkg" / "stamps"
    _png(src / "animals/birds/robin.png")
    (src / "animals/birds/robin.txt").write_text("A robin.\nfr.utf8=Un rouge-gorge.\n", encoding="utf-8")
    _png(src / "animals/birds/robin_mirror.png")
    (src / "animals/birds/robin_mirror.txt").write_text("A robin.\n", encoding="utf-8")
    _png(src / "food/fruit/apple.png", mode="LA")
    (src / "food/fruit/apple.txt").write_text("\n\ufeffAn apple.  \nde.utf8=Ein Apfel.\n", encoding="utf-8")
    _png(src / "food/pear.png", side=40, mode="P")  # no description, too small for scenes
    _png(src / "symbols/alphabets/latin/a.png")
    (src / "symbols/alphabets/latin/a.txt").write_text("The letter A.\n", encoding="utf-8")
    _png(src / "loose.png")  # no category folder
    (src / "animals/birds/robin_desc_fr.ogg").write_bytes(b"OggS")
    (src / "food/fruit/broken.png").write_bytes(b"not a png")
    return src


def _pngs(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))


def test_selection_descriptions_and_labels(fake_source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "data" / "stamps"
    assert prepare_stamps(dest, progress=False, source=fake_source) == dest
    # alphabets, mirrors, uncategorised and unreadable files are gone; only PNGs and their descriptions copied
    assert _pngs(dest) == ["animals/birds/robin.png", "food/fruit/apple.png", "food/pear.png"]
    assert not list(dest.rglob("*.ogg"))
    # descriptions: first non-empty line only (the English one), stripped
    assert (dest / "animals/birds/robin.txt").read_text(encoding="utf-8") == "A robin.\n"
    assert (dest / "food/fruit/apple.txt").read_text(encoding="utf-8") == "An apple.\n"
    assert not (dest / "food/pear.txt").exists()
    items = {it.id: it for it in open_gallery(dest)}
    assert {k: v.label for k, v in items.items()} == {
        "animals/birds/robin.png": "animals/birds",
        "food/fruit/apple.png": "food/fruit",
        "food/pear.png": "food",
    }
    assert items["animals/birds/robin.png"].metadata["description"] == "A robin."
    assert "description" not in items["food/pear.png"].metadata
    marker = read_marker(dest)
    assert marker is not None
    assert (marker["n_images"], marker["n_descriptions"], marker["n_unreadable"]) == (3, 2, 1)
    assert marker["source"] == str(fake_source)
    # no temp build folders left next to the gallery
    assert sorted(p.name for p in dest.parent.iterdir()) == ["stamps"]


def test_idempotent_second_call_touches_nothing(fake_source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "stamps"
    prepare_stamps(dest, progress=False, source=fake_source)
    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*")}
    before[dest / MARKER_NAME] = (dest / MARKER_NAME).stat().st_mtime_ns
    assert prepare_stamps(dest, progress=False, source=fake_source) == dest
    assert {p: p.stat().st_mtime_ns for p in before} == before
    # an incomplete copy (a PNG missing behind the marker's back) is rebuilt
    (dest / "food/pear.png").unlink()
    assert prepare_stamps(dest, progress=False, source=fake_source) == dest
    assert (dest / "food/pear.png").is_file()


def test_killed_build_leaves_previous_gallery_and_no_partial(fake_source: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "stamps"
    real_copy = stamps_mod._copy_stamps

    def crash(src: Path, out: Path, *args: object, **kwargs: object) -> dict:
        real_copy(src, out, *args, **kwargs)
        raise KeyboardInterrupt  # killed after the files, before the marker

    monkeypatch.setattr(stamps_mod, "_copy_stamps", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare_stamps(dest, progress=False, source=fake_source)
    assert not dest.exists()
    assert list(tmp_path.glob(".stamps.*")) == []
    # a build folder left by a process that no longer exists is cleaned by the next run
    stale = tmp_path / ".stamps.build-999999999-x"
    (stale / "animals").mkdir(parents=True)
    monkeypatch.setattr(stamps_mod, "_copy_stamps", real_copy)
    assert prepare_stamps(dest, progress=False, source=fake_source) == dest
    assert not stale.exists()
    assert read_marker(dest) is not None


def test_unavailable_returns_none_with_instructions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(stamps_mod, "SYSTEM_STAMPS_DIR", tmp_path / "nowhere")
    with caplog.at_level(logging.WARNING, logger="simx.demo.stamps"):
        assert prepare_stamps(tmp_path / "stamps", progress=False, allow_download=False) is None
    assert "sudo apt-get install tuxpaint-stamps-default" in caplog.text
    assert not (tmp_path / "stamps").exists()
    # an explicit source without stamps is refused the same way
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_stamps(tmp_path / "stamps", progress=False, source=empty) is None


def test_stamp_pool_filters_and_records(fake_source: Path) -> None:
    pool = stamp_pool(fake_source, min_side=64)
    assert [s.stamp_id for s in pool] == ["animals/birds/robin", "food/fruit/apple"]
    robin = pool[0]
    assert (robin.top, robin.leaf, robin.description) == ("animals", "animals/birds", "A robin.")
    assert max(robin.width, robin.height) >= 64
    assert [s.stamp_id for s in stamp_pool(fake_source, min_side=8)] == [
        "animals/birds/robin", "food/fruit/apple", "food/pear"]
    assert stamp_pool(fake_source / "missing") == []


@pytest.mark.skipif(not REAL_STAMPS.is_dir(), reason="tuxpaint-stamps-default not installed "
                    "(sudo apt-get install tuxpaint-stamps-default)")
def test_real_tuxpaint_stamps(tmp_path: Path) -> None:
    dest = prepare_stamps(tmp_path / "stamps", progress=False, allow_download=False)
    assert dest is not None
    rels = _pngs(dest)
    assert len(rels) > 500
    assert not any(r.startswith("symbols/alphabets/") for r in rels)
    assert not any("_mirror" in r for r in rels)
    # every kept PNG exists in the package, with the same bytes
    assert all((REAL_STAMPS / r).read_bytes() == (dest / r).read_bytes() for r in rels[::25])
    items = open_gallery(dest)
    assert len(items) == len(rels)
    with_desc = [it for it in items if it.metadata.get("description")]
    assert len(with_desc) >= 0.9 * len(items)
    assert all("=" not in it.metadata["description"].split(".")[0] for it in with_desc[:50])
    # labels are category paths: the folder of the file, an existing folder of the package
    for it in items:
        assert it.label == str(Path(it.id).parent.as_posix())
        assert (REAL_STAMPS / it.label).is_dir()
    tops = {it.label.split("/")[0] for it in items}
    assert {"animals", "food", "vehicles", "symbols"} <= tops
    marker = read_marker(dest)
    assert marker is not None and marker["n_images"] == len(rels)
    pool = stamp_pool(dest)
    assert 400 < len(pool) < len(rels)
    assert all(max(s.width, s.height) >= 64 for s in pool)
    assert (dest / "COPYRIGHT").is_file() or not stamps_mod.SYSTEM_COPYRIGHT.is_file()
    assert os.listdir(tmp_path) == ["stamps"]


def _fake_deb(tmp_path: Path, fake_source: Path) -> Path:
    """A tiny .deb laid out like tuxpaint-stamps-default (stamps, a sound file, the copyright)."""
    import shutil
    import subprocess

    root = tmp_path / "debroot"
    shutil.copytree(fake_source, root / "usr/share/tuxpaint/stamps")
    doc = root / "usr/share/doc/tuxpaint-stamps-default"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("Files: *\nLicense: GPL-2+\n", encoding="utf-8")
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text(
        "Package: tuxpaint-stamps-default\nVersion: 1.0-1\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: test\n", encoding="utf-8")
    deb = tmp_path / "tuxpaint-stamps-default_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)], check=True,
                   capture_output=True)
    return deb


@pytest.mark.skipif(shutil_which("dpkg-deb") is None or shutil_which("apt-get") is None,
                    reason="needs dpkg-deb and apt-get (Debian tools)")
def test_download_path_unpacks_only_stamps(fake_source: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    import subprocess

    deb = _fake_deb(tmp_path, fake_source)
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], cwd: Path | None = None, timeout: float = 0) -> subprocess.CompletedProcess:
        calls.append(cmd)
        if cmd[:2] == ["apt-get", "download"] and cwd is not None:
            shutil.copy(deb, cwd)
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.CompletedProcess(cmd, 100, "", "E: not allowed in tests")

    monkeypatch.setattr(stamps_mod, "SYSTEM_STAMPS_DIR", tmp_path / "nowhere")
    monkeypatch.setattr(stamps_mod, "_run", fake_run)
    dest = tmp_path / "data" / "stamps"
    assert prepare_stamps(dest, progress=False) == dest
    assert calls[0][:2] == ["apt-get", "download"]
    assert _pngs(dest) == ["animals/birds/robin.png", "food/fruit/apple.png", "food/pear.png"]
    assert (dest / "COPYRIGHT").read_text(encoding="utf-8").startswith("Files: *")
    assert read_marker(dest)["source"] == "apt-get download tuxpaint-stamps-default"
    # the download folder is gone, only the gallery remains
    assert sorted(p.name for p in dest.parent.iterdir()) == ["stamps"]
