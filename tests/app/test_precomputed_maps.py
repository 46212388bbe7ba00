"""Explore opens the maps that ``simx explain-batch`` stored (issue 16): at once, without running the method, and
says that they are precomputed, with which parameters and when; "Compute live" runs the method as usual."""

from __future__ import annotations

import json

from tests.app.test_app import QUERY, app, first_neighbour, image_captions, run, texts


def test_explore_shows_stored_maps_without_recomputing_and_says_so(indexes, monkeypatch):
    import simx.explain.scored
    from simx.explain.batch import explain_worst
    from simx.index import open_index

    index = open_index("tiny", root=indexes)
    folder = explain_worst(index, worst=len(index), top=3, method="sbsm", params={"window": 16, "stride": 8})
    meta = json.loads((folder / "params.json").read_text())
    nid = first_neighbour(indexes)

    real = simx.explain.scored.explain_scored

    def refuse(*args, **kwargs):  # the joint view below the maps computes its own method, as always
        if kwargs.get("method") == "sbsm":
            raise AssertionError("the stored maps were recomputed")
        return real(*args, **kwargs)

    monkeypatch.setattr(simx.explain.scored, "explain_scored", refuse)
    at = run(app(index="tiny", query=QUERY, neighbour=nid, methods="sbsm"))
    captions = image_captions(at)
    assert "sbsm: query (precomputed)" in captions and "sbsm: neighbour (precomputed)" in captions
    said = texts(at.caption)
    when = meta["created_at"].replace("T", " ").replace("Z", " UTC")
    assert f"Precomputed by simx explain-batch at {when} (sbsm: " in said
    assert "stride=8" in said and "window=16" in said and "seed=0" in said and "64 x 64 maps" in said
    assert "not recomputed" in said and "insertion" in said  # the stored faithfulness, beside the maps
    assert not at.error

    monkeypatch.undo()  # the live method may run again
    monkeypatch.setenv("SIMX_INDEXES", str(indexes))
    monkeypatch.setenv("SIMX_USER", "tester")
    monkeypatch.setenv("SIMX_CONFIRM_ABOVE_S", "1000")
    [b for b in at.button if b.label == "Compute live"][0].click()
    run(at)
    captions = image_captions(at)
    assert "sbsm: query" in captions and "sbsm: query (precomputed)" not in captions
    assert "Precomputed by simx explain-batch" not in texts(at.caption)
