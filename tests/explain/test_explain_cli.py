"""``simx explain`` end to end on a tiny index (toy model, 64 px)."""

from __future__ import annotations

import argparse
import json

import pytest
from PIL import Image

from simx.errors import SimxError

import simx.index as index_mod
from simx.explain import cli as explain_cli

TINY = "python:simx.models.toy:tiny_linear"


@pytest.fixture
def tiny_index(tmp_path, random_images):
    gallery = tmp_path / "gallery"
    for label, seed in (("a", 31), ("b", 32)):
        (gallery / label).mkdir(parents=True)
        for i, im in enumerate(random_images(3, seed=seed)):
            im.save(gallery / label / f"{i}.png")
    root = tmp_path / "indexes"
    index_mod.build_index(gallery, "tiny", model=TINY, root=root, workers=0, progress=False)
    return root, gallery


def _run(argv, capsys):
    code = explain_cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_explain_ids_text_and_png(tiny_index, tmp_path, capsys):
    root, _ = tiny_index
    png = tmp_path / "pair.png"
    code, out, _ = _run(["tiny", "a/0.png", "b/1.png", "--method", "searchcam", "--root", str(root),
                         "--out", str(png)], capsys)
    assert code == 0
    assert "similarity" in out and "insertion AUC" in out and "deletion AUC" in out
    rows = [line for line in out.splitlines() if line.startswith(("  query", "  neighbour"))]
    assert len(rows) == 2 and all("insertion AUC" in r for r in rows)  # both sides by default
    assert "higher is better" in out
    with Image.open(png) as im:  # one row of the renderer's pair figure: query, two maps, neighbour
        assert im.format == "PNG" and im.width > 2 * im.height


def test_explain_json_file_path_and_options(tiny_index, tmp_path, capsys):
    root, gallery = tiny_index
    outside = tmp_path / "outside.png"
    Image.open(gallery / "b" / "2.png").save(outside)
    code, out, _ = _run(["tiny", "a/1.png", str(outside), "--method", "searchcam", "--side", "query", "--json",
                         "--seed", "3", "--root", str(root)], capsys)
    assert code == 0
    d = json.loads(out)
    assert d["query"]["id"] == "a/1.png" and d["neighbour"]["id"] is None
    assert d["neighbour"]["path"] == str(outside)
    assert d["sides"] == ["query"] and d["params"]["seed"] == 3
    assert d["model"]["spec"] == TINY and len(d["similarities"]) == 1
    assert isinstance(d["pairs"][0]["query_insertion"], float) and "neighbour_insertion" not in d["pairs"][0]
    # the explained similarity is the index's similarity of the two items
    index = index_mod.open_index("tiny", root=root)
    hits = index.search_id("a/1.png", k=len(index))
    sim = {h.id: h.score for h in hits}
    code, out, _ = _run(["tiny", "a/1.png", "b/2.png", "-m", "searchcam", "--json", "--no-faithfulness",
                         "--root", str(root)], capsys)
    d2 = json.loads(out)
    assert d2["similarities"][0] == pytest.approx(sim["b/2.png"], abs=1e-4)
    assert "faithfulness" not in d2


def test_explain_errors(tiny_index, capsys):
    root, _ = tiny_index
    code, _, err = _run(["tiny", "nope", "a/0.png", "-m", "searchcam", "--root", str(root)], capsys)
    assert code == 1 and "QUERY 'nope' is neither an id in index 'tiny' nor an image file" in err
    code, _, err = _run(["tiny", "a/0.png", "a/1.png", "-m", "nosuch", "--root", str(root)], capsys)
    assert code == 2 and "unknown method 'nosuch'" in err and "searchcam" in err
    code, _, err = _run(["tiny", "a/0.png", "a/1.png", "-m", "searchcam", "--n-samples", "10",
                         "--root", str(root)], capsys)
    assert code == 2 and "takes no --n-samples" in err
    code, _, err = _run(["missing", "a/0.png", "a/1.png", "-m", "searchcam", "--root", str(root)], capsys)
    assert code == 1 and "missing" in err


def test_explain_segmentation_and_baseline_options(tiny_index, capsys):
    root, _ = tiny_index
    code, out, _ = _run(["tiny", "a/0.png", "b/1.png", "-m", "kernelshap", "--n-samples", "12", "--segmentation",
                         "slic:n=6,compactness=30", "--baseline", "0.5", "--json", "--no-faithfulness",
                         "--side", "query", "--root", str(root)], capsys)
    assert code == 0
    params = json.loads(out)["params"]
    assert params["segmentation"] == "slic:n=6,compactness=30,sigma=1" and params["baseline"] == 0.5
    code, _, err = _run(["tiny", "a/0.png", "b/1.png", "-m", "lime", "--segmentation", "slic:size=3",
                         "--root", str(root)], capsys)
    assert code == 1 and "key=value with a key of slic (n, compactness, sigma)" in err
    code, _, err = _run(["tiny", "a/0.png", "b/1.png", "-m", "searchcam", "--baseline", "black",
                         "--root", str(root)], capsys)
    assert code == 2 and "takes no --baseline" in err


def test_command_tuple_and_resolution(tiny_index):
    name, add_arguments, run, help_text = explain_cli.COMMAND
    assert name == "explain" and run is explain_cli.run and help_text
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["idx", "q", "n", "--method", "rise", "--n-samples", "50", "--no-faithfulness"])
    assert args.method == "rise" and args.n_samples == 50 and args.faithfulness is False and args.side == "both"
    root, gallery = tiny_index
    index = index_mod.open_index("tiny", root=root)
    assert explain_cli.resolve_image(index, "b/0.png", "QUERY") == ("b/0.png", str(gallery / "b" / "0.png"))
    with pytest.raises(SimxError):
        explain_cli.resolve_image(index, "zzz", "NEIGHBOUR")


def test_simx_cli_wiring(tiny_index, capsys):
    """``simx explain`` through the top-level entry point, whatever ran before (the registry fills itself)."""
    import simx.cli as simx_cli

    root, _ = tiny_index
    code = simx_cli.main(["explain", "tiny", "a/0.png", "b/0.png", "-m", "searchcam", "--json", "--root", str(root)])
    assert code == 0 and json.loads(capsys.readouterr().out)["method"] == "searchcam"
