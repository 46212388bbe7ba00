"""``simx attributes train|eval`` on a real (tiny) index."""

from __future__ import annotations

import argparse
import json

import pytest

from simx.attribute_training.cli import COMMAND, add_arguments, run
from simx.cli import main
from simx.index import build_index


@pytest.fixture(scope="module")
def toy_index(tmp_path_factory, shapes_manifest):
    root = tmp_path_factory.mktemp("idx")
    build_index(str(shapes_manifest), "shapes", model="python:simx.models.toy:tiny_gap", root=str(root),
                progress=False)
    return root


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="simx attributes")
    add_arguments(p)
    return p.parse_args(list(argv))


def test_command_entry_has_the_cli_shape():
    name, add, fn, help_text = COMMAND
    assert name == "attributes" and add is add_arguments and fn is run and "SANE" in help_text


def test_train_writes_the_predictor_beside_the_index(toy_index, capsys):
    assert main(["attributes", "train", "shapes", "--root", str(toy_index), "--saliency", "searchcam", "--epochs", "6",
                 "--heat-images", "20", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "test mAP" in out and "searchcam maps" in out
    folder = toy_index / "shapes" / "attributes"
    assert (folder / "features.npy").is_file() and (folder / "saliency.npy").is_file()
    meta = json.loads((folder / "predictor" / "predictor.json").read_text())
    assert meta["training"]["saliency"] == "searchcam" and meta["training"]["epochs"] == 6
    assert meta["metrics"]["test_map"] > meta["metrics"]["test_chance_map"]


def test_eval_compares_with_and_without_saliency_supervision(toy_index, capsys):
    assert main(["attributes", "eval", "shapes", "--root", str(toy_index), "--saliency", "searchcam", "--epochs", "6",
                 "--heat-images", "20", "--quiet", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) == {"heat", "no_heat"}
    assert res["heat"]["saliency"]["method"] == "searchcam" and res["no_heat"]["saliency"] == {}
    assert (toy_index / "shapes" / "attributes" / "predictor-no-heat" / "weights.safetensors").is_file()
    assert run(_parse("eval", "shapes", "--root", str(toy_index), "--quiet")) == 0
    text = capsys.readouterr().out
    assert "with L_heat" in text and "without L_heat" in text and "difference" in text


def test_unknown_saliency_method_and_index_are_clear_errors(toy_index, capsys):
    assert main(["attributes", "train", "shapes", "--root", str(toy_index), "--saliency", "nope"]) == 2
    assert "unknown saliency method" in capsys.readouterr().err
    assert main(["attributes", "train", "missing", "--root", str(toy_index)]) == 1
    assert "no index named" in capsys.readouterr().err
