"""``simx duplicates`` with the real default model on the demo scenes (issue 16): planted resized and re-encoded
copies of three scenes are grouped with their originals, no other pair of the gallery reaches the default
threshold, and ``--across`` reports the copies held in a second index as leaks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from simx.index import build_index, open_index
from simx.index import duplicates as dup
from tests.real_demo import private_copy

PLANTED = ("scene_0003", "scene_0017", "scene_0031")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The shared demo index (40 scenes, default model) in a private root, plus ``leaks``: a 75 % PNG copy of each
    planted scene (its own index, for --across), and ``scenes`` updated with those and a JPEG (quality 70) copy of
    each (only the 6 copies are embedded; the 40 scenes keep their vectors)."""
    root = private_copy(tmp_path_factory, "dups_real")
    scenes = open_index("scenes", root=root)
    folder = tmp_path_factory.mktemp("planted")
    rows = [{"id": it.id, "path": str(it.path), "label": it.label} for it in scenes.items]
    for sid in PLANTED:
        img = Image.open(scenes.item(sid).path).convert("RGB")
        img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.BICUBIC).save(folder / f"{sid}_small.png")
        img.save(folder / f"{sid}_jpeg.jpg", quality=70)
        label = scenes.item(sid).label
        rows += [{"id": f"{sid}_small", "path": str(folder / f"{sid}_small.png"), "label": label},
                 {"id": f"{sid}_jpeg", "path": str(folder / f"{sid}_jpeg.jpg"), "label": label}]
    leaks = folder / "leaks.csv"
    pd.DataFrame([r for r in rows if r["id"].endswith("_small")]).to_csv(leaks, index=False)
    record = scenes.meta["model"]
    build_index(leaks, "leaks", model=record["spec"], fit=record["preprocessing"]["fit"], root=root, workers=0,
                progress=False)
    manifest = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    res = build_index(manifest, "scenes", update=True, root=root, workers=0, progress=False)
    assert (res.meta["update"]["reused"], res.meta["update"]["embedded"]) == (40, 6)  # the scenes kept theirs
    return root


def test_planted_copies_are_found_and_no_distinct_scenes_pair(planted):
    index = open_index("scenes", root=planted)
    assert index.meta["model"]["spec"] == "default" and len(index) == 46
    res = dup.find_duplicates(index)
    assert res.threshold == dup.DEFAULT_THRESHOLD
    # exactly the planted groups: no pair of two different scenes reaches the threshold
    assert sorted(g["ids"] for g in res.groups) == [[sid, f"{sid}_jpeg", f"{sid}_small"] for sid in PLANTED]
    assert len(res.pairs) == 9 and (res.pairs["score"] >= dup.DEFAULT_THRESHOLD).all()
    # and the margin is real: the closest two distinct scenes stay clearly below the threshold
    e = index.embeddings
    distinct = [index.position(it.id) for it in index.items if not it.id.endswith(("_jpeg", "_small"))]
    sims = e[distinct] @ e[distinct].T
    sims[range(len(distinct)), range(len(distinct))] = -1
    assert float(sims.max()) < dup.DEFAULT_THRESHOLD - 0.02


def test_across_reports_the_planted_leaks(planted):
    leaks, scenes = open_index("leaks", root=planted), open_index("scenes", root=planted)
    res = dup.find_duplicates(leaks, other=scenes)
    assert res.leaked == [f"{sid}_small" for sid in PLANTED]
    assert sorted(zip(res.pairs["a"], res.pairs["b"])) == sorted(
        (f"{sid}_small", b) for sid in PLANTED for b in (sid, f"{sid}_jpeg", f"{sid}_small"))
