"""Attribute vocabularies: syntax, the folder hierarchy, manifests, errors and the ImageNet grouping."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simx.attributes import (AttributeSyntaxError, EmptyVocabularyError, Vocabulary, expand_attribute,
                             imagenet_vocabulary, validate_attribute, vocabulary_from_folder, vocabulary_from_items,
                             vocabulary_from_manifest)
from simx.attributes.vocab import AttributeVocabularyError, imagenet_group
from simx.data import open_gallery
from simx.errors import GalleryError, SimxError


def _png(path: Path, colour=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)


def _manifest(folder: Path, rows: list[dict[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for r in rows:
        _png(folder / r["path"])
    with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return folder / "manifest.csv"


@pytest.mark.parametrize("name", ["animals", "animals/birds", "shape:star", "colour:red/dark", "jack-o'-lantern",
                                  "objects/kitchenware and containers", "maillot (639)", "size:small", "Ünïcode/é"])
def test_valid_attribute_names_are_accepted(name):
    assert validate_attribute(name) == name


@pytest.mark.parametrize("name,fragment", [
    ("", "empty"), ("   ", "empty"), (" red", "spaces"), ("a//b", "empty path segment"), ("/a", "empty path segment"),
    ("a/", "empty path segment"), ("a;b", "';'"), ("a,b", "','"), ('"a"', "'\"'"), ("a:b:c", "at most one ':'"),
    ("Shape:x", "key 'Shape'"), ("colour:", "empty path segment"), (":red", "key ''"), ("a\tb", "control"),
    ("a/../b", "'..'"), ("a  b", "single inner spaces"), ("x" * 65, "longer than 64"), ("sh@pe", "'@'"),
])
def test_malformed_attribute_names_are_refused_with_the_rule(name, fragment):
    with pytest.raises(AttributeSyntaxError) as info:
        validate_attribute(name)
    assert fragment in str(info.value)
    assert isinstance(info.value, GalleryError) and isinstance(info.value, SimxError)


def test_every_level_of_a_path_is_an_attribute():
    assert expand_attribute("animals/birds/owls") == ["animals", "animals/birds", "animals/birds/owls"]
    assert expand_attribute("colour:red/dark") == ["colour:red", "colour:red/dark"]
    assert expand_attribute("food") == ["food"]


def test_vocabulary_from_the_folder_hierarchy(tmp_path):
    for rel in ("animals/birds/a.png", "animals/birds/b.png", "animals/mammals/c.png", "food/d.png", "e.png"):
        _png(tmp_path / "g" / rel)
    vocab = vocabulary_from_folder(tmp_path / "g")
    assert vocab.names == ["animals", "animals/birds", "animals/mammals", "food"]
    assert dict(zip(vocab.names, vocab.counts)) == {"animals": 3, "animals/birds": 2, "animals/mammals": 1, "food": 1}
    items = open_gallery(tmp_path / "g")
    y = vocab.targets(items)
    by_id = {it.id: y[i] for i, it in enumerate(items)}
    assert by_id["animals/birds/a.png"].tolist() == [1, 1, 0, 0]
    assert by_id["animals/mammals/c.png"].tolist() == [1, 0, 1, 0]
    assert by_id["e.png"].sum() == 0  # an unlabelled image carries nothing
    assert vocab.parent("animals/birds") == "animals" and vocab.parent("animals") is None


def test_vocabulary_from_a_manifest_merges_attributes_and_labels(tmp_path):
    m = _manifest(tmp_path / "m", [
        {"path": "a.png", "label": "animals/birds", "attributes": "colour:red;shape:star"},
        {"path": "b.png", "label": "animals/mammals", "attributes": "colour:red;shape:circle"},
        {"path": "c.png", "label": "food", "attributes": "colour:blue/dark"},
    ])
    vocab = vocabulary_from_manifest(m)
    assert set(vocab.names) == {"animals", "animals/birds", "animals/mammals", "food", "colour:red", "shape:star",
                                "shape:circle", "colour:blue", "colour:blue/dark"}
    assert vocab.counts[vocab.index("colour:red")] == 2
    # min_count drops rare attributes but keeps shared ones
    assert vocabulary_from_manifest(m, min_count=2).names == ["animals", "colour:red"]
    with pytest.raises(AttributeVocabularyError, match="not in the vocabulary"):
        vocab.index("shape:hexagon")


def test_unknown_attribute_syntax_in_a_manifest_names_the_item(tmp_path):
    m = _manifest(tmp_path / "bad", [
        {"id": "ok", "path": "a.png", "attributes": "colour:red"},
        {"id": "broken-row", "path": "b.png", "attributes": "colour:red;sh@pe:star"},
    ])
    with pytest.raises(AttributeSyntaxError) as info:
        vocabulary_from_manifest(m)
    assert "broken-row" in str(info.value) and "sh@pe:star" in str(info.value)


def test_a_bad_label_path_is_refused_too(tmp_path):
    m = _manifest(tmp_path / "badlabel", [{"id": "x", "path": "a.png", "label": "animals//birds"}])
    with pytest.raises(AttributeSyntaxError, match="item 'x': label"):
        vocabulary_from_manifest(m)


def test_an_empty_vocabulary_is_a_clear_error(tmp_path):
    m = _manifest(tmp_path / "none", [{"path": "a.png", "other": "1"}, {"path": "b.png", "other": "2"}])
    with pytest.raises(EmptyVocabularyError, match="no item carries any attribute"):
        vocabulary_from_manifest(m)
    m2 = _manifest(tmp_path / "rare", [{"path": "a.png", "attributes": "colour:red"},
                                       {"path": "b.png", "attributes": "colour:blue"}])
    with pytest.raises(EmptyVocabularyError, match="none carried by at least 2"):
        vocabulary_from_manifest(m2, min_count=2)
    with pytest.raises(EmptyVocabularyError):
        vocabulary_from_items([])


def test_vocabulary_json_round_trip_and_versioning(tmp_path):
    vocab = Vocabulary(names=["a", "a/b", "k:v"], counts=[3, 1, 2])
    vocab.save(tmp_path / "v.json")
    back = Vocabulary.load(tmp_path / "v.json")
    assert back.names == vocab.names and back.counts == vocab.counts
    (tmp_path / "old.json").write_text('{"format": 99, "names": ["a"]}')
    with pytest.raises(AttributeVocabularyError, match="format 99"):
        Vocabulary.load(tmp_path / "old.json")
    (tmp_path / "bad.json").write_text('{"format": 1, "names": ["a;b"]}')
    with pytest.raises(AttributeSyntaxError):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(AttributeVocabularyError, match="duplicate"):
        Vocabulary(names=["a", "a"])


def test_imagenet_vocabulary_groups_the_classes():
    vocab = imagenet_vocabulary()
    leaves = [n for n in vocab.names if len(vocab.members[n]) == 1 and n.count("/") >= 1]
    covered = sorted({vocab.members[n][0] for n in leaves})
    assert covered == list(range(1000))  # every class is one leaf attribute
    for n in vocab.names:
        validate_attribute(n)
    golden = next(n for n in vocab.names if n.endswith("/golden retriever"))
    assert golden == "animals/mammals/dogs/golden retriever"
    assert imagenet_group(963) == "food/dishes and drinks" and imagenet_group(950) == "food/fruit and vegetables"
    from simx.attributes.vocab import _imagenet_names

    names, glosses = _imagenet_names()
    for idx, group in ((817, "objects/vehicles"), (407, "objects/vehicles"), (889, "objects/musical instruments"),
                       (834, "objects/clothing and accessories"), (497, "objects/buildings and structures")):
        assert imagenet_group(idx, names[idx], glosses[idx]) == group, names[idx]
    # a group pools exactly the classes of the leaves under it
    for g in ("animals", "animals/mammals/dogs", "objects/vehicles", "food"):
        under = {vocab.members[n][0] for n in leaves if n.startswith(g + "/")}
        assert set(vocab.members[g]) == under
    assert len(vocab.members["animals/mammals/dogs"]) == 118
    assert np.all(np.asarray(vocab.counts) >= 1)
