"""Indexes built with transformer plug-ins (issue 13): build, search, and text queries on a tiny OpenCLIP model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simx.cli import main
from simx.index import build_index, open_index

from .conftest import make_gallery

SPECS = ["python:simx.models.toy:tiny_vit_token", "python:simx.models.toy:tiny_vit_avg",
         "python:simx.models.toy:tiny_vit_reg", "python:simx.models.toy:tiny_swin",
         "python:simx.models.toy:tiny_openclip"]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    return make_gallery(tmp_path_factory.mktemp("tok") / "gallery", {"red": 3, "green": 3, "blue": 3})


@pytest.mark.parametrize("spec", SPECS)
def test_index_builds_and_searches(spec, gallery, tmp_path):
    build_index(gallery, "t", model=spec, root=tmp_path, workers=0, progress=False)
    index = open_index("t", root=tmp_path)
    assert len(index) == 9 and index.meta["model"]["layer"] == index.model.layer
    hits = index.search_id(index.ids[0], 4)
    assert len(hits) == 4 and index.ids[0] not in [h.id for h in hits]
    assert hits[0].score >= hits[-1].score


def test_text_search_returns_the_image_closest_to_the_text(gallery, tmp_path, capsys):
    build_index(gallery, "clip", model="python:simx.models.toy:tiny_openclip", root=tmp_path, workers=0,
                progress=False)
    index = open_index("clip", root=tmp_path)
    text = "a photo of a green square"
    vec = index.model.embed_texts([text])[0]
    scores = np.asarray(index.embeddings) @ vec
    hits = index.search_text(text, 3)
    assert hits[0].id == index.ids[int(np.argmax(scores))]
    np.testing.assert_allclose([h.score for h in hits], np.sort(scores)[::-1][:3], atol=1e-5)
    assert main(["search", "clip", "--text", text, "-k", "2", "--json", "--root", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query_type"] == "text" and out["neighbours"][0]["id"] == hits[0].id


def test_text_search_needs_a_text_tower_and_one_query(gallery, tmp_path, capsys):
    build_index(gallery, "vit", model="python:simx.models.toy:tiny_vit_token", root=tmp_path, workers=0,
                progress=False)
    assert main(["search", "vit", "--text", "a bus", "--root", str(tmp_path)]) == 1
    assert "no text tower" in capsys.readouterr().err
    assert main(["search", "vit", "--root", str(tmp_path)]) == 2
    assert "either IMAGE_OR_ID or --text" in capsys.readouterr().err


def test_index_at_another_input_size_reopens_with_it(gallery, tmp_path):
    """A 224 px checkpoint indexed at 64 px: position embeddings resampled at build and at every reopening."""
    import timm
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=0).state_dict(), tmp_path / "vit.pth")
    spec = f"timm:vit_tiny_patch16_224@{tmp_path / 'vit.pth'}"
    build_index(gallery, "small", model=spec, size=64, root=tmp_path, workers=0, progress=False)
    index = open_index("small", root=tmp_path)
    assert index.meta["model"]["preprocessing"]["size"] == 64 and index.model.input_size == (64, 64)
    with torch.inference_mode():
        assert index.model.features(torch.zeros(1, 3, 64, 64)).shape[-2:] == (4, 4)
    first = sorted(gallery.rglob("*.png"))[0]
    assert index.search_image(str(first), 1)[0].score == pytest.approx(1.0, abs=1e-4)
