"""``simx demo`` through the top-level entry point: the first run builds, the second only checks fingerprints, and a
changed gallery file is brought up to date."""

from __future__ import annotations

import json

from simx.cli import main
from simx.index import open_index

TOY = "python:simx.models.toy:tiny_linear"


def test_demo_builds_then_is_idempotent(tmp_path, capsys):
    argv = ["demo", "scenes", "--scenes", "6", "--model", TOY, "--data", str(tmp_path / "data"),
            "--root", str(tmp_path / "idx"), "-q"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert first.startswith("scenes") and " built " in first and "6 images embedded" in first
    index = open_index("scenes", root=tmp_path / "idx")
    meta_before = json.loads((index.path / "meta.json").read_text())
    assert len(index) == 6 and meta_before["model"]["spec"] == TOY

    assert main(argv) == 0
    second = capsys.readouterr().out
    assert "up to date" in second
    assert json.loads((index.path / "meta.json").read_text())["built_at"] == meta_before["built_at"]

    # a scene file changes: the next run re-embeds only that one
    item = index.items[0]
    from PIL import Image

    img = Image.open(item.path).convert("RGB")
    img.paste((0, 0, 0), (0, 0, 40, 40))
    img.save(item.path)
    assert main(argv) == 0
    third = capsys.readouterr().out
    assert "updated" in third
    meta = json.loads((open_index("scenes", root=tmp_path / "idx").path / "meta.json").read_text())
    assert meta["update"]["embedded"] == 1 and meta["update"]["reused"] == 5
