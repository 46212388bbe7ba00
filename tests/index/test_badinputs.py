"""Bad and unusual files on disk: a build embeds every usable one and lists the others with their reason."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from simx.cli import main
from simx.data import load_image
from simx.errors import ImageLoadError
from simx.index import build_index, open_index

from .conftest import TINY, draw


def _noise(size: int = 64, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png_header(width: int = 20000, height: int = 20000) -> bytes:
    """A 100-byte PNG whose IHDR claims width x height RGB pixels (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


def write_bad_files(folder: Path) -> dict[str, str | None]:
    """Write every awkward case into ``folder``; returns file name -> expected reason fragment (None = usable)."""
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str | None] = {}
    for i in range(3):
        draw((30, 160, 50), i).save(folder / f"good{i}.png")
        expected[f"good{i}.png"] = None

    buf = io.BytesIO()
    _noise().save(buf, "JPEG")
    jpg = buf.getvalue()
    garbage = np.random.default_rng(1).integers(0, 255, len(jpg) - 300, dtype=np.uint8).tobytes()
    (folder / "corrupt.jpg").write_bytes(jpg[:300] + garbage)  # valid header, scrambled entropy-coded data
    expected["corrupt.jpg"] = "corrupt"

    buf = io.BytesIO()
    _noise(seed=2).save(buf, "PNG")
    png = buf.getvalue()
    (folder / "truncated.png").write_bytes(png[: int(len(png) * 0.6)])
    expected["truncated.png"] = "truncated"

    (folder / "huge.png").write_bytes(huge_png_header())
    expected["huge.png"] = "too many pixels"

    (folder / "notes.jpg").write_text("this is a text file, not a JPEG\n")
    expected["notes.jpg"] = "not a readable image"

    (folder / "empty.png").write_bytes(b"")
    expected["empty.png"] = "empty file"

    Image.new("CMYK", (60, 50), (0, 255, 255, 0)).save(folder / "cmyk.jpg", "JPEG")  # red in CMYK
    expected["cmyk.jpg"] = None

    grey16 = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    Image.fromarray(grey16).save(folder / "grey16.png")
    expected["grey16.png"] = None

    pal = Image.new("P", (56, 56), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(1, (10, 10, 40, 40))
    pal.save(folder / "palette.png", transparency=0)  # red background fully transparent, blue square opaque
    expected["palette.png"] = None
    return expected


def test_load_image_on_awkward_files(tmp_path):
    expected = write_bad_files(tmp_path)
    for name, fragment in expected.items():
        if fragment is None:
            img = load_image(tmp_path / name)
            assert img.mode == "RGB" and min(img.size) >= 48
        else:
            with pytest.raises(ImageLoadError, match=fragment):
                load_image(tmp_path / name)
    assert np.asarray(load_image(tmp_path / "cmyk.jpg"))[25, 30].tolist()[0] > 200  # CMYK red stays red
    grey = np.asarray(load_image(tmp_path / "grey16.png"))
    assert grey[0, 0, 0] < 5 and grey[-1, -1, 0] > 250  # 16 bits scaled to the full 8-bit range
    pal = np.asarray(load_image(tmp_path / "palette.png"))
    assert pal[0, 0].tolist() == [255, 255, 255]  # transparent composited on white
    assert pal[20, 20].tolist() == [0, 0, 255]


def test_pixel_cap_rejects_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(huge_png_header())
    assert path.stat().st_size < 200
    t0 = time.perf_counter()
    with pytest.raises(ImageLoadError, match="too many pixels"):
        load_image(path)
    assert time.perf_counter() - t0 < 1.0  # 400 M pixels were never allocated
    path.write_bytes(huge_png_header(9000, 9000))  # 81 M: under Pillow's bomb limit, over simx's 64 M cap
    with pytest.raises(ImageLoadError, match=r"too many pixels \(9000x9000"):
        load_image(path)


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    img = Image.new("RGB", (60, 40), (220, 20, 20))
    img.paste((20, 20, 220), (30, 0, 60, 40))  # stored: left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "rotated.jpg", "JPEG", exif=exif.tobytes(), quality=95)
    out = load_image(tmp_path / "rotated.jpg")
    assert out.size == (40, 60)  # portrait once upright
    arr = np.asarray(out).astype(int)
    assert arr[5, 20, 0] > 180 and arr[5, 20, 2] < 80  # the stored left (red) is now the top
    assert arr[55, 20, 2] > 180 and arr[55, 20, 0] < 80  # the stored right (blue) is now the bottom


def test_build_skips_bad_files_from_a_manifest(tmp_path, root):
    folder = tmp_path / "files"
    expected = write_bad_files(folder)
    rows = [{"path": name, "label": "ok" if frag is None else "bad"} for name, frag in expected.items()]
    rows.append({"path": "gone/missing.png", "label": "bad"})
    expected["missing.png"] = "file not found"
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)

    res = build_index(folder / "manifest.csv", "bad", model=TINY, root=root, workers=0, progress=False)
    good = sorted(n for n, f in expected.items() if f is None)
    bad = {n: f for n, f in expected.items() if f is not None}
    assert res.meta["counts"] == {"images": len(expected), "embedded": len(good), "skipped": len(bad)}
    index = open_index("bad", root=root)
    assert sorted(index.ids) == good
    assert np.isfinite(np.asarray(index.embeddings)).all()
    skipped = {Path(s["path"]).name: s["reason"] for s in index.meta["skipped"]}
    assert set(skipped) == set(bad)
    for name, fragment in bad.items():
        assert fragment in skipped[name], (name, skipped[name])
    summary = res.summary()
    for name in bad:
        assert name in summary


