"""Generated scenes: determinism, box geometry, object reuse, manifest format, variants, idempotency, fallback."""

from __future__ import annotations

import csv
import itertools
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simx.data import load_image, open_gallery
from simx.demo import DEMO_GALLERIES, prepare_demo_galleries
from simx.demo import scenes as scenes_mod
from simx.demo.scenes import MANIFEST_COLUMNS, generate_scenes, generate_shape_stamps, plan_scenes
from simx.demo.stamps import MARKER_NAME, read_marker
from simx.demo.textures import FILL_TEXTURES, PALETTE, SHAPES, SIZE_CLASSES

REAL_STAMPS = Path("/usr/share/tuxpaint/stamps")
SIZE = 160  # small scenes keep the tests fast; geometry rules are relative to the size


def _rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _iou(a: dict, b: dict) -> float:
    ix = max(0, min(a["x1"], b["x1"]) - max(a["x0"], b["x0"]))
    iy = max(0, min(a["y1"], b["y1"]) - max(a["y0"], b["y0"]))
    inter = ix * iy
    area = lambda r: (r["x1"] - r["x0"]) * (r["y1"] - r["y0"])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.fixture(scope="module")
def procedural(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_scenes(tmp_path_factory.mktemp("proc") / "scenes", n=24, size=SIZE, seed=3, progress=False)


@pytest.fixture(scope="module")
def shortcut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_scenes(tmp_path_factory.mktemp("short") / "shortcut", n=24, size=SIZE, seed=3,
                           variant="shortcut", progress=False)


def test_manifest_columns_and_gallery_parsing(procedural: Path) -> None:
    assert procedural.name == "manifest.csv"
    with open(procedural, newline="", encoding="utf-8") as fh:
        assert tuple(next(csv.reader(fh))) == MANIFEST_COLUMNS
    items = open_gallery(procedural)
    assert [it.id for it in items] == [f"scene_{i:04d}" for i in range(24)]
    for it in items:
        assert Path(it.path).is_file()
        img = load_image(it.path)
        assert img.size == (SIZE, SIZE)
        assert it.metadata["n_objects"] == len(it.boxes) and len(it.boxes) in (2, 3)
        assert it.metadata["source"] == "procedural" and it.metadata["seed"] == 3
        # label = category of the largest box
        largest = max(it.boxes, key=lambda b: (b["x1"] - b["x0"]) * (b["y1"] - b["y0"]))
        assert it.label == largest["category"]
        # labels = every object's category, the largest first: a neighbour sharing one is a correct match
        assert it.labels[0] == it.label and set(it.labels) == {b["category"] for b in it.boxes}
        assert len(it.labels) == len(set(it.labels))
        # every category, leaf and procedural attribute of every box is listed in the attributes
        for b in it.boxes:
            assert isinstance(b["x0"], float)
            expected = {b["category"], b["leaf"], f"shape:{b['shape']}", f"colour:{b['colour']}",
                        f"texture:{b['texture']}", f"size:{b['size']}"}
            assert expected <= set(it.attributes)
        assert it.attributes == sorted(set(it.attributes))
    counts = Counter(len(it.boxes) for it in items)
    assert counts == {2: 12, 3: 12}


def test_boxes_inside_scaled_and_nearly_disjoint(procedural: Path, shortcut: Path) -> None:
    for manifest in (procedural, shortcut):
        for it in open_gallery(manifest):
            for b in it.boxes:
                assert 0 <= b["x0"] < b["x1"] <= SIZE and 0 <= b["y0"] < b["y1"] <= SIZE
                longest = max(b["x1"] - b["x0"], b["y1"] - b["y0"])
                lo, hi = SIZE_CLASSES[b["size"]]
                assert lo * SIZE - 2 <= longest <= hi * SIZE + 1
            for a, b in itertools.combinations(it.boxes, 2):
                assert _iou(a, b) < 0.1


def test_boxes_are_tight_around_visible_objects(procedural: Path) -> None:
    """A solid object's centre shows its exact palette colour: objects are drawn where their boxes say."""
    checked = 0
    for it in open_gallery(procedural):
        img = np.asarray(Image.open(it.path).convert("RGB"), dtype=np.int32)
        for b in it.boxes:
            others = [o for o in it.boxes if o is not b]
            cx, cy = int((b["x0"] + b["x1"]) // 2), int((b["y0"] + b["y1"]) // 2)
            if b["texture"] != "solid" or b["shape"] == "ring":
                continue
            if any(o["x0"] - 2 <= cx < o["x1"] + 2 and o["y0"] - 2 <= cy < o["y1"] + 2 for o in others):
                continue
            assert np.abs(img[cy, cx] - np.array(PALETTE[b["colour"]])).max() <= 3
            checked += 1
    assert checked >= 3


def test_every_scene_shares_an_exact_object(procedural: Path, shortcut: Path) -> None:
    for manifest in (procedural, shortcut):
        stamps = [[b["stamp"] for b in it.boxes] for it in open_gallery(manifest)]
        for i, mine in enumerate(stamps):
            assert len(set(mine)) == len(mine), "an object appears twice in one scene"
            assert any(set(mine) & set(other) for j, other in enumerate(stamps) if j != i), f"scene {i} shares nothing"


def test_plan_invariant_holds_for_many_sizes() -> None:
    for n, pool in [(2, 4), (3, 4), (7, 5), (50, 6), (101, 1000), (300, 543)]:
        plan = plan_scenes(np.random.default_rng(n), n, pool)
        assert len(plan) == n
        use = Counter(j for s in plan for j in s)
        assert sum(v == 1 for v in use.values()) <= (1 if n == 2 else 0)
        for i, mine in enumerate(plan):
            assert any(set(mine) & set(other) for j, other in enumerate(plan) if j != i)
        assert all(len(set(s)) == len(s) and len(s) in (2, 3) for s in plan)
        assert all(0 <= j < pool for s in plan for j in s)
    with pytest.raises(ValueError):
        plan_scenes(np.random.default_rng(0), 1, 10)


def test_procedural_objects_are_consistent(procedural: Path) -> None:
    for it in open_gallery(procedural):
        for b in it.boxes:
            assert b["shape"] in SHAPES and b["colour"] in PALETTE and b["texture"] in FILL_TEXTURES
            assert b["stamp"] == f"{b['shape']}-{b['colour']}-{b['texture']}-{b['size']}"
            assert (b["category"], b["leaf"], b["label"]) == (b["shape"], f"{b['shape']}/{b['colour']}", b["shape"])


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = generate_scenes(tmp_path / "a", n=12, size=SIZE, seed=7, progress=False)
    b = generate_scenes(tmp_path / "b", n=12, size=SIZE, seed=7, progress=False)
    c = generate_scenes(tmp_path / "c", n=12, size=SIZE, seed=8, progress=False)
    assert a.read_bytes() == b.read_bytes()
    for p in sorted(a.parent.glob("scene_*.png")):
        assert p.read_bytes() == (b.parent / p.name).read_bytes()
    assert a.read_text() != c.read_text()
    assert (a.parent / "scene_0000.png").read_bytes() != (c.parent / "scene_0000.png").read_bytes()


def test_idempotent_and_rebuilt_on_new_parameters(tmp_path: Path) -> None:
    dest = tmp_path / "scenes"
    manifest = generate_scenes(dest, n=8, size=SIZE, seed=1, progress=False)
    files = sorted(dest.iterdir())
    before = {p: p.stat().st_mtime_ns for p in files}
    assert generate_scenes(dest, n=8, size=SIZE, seed=1, progress=False) == manifest
    assert {p: p.stat().st_mtime_ns for p in sorted(dest.iterdir())} == before
    # other parameters rebuild in place (atomically) and the marker records them
    generate_scenes(dest, n=10, size=SIZE, seed=1, progress=False)
    assert len(_rows(manifest)) == 10
    marker = read_marker(dest)
    assert marker is not None and marker["params"]["n"] == 10 and marker["params"]["variant"] == "plain"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scenes"]


def test_failed_rebuild_keeps_previous_gallery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "scenes"
    manifest = generate_scenes(dest, n=6, size=SIZE, seed=1, progress=False)
    old = manifest.read_bytes()
    calls = {"n": 0}
    real = scenes_mod._png_bytes

    def flaky(img: np.ndarray) -> bytes:
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError("disk full")
        return real(img)

    monkeypatch.setattr(scenes_mod, "_png_bytes", flaky)
    with pytest.raises(OSError):
        generate_scenes(dest, n=6, size=SIZE, seed=2, progress=False)
    assert manifest.read_bytes() == old
    assert (dest / MARKER_NAME).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scenes"]


def test_shortcut_backgrounds_repeat_and_dominate(procedural: Path, shortcut: Path) -> None:
    plain_items = open_gallery(procedural)
    assert len({it.metadata["background"] for it in plain_items}) == len(plain_items)
    assert all(it.metadata["background"].startswith("plain-") for it in plain_items)
    items = open_gallery(shortcut)
    counts = Counter(it.metadata["background"] for it in items)
    assert counts == {f"texture-{k}": 3 for k in range(8)}
    # texture dominates: by a plain colour histogram, the nearest other scene has the same background
    feats = []
    for it in items:
        q = np.asarray(Image.open(it.path).convert("RGB"), dtype=np.int64) // 64
        h = np.bincount((q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).ravel(), minlength=64).astype(float)
        feats.append(h / np.linalg.norm(h))
    f = np.stack(feats)
    sim = f @ f.T
    np.fill_diagonal(sim, -1)
    nn = sim.argmax(1)
    same = np.mean([items[i].metadata["background"] == items[j].metadata["background"] for i, j in enumerate(nn)])
    assert same >= 0.9


def test_no_usable_stamps_falls_back_to_procedural(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    empty = tmp_path / "no-stamps"
    empty.mkdir()
    with caplog.at_level(logging.WARNING, logger="simx.demo.scenes"):
        manifest = generate_scenes(tmp_path / "s", n=4, size=SIZE, stamps_dir=empty, progress=False)
    assert "procedural" in caplog.text
    assert {r["source"] for r in _rows(manifest)} == {"procedural"}


def test_shape_stamps_gallery_and_as_scene_objects(tmp_path: Path) -> None:
    folder = generate_shape_stamps(tmp_path / "shapes", side=64, progress=False)
    items = open_gallery(folder)
    assert len(items) == len(SHAPES) * len(PALETTE) * len(FILL_TEXTURES)
    for it in items[::17]:
        shape, colour = it.label.split("/")
        assert shape in SHAPES and colour in PALETTE
        assert colour in it.metadata["description"] and shape in it.metadata["description"]
    with Image.open(items[0].path) as im:
        assert im.mode == "RGBA" and im.getextrema()[3][0] == 0  # transparent ground, like a stamp
    manifest = generate_scenes(tmp_path / "s", n=6, size=SIZE, stamps_dir=folder, progress=False)
    rows = _rows(manifest)
    assert {r["source"] for r in rows} == {"stamps"}
    boxes = [b for r in rows for b in json.loads(r["boxes"])]
    assert all(b["leaf"] == "/".join(b["stamp"].split("/")[:2]) for b in boxes)


@pytest.mark.skipif(not REAL_STAMPS.is_dir(), reason="tuxpaint-stamps-default not installed "
                    "(sudo apt-get install tuxpaint-stamps-default)")
def test_scenes_from_real_stamps(tmp_path: Path) -> None:
    manifest = generate_scenes(tmp_path / "s", n=16, size=SIZE, seed=5, stamps_dir=REAL_STAMPS, progress=False)
    items = open_gallery(manifest)
    for it in items:
        assert it.metadata["source"] == "stamps"
        for b in it.boxes:
            assert (REAL_STAMPS / f"{b['stamp']}.png").is_file()
            assert not b["stamp"].startswith("symbols/alphabets") and "_mirror" not in b["stamp"]
            assert b["leaf"] == str(Path(b["stamp"]).parent.as_posix())
            assert b["category"] == b["leaf"].split("/")[0] == b["label"]
            assert {b["category"], b["leaf"]} <= set(it.attributes)
            assert 0.3 * SIZE - 3 <= max(b["x1"] - b["x0"], b["y1"] - b["y0"]) <= 0.5 * SIZE + 1
        assert not any(":" in a for a in it.attributes)
    assert sum(1 for it in items for b in it.boxes if b.get("description")) >= 0.8 * sum(len(it.boxes) for it in items)


def test_prepare_demo_galleries_without_stamps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    import simx.demo as demo

    monkeypatch.setattr(demo, "prepare_stamps", lambda dest, progress=True: None)
    with caplog.at_level(logging.WARNING, logger="simx.demo"):
        out = prepare_demo_galleries(tmp_path, n_scenes=4, progress=False)
    assert set(out) == set(DEMO_GALLERIES) == {"stamps", "scenes", "shortcut"}
    assert "apt-get install tuxpaint-stamps-default" in caplog.text
    assert out["stamps"].is_dir() and out["stamps"].name == "shapes"
    assert out["scenes"] == tmp_path / "scenes" / "manifest.csv"
    assert out["shortcut"] == tmp_path / "shortcut" / "manifest.csv"
    for path in out.values():
        assert len(open_gallery(path)) >= 4
    assert {r["background"][:8] for r in _rows(out["shortcut"])} == {"texture-"}
    with pytest.raises(ValueError):
        prepare_demo_galleries(tmp_path, which=("nope",))


@pytest.mark.skipif(not REAL_STAMPS.is_dir(), reason="tuxpaint-stamps-default not installed "
                    "(sudo apt-get install tuxpaint-stamps-default)")
def test_prepare_demo_galleries_with_real_stamps(tmp_path: Path) -> None:
    out = prepare_demo_galleries(tmp_path, which=("scenes", "stamps"), n_scenes=4, progress=False)
    assert out == {"stamps": tmp_path / "stamps", "scenes": tmp_path / "scenes" / "manifest.csv"}
    assert read_marker(out["stamps"])["kind"] == "tuxpaint-stamps"
    assert {r["source"] for r in _rows(out["scenes"])} == {"stamps"}
    assert not (tmp_path / "shortcut").exists() and not (tmp_path / "shapes").exists()
