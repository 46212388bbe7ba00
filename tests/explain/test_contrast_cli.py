"""``simx explain`` with --versus, several neighbours and methods, --save-maps, source-pixel --point (issue 14)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import simx.index as index_mod
from simx.explain import cli as explain_cli
from simx.models.base import Preprocessing

TINY = "python:simx.models.toy:tiny_linear"


@pytest.fixture
def tiny_index(tmp_path, random_images):
    gallery = tmp_path / "gallery"
    for label, seed in (("a", 41), ("b", 42)):
        (gallery / label).mkdir(parents=True)
        for i, im in enumerate(random_images(3, seed=seed)):
            im.save(gallery / label / f"{i}.png")
    root = tmp_path / "indexes"
    index_mod.build_index(gallery, "tiny", model=TINY, root=root, workers=0, progress=False)
    return root


def _run(argv, capsys):
    code = explain_cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_versus_text_json_maps_and_figure(tiny_index, tmp_path, capsys):
    root = str(tiny_index)
    png = tmp_path / "why.png"
    code, out, err = _run(["tiny", "a/0.png", "b/0.png", "--versus", "a/1.png", "-m", "searchcam",
                           "--no-faithfulness", "--out", str(png), "--root", root], capsys)
    assert code == 0, err
    for line in ("wrong       b/0.png", "right       a/1.png", "reading", "query region", "wrong region",
                 "grey check"):
        assert line in out
    with Image.open(png) as im:
        assert im.width == 3 * 320 + 16
    code, out, _ = _run(["tiny", "a/0.png", "b/0.png", "--versus", "a/1.png", "-m", "searchcam", "--json",
                         "--root", root], capsys)
    d = json.loads(out)
    assert d["method"] == "searchcam" and d["wrong"]["id"] == "b/0.png" and d["rights"][0]["id"] == "a/1.png"
    assert d["margins"][0] == pytest.approx(d["similarities"][0] - d["similarities"][1], abs=1e-6)
    cmap = np.array(d["contrast_maps"][0])
    assert cmap.shape == (64, 64) and len(d["neighbour_maps"]) == 2
    assert d["query_region"]["area"] <= 0.5 and isinstance(d["reading"], str) and "faithfulness" in d


def test_several_neighbours_and_methods_save_maps(tiny_index, tmp_path, capsys):
    root = str(tiny_index)
    npz = tmp_path / "maps.npz"
    code, out, err = _run(["tiny", "a/0.png", "b/0.png", "b/1.png", "-m", "searchcam,gradcam", "--json",
                           "--no-faithfulness", "--save-maps", str(npz), "--root", root], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert [e["method"] for e in d["explanations"]] == ["searchcam", "gradcam"]
    assert all(len(e["pairs"]) == 2 and "faithfulness" not in e for e in d["explanations"])
    assert d["explanations"][0]["cost"]["forward"] == 3 and d["explanations"][1]["cost"]["forward"] == 0
    with np.load(npz) as maps:
        keys = set(maps.files)
        assert {"searchcam/query/0", "searchcam/neighbour/1", "gradcam/query/1"} <= keys
        assert maps["gradcam/query/1"].shape == (64, 64)
    assert d["explanations"][1]["pairs"][1]["query_map"] == "gradcam/query/1"
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left nothing behind


def test_versus_auto_proposes_the_labelled_or_same_label_item(tiny_index, capsys):
    from simx.explain.contrast import failing_pair, propose_right
    from simx.labels import open_labels

    root = tiny_index
    index = index_mod.open_index("tiny", root=root)
    proposed = propose_right(index, "a/0.png")
    assert proposed.label == "a" and proposed.id != "a/0.png"
    code, out, _ = _run(["tiny", "a/0.png", "b/0.png", "--versus", "auto", "-m", "searchcam", "--json",
                         "--no-faithfulness", "--no-counterfactual", "--root", str(root)], capsys)
    assert code == 0 and json.loads(out)["rights"][0]["id"] == proposed.id
    store = open_labels("tiny", root=root)
    store.put("tiny", "a/0.png", "b/2.png", "good", user="ann")
    assert propose_right(index, "a/0.png", labels=store).id == "b/2.png"
    store.put("tiny", "a/0.png", index.search_id("a/0.png", k=1)[0].id, "bad", user="ann")
    wrong, right = failing_pair(index, "a/0.png", labels=store)
    assert wrong.id == index.search_id("a/0.png", k=1)[0].id and right.id in ("b/2.png", proposed.id)
    code, _, err = _run(["tiny", "b/0.png", "a/0.png", "--versus", "auto", "-m", "searchcam", "--root",
                         str(root)], capsys)
    assert code == 0, err


def test_point_in_source_pixels():
    pad = Preprocessing(size=224, mean=(0.5,) * 3, std=(0.5,) * 3, fit="pad")
    assert source_xy(pad, (448, 224), (448, 112)) == pytest.approx((224, 112))
    assert source_xy(pad, (448, 224), (0, 0)) == pytest.approx((0, 56))
    squash = Preprocessing(size=64, mean=(0.5,) * 3, std=(0.5,) * 3, fit="squash")
    assert source_xy(squash, (128, 32), (64, 16)) == pytest.approx((32, 32))


def source_xy(pre, size, xy):
    return explain_cli.source_to_input(pre, size, xy)


def test_contrast_usage_errors(tiny_index, capsys):
    root = str(tiny_index)
    code, _, err = _run(["tiny", "a/0.png", "b/0.png", "--versus", "a/1.png", "-m", "jointcam", "--root", root],
                        capsys)
    assert code == 2 and "first-order" in err
    code, _, err = _run(["tiny", "a/0.png", "b/0.png", "-m", "searchcam,nosuch", "--root", root], capsys)
    assert code == 2 and "nosuch" in err
    code, _, err = _run(["tiny", "a/0.png", "b/0.png", "-m", "jointcam", "--point", "500,2", "--root", root],
                        capsys)
    assert code == 2 and "outside the query image" in err


@pytest.mark.parametrize("argv", [["--help"], ["index", "list"], ["index", "--help"], ["eval", "--help"]])
def test_cli_start_up_does_not_import_torch(argv, tmp_path):
    code = ("import sys, simx.cli as c\n"
            "try:\n    c.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n")
    env = {"SIMX_INDEXES": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=120)
    assert r.stderr.strip().splitlines()[-1] == "NO-TORCH", r.stderr


def test_feature_command_help_lines_match_their_modules():
    import importlib

    from simx.cli import FEATURE_COMMANDS

    for name, module, help_text in FEATURE_COMMANDS:
        command = importlib.import_module(module).COMMAND
        assert command[0] == name and command[3] == help_text, name


def test_pass_bar_follows_the_engine_progress(monkeypatch, random_images, capsys):
    import argparse

    from simx.explain import explain
    from simx.models.toy import tiny_gap

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = explain_cli.PassBar(argparse.Namespace(quiet=False), slow=True)
    progress = bar.progress("rise")
    q, n = random_images(2, seed=8)
    explain(tiny_gap(), q, [n], method="rise", side="query", n_samples=40, progress=progress)
    assert bar._bar.total == progress.total and bar._bar.n == progress.done >= 40
    bar.close()
    assert explain_cli.PassBar(argparse.Namespace(quiet=True), slow=True).progress("x") is None
    assert explain_cli.PassBar(argparse.Namespace(quiet=False), slow=False).progress("x") is None


def test_query_side_versus_reads_the_stored_embeddings(tiny_index, capsys):
    # gallery ids: the wrong and the right neighbours' vectors come from the index, so the query alone goes forward
    from simx.explain import FEATURE_CACHE

    FEATURE_CACHE.clear()
    code, out, err = _run(["tiny", "a/0.png", "b/0.png", "--versus", "a/1.png", "-m", "gradcam", "--side", "query",
                           "--no-counterfactual", "--no-faithfulness", "--json", "--root", str(tiny_index)], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["cost"]["forward"] == 1 and d["cost"]["backward"] == 1
    assert d["margins"][0] == pytest.approx(d["similarities"][0] - d["similarities"][1], abs=1e-6)
