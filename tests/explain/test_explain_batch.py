"""``simx explain-batch`` (issue 16): the worst queries' top neighbours explained once, stored beside the index
with the method's parameters, and read back per pair."""

from __future__ import annotations

import json

import numpy as np

from simx.cli import main
from simx.explain import explain
from simx.explain.batch import MAP_SIZE, list_precomputed, load_precomputed
from simx.explain.metrics import faithfulness
from simx.index import build_index, evaluate, open_index
from tests.index.conftest import TINY, make_gallery


def test_explain_batch_stores_maps_faithfulness_and_parameters(tmp_path, capsys):
    gallery = make_gallery(tmp_path / "g", {"red": 3, "green": 3, "blue": 3})
    root = tmp_path / "idx"
    build_index(gallery, "g", model=TINY, root=root, workers=0, progress=False)
    assert main(["explain-batch", "g", "--root", str(root), "--worst", "2", "--top", "2", "--method", "sbsm",
                 "--param", "window=16", "--param", "stride=8", "-q"]) == 0
    out = capsys.readouterr().out
    assert "sbsm maps of 4 pairs (2 worst queries" in out
    index = open_index("g", root=root)
    runs = list_precomputed(index)
    assert len(runs) == 1 and runs[0]["method"] == "sbsm" and runs[0]["params"]["seed"] == 0
    assert runs[0]["params"]["window"] == 16 and runs[0]["model"]["spec"] == TINY

    worst = evaluate(index, k=10).per_query.iloc[0]
    q, n = worst["id"], list(worst["neighbours"])[0]
    got = load_precomputed(index, q, n, "sbsm")
    assert got is not None and got["query_map"].shape == (MAP_SIZE, MAP_SIZE)
    assert np.isfinite(got["pair"]["query_insertion"]) and "neighbour_deletion" in got["pair"]
    # the stored map is the live explanation's map, shrunk
    top2 = [index.item(x).path for x in list(worst["neighbours"])[:2]]  # the same call as the batch made
    live = explain(index.model, index.item(q).path, top2, method="sbsm", window=16, stride=8)
    ref = live.query_maps[0]
    ref = ref.reshape(MAP_SIZE, ref.shape[0] // MAP_SIZE, MAP_SIZE, ref.shape[1] // MAP_SIZE).mean(axis=(1, 3))
    np.testing.assert_allclose(got["query_map"], ref, rtol=2e-2, atol=2e-3 * float(np.abs(ref).max()))
    assert got["pair"]["similarity"] == float(live.similarities[0])
    scores = faithfulness(live, index.model)
    assert got["pair"]["query_insertion"] == scores["query"]["insertion"][0]
    assert got["pair"]["neighbour_deletion"] == scores["neighbour"]["deletion"][0]
    # other parameters or another method: nothing stored for them
    assert load_precomputed(index, q, n, "sbsm", params={"window": 8}) is None
    assert load_precomputed(index, q, n, "gradcam") is None
    assert json.loads((index.path / "explanations" / runs[0]["folder"].split("/")[-1] / "params.json")
                      .read_text())["pairs"] == 4