def test_folder_build_with_workers_skips_the_same_files(tmp_path, root):
    folder = tmp_path / "gal"
    expected = write_bad_files(folder / "mixed")
    res = build_index(folder, "w2", model=TINY, root=root, workers=2, batch_size=4, progress=False)
    assert sorted(Path(s["path"]).name for s in res.skipped) == sorted(n for n, f in expected.items() if f)
    assert res.meta["build"]["workers"] == 2


def test_cli_build_summary_lists_skipped_files(tmp_path, root, capsys):
    folder = tmp_path / "gal"
    expected = write_bad_files(folder / "mixed")
    code = main(["index", "build", str(folder), "--name", "cli", "--model", TINY, "--root", str(root),
                 "--workers", "0"])
    out, err = capsys.readouterr()
    assert code == 0
    good = sum(1 for f in expected.values() if f is None)
    assert f"{good} of {len(expected)} images indexed, {len(expected) - good} skipped" in out
    for name, fragment in expected.items():
        if fragment is not None:
            assert any(name in line and fragment in line for line in out.splitlines()), name
    assert "Traceback" not in err


def test_all_files_bad_is_a_clear_error(tmp_path, root, capsys):
    folder = tmp_path / "allbad"
    folder.mkdir()
    (folder / "a.jpg").write_text("nope")
    (folder / "b.png").write_bytes(b"")
    code = main(["index", "build", str(folder), "--name", "x", "--model", TINY, "--root", str(root),
                 "--workers", "0"])
    assert code == 1  # a runtime error (bad data), not a usage error
    err = capsys.readouterr().err
    assert err.startswith("error: no image of ") and "2 skipped" in err and "Traceback" not in err
    assert not (root / "x").exists() and list(root.iterdir()) == []


def test_things_named_like_images_that_are_not_files(tmp_path, root):
    """A dangling symlink is reported as missing; a directory or a FIFO named x.png is never opened (reading a
    FIFO would block the build forever)."""
    import os

    folder = tmp_path / "gal"
    (folder / "a").mkdir(parents=True)
    draw((200, 30, 30), 0).save(folder / "a" / "ok.png")
    (folder / "a" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (folder / "a" / "dir.png").mkdir()
    os.mkfifo(folder / "a" / "pipe.png")
    res = build_index(folder, "odd", model=TINY, root=root, workers=0, progress=False)
    assert res.meta["counts"]["embedded"] == 1
    assert [(Path(s["path"]).name, s["reason"]) for s in res.skipped] == [("gone.png", "file not found")]
