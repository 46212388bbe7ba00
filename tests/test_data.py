"""Safe image loading and gallery reading, on real files written to a temporary folder."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from simx.data import load_image, open_gallery, read_manifest, records_to_items, items_to_records
from simx.errors import GalleryError, ImageLoadError


def _png_header_only(path, width, height):
    """A tiny PNG whose header claims width x height (a decompression-bomb header)."""
    sig = b"\x89PNG\r\n\x1a\n"
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    path.write_bytes(sig + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def test_rgba_composited_on_white(tmp_path):
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[..., 0] = 255
    arr[:4, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    img = np.asarray(load_image(tmp_path / "a.png"))
    assert img.shape == (8, 8, 3)
    assert tuple(img[0, 0]) == (255, 0, 0)
    assert tuple(img[7, 7]) == (255, 255, 255)


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (6, 6), 0)
    img.putpalette([0, 0, 255] + [10, 200, 10] * 255)
    img.putpixel((0, 0), 1)
    img.info["transparency"] = 0
    img.save(tmp_path / "p.png", transparency=0)
    out = np.asarray(load_image(tmp_path / "p.png"))
    assert tuple(out[3, 3]) == (255, 255, 255)  # transparent palette entry -> white
    assert tuple(out[0, 0]) == (10, 200, 10)


def test_la_grey_16bit_and_cmyk(tmp_path):
    Image.fromarray(np.full((5, 5, 2), [80, 255], np.uint8), "LA").save(tmp_path / "la.png")
    assert tuple(np.asarray(load_image(tmp_path / "la.png"))[0, 0]) == (80, 80, 80)
    Image.fromarray(np.full((5, 5), 65535, np.uint16)).save(tmp_path / "g16.png")
    g16 = np.asarray(load_image(tmp_path / "g16.png"))
    assert g16.shape == (5, 5, 3) and g16.max() == 255
    Image.new("CMYK", (7, 7), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    c = np.asarray(load_image(tmp_path / "c.jpg")).astype(int)
    assert c.shape == (7, 7, 3) and c[3, 3, 0] > 200 and c[3, 3, 1] < 60  # CMYK (0,1,1,0) is red


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255  # left half white, landscape
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    img.save(tmp_path / "r.jpg", exif=exif)
    out = load_image(tmp_path / "r.jpg")
    assert out.size == (10, 20)  # portrait after transpose


@pytest.mark.parametrize(
    "maker, reason",
    [
        (lambda p: p.write_text("not an image at all"), "not a readable image"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: _png_header_only(p, 20000, 20000), "too many pixels"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, maker, reason):
    p = tmp_path / "bad.jpg"
    maker(p)
    with pytest.raises(ImageLoadError, match=reason) as err:
        load_image(p)
    assert err.value.path == str(p)


def test_truncated_png_and_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="truncated|corrupt|readable"):
        load_image(tmp_path / "cut.png")
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    jpg = bytearray(buf.getvalue())
    jpg[len(jpg) // 2 : len(jpg) // 2 + 200] = b"\x00" * 200
    (tmp_path / "corrupt.jpg").write_bytes(bytes(jpg[: len(jpg) * 2 // 3]))
    with pytest.raises(ImageLoadError):
        load_image(tmp_path / "corrupt.jpg")


def test_missing_file_and_bytes_upload(tmp_path):
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "nope.png")
    buf = io.BytesIO()
    Image.new("RGB", (3, 4), (1, 2, 3)).save(buf, "PNG")
    assert load_image(buf.getvalue()).size == (3, 4)


def test_pixel_cap_is_a_parameter(tmp_path):
    Image.new("RGB", (100, 100)).save(tmp_path / "x.png")
    with pytest.raises(ImageLoadError, match="too many pixels"):
        load_image(tmp_path / "x.png", max_pixels=5000)
    assert load_image(tmp_path / "x.png", max_pixels=10000).size == (100, 100)


def test_folder_gallery_labels_and_descriptions(tmp_path):
    (tmp_path / "animals" / "birds").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "animals" / "birds" / "tit.png")
    (tmp_path / "animals" / "birds" / "tit.txt").write_text("A blue tit.\nUn mésange.\n")
    Image.new("RGB", (4, 4)).save(tmp_path / "top.png")
    items = {it.id: it for it in open_gallery(tmp_path)}
    assert items["animals/birds/tit.png"].label == "animals/birds"
    assert items["animals/birds/tit.png"].metadata["description"] == "A blue tit."
    assert items["top.png"].label is None


def test_manifest_csv_and_parquet(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    rows = [
        {"path": "a.png", "label": "cat", "attributes": "striped; furry", "boxes": json.dumps([{"x0": 1, "y0": 1, "x1": 3, "y1": 3, "label": "cat"}]), "source": "x"},
        {"path": "missing.png", "label": None, "attributes": None, "boxes": None, "source": "y"},
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "m.parquet")
    for name in ("m.csv", "m.parquet"):
        items = read_manifest(tmp_path / name)
        assert [i.id for i in items] == ["a.png", "missing.png"]
        assert items[0].attributes == ["striped", "furry"]
        assert items[0].boxes[0]["x1"] == 3.0 and items[0].boxes[0]["label"] == "cat"
        assert items[0].metadata == {"source": "x"}
        assert items[1].label is None and items[1].attributes == []
        # round trip through the index manifest records
        again = records_to_items(items_to_records(items))
        assert again[0].boxes == items[0].boxes and again[0].attributes == items[0].attributes


def test_bad_manifests(tmp_path):
    pd.DataFrame({"file": ["a.png"]}).to_csv(tmp_path / "nopath.csv", index=False)
    with pytest.raises(GalleryError, match="no 'path' column"):
        read_manifest(tmp_path / "nopath.csv")
    pd.DataFrame({"path": ["a.png"], "boxes": ["{not json"]}).to_csv(tmp_path / "badbox.csv", index=False)
    with pytest.raises(GalleryError, match="not valid JSON"):
        read_manifest(tmp_path / "badbox.csv")
    pd.DataFrame({"path": ["a.png", "b.png"], "id": ["x", "x"]}).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(GalleryError, match="duplicate id"):
        read_manifest(tmp_path / "dup.csv")
    with pytest.raises(GalleryError, match="not found"):
        open_gallery(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GalleryError, match="no images"):
        open_gallery(tmp_path / "empty")


def test_upload_cap_refuses_a_1_bit_bomb_from_its_header():
    """7900 x 7900 1-bit PNG: a few KB on disk, ~250 MB decoded (1 byte per pixel, then RGB). Refused before any
    pixel is decoded, well under the gallery's pixel cap that it passes."""
    import io
    import tracemalloc

    from PIL import Image

    from simx.data import MAX_PIXELS, MAX_UPLOAD_DECODED_BYTES, decoded_bytes, load_upload
    from simx.errors import ImageLoadError

    buf = io.BytesIO()
    Image.new("1", (7900, 7900)).save(buf, format="PNG")
    bomb = buf.getvalue()
    assert len(bomb) < 20_000 and 7900 * 7900 < MAX_PIXELS
    assert decoded_bytes(7900, 7900, "1") == 7900 * 7900 * 4 > MAX_UPLOAD_DECODED_BYTES
    assert MAX_UPLOAD_DECODED_BYTES < MAX_PIXELS * 3  # below the gallery's cap
    tracemalloc.start()
    try:
        with pytest.raises(ImageLoadError, match=r"too large: 7900 x 7900 pixels would take 238 MB decoded"):
            load_upload(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20  # nothing was decoded
    small = io.BytesIO()
    Image.new("RGB", (640, 480), (10, 20, 30)).save(small, format="JPEG")
    assert load_upload(small.getvalue()).size == (640, 480)


def test_upload_svg_is_refused_with_its_own_message():
    from simx.data import load_upload
    from simx.errors import ImageLoadError

    for svg in (b'<svg xmlns="http://www.w3.org/2000/svg"/>', b'<?xml version="1.0"?>\n<svg width="4"/>'):
        with pytest.raises(ImageLoadError, match="SVG"):
            load_upload(svg)
