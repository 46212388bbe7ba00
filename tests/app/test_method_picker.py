"""The method picker and slow methods in Explore: groups by kind, a typed name picks that name only, the choice
survives an index change, the cost is said before a slow method starts, progress and Run again after a cancel
(issue 12 item 8)."""

from __future__ import annotations

import json
import shutil

from tests.app.test_app import QUERY, app, first_neighbour, image_captions, run, texts


def is_subsequence(short: str, long: str) -> bool:
    """True if typing ``short`` fuzzily matches ``long`` (its letters appear in order)."""
    it = iter(long)
    return all(ch in it for ch in short)


def test_the_picker_groups_first_order_joint_and_attribute_methods(indexes):
    from app_pages import _common as ui
    from simx.explain import REGISTRY

    groups = ui.method_groups()
    assert sorted(m for names in groups.values() for m in names) == sorted(REGISTRY)
    assert {REGISTRY[m].kind for m in groups["joint"]} == {"joint"}
    assert groups["attribute"] == ["sane"]
    assert {"gradcam", "rise", "sbsm", "lime"} <= set(groups["first-order"])
    assert not set(groups["first-order"]) & (set(groups["joint"]) | set(groups["attribute"]))
    for names in groups.values():  # typing one option's name and Enter can only pick that option
        clashes = [(a, b) for a in names for b in names if a != b and is_subsequence(a, b)]
        assert clashes == [], clashes


def test_explore_offers_only_first_order_methods_as_rows(indexes):
    from app_pages import _common as ui

    nid = first_neighbour(indexes)
    at = run(app(index="tiny", query=QUERY, neighbour=nid, methods="gradcam,jointsbsm"))
    picker = at.multiselect(key="methods_pick")
    assert picker.options == ui.method_groups()["first-order"]
    assert picker.value == ["gradcam"]  # a joint method in an old link is not a row
    assert at.selectbox(key="joint_method").options == ui.method_groups()["joint"]


def test_the_picker_keeps_its_selection_when_the_index_changes(indexes):
    shutil.copytree(indexes / "tiny", indexes / "tiny2")
    nid = first_neighbour(indexes)
    at = run(app(index="tiny", query=QUERY, neighbour=nid))
    at.multiselect(key="methods_pick").set_value(["sfam", "searchcam"])
    run(at)
    at.sidebar.selectbox(key="index_pick").set_value("tiny2")
    run(at)
    assert at.query_params["index"] == "tiny2" and at.query_params["methods"] == "sfam,searchcam"
    at.button(key=f"pick_{QUERY}").click()
    run(at)
    [b for b in at.button if b.key and b.key.startswith("nb_")][0].click()
    run(at)
    assert at.multiselect(key="methods_pick").value == ["sfam", "searchcam"]
    assert "sfam: query" in image_captions(at) and "searchcam: query" in image_captions(at)


def test_a_slow_method_says_its_cost_and_waits_for_run(indexes, monkeypatch):
    monkeypatch.setenv("SIMX_CONFIRM_ABOVE_S", "0")  # every method counts as slow here
    nid = first_neighbour(indexes)
    at = run(app(index="tiny", query=QUERY, neighbour=nid, methods="rise"))
    captions = texts(at.caption)
    assert "rise: 4,002 forward passes, about" in captions and "on this machine" in captions
    assert "rise: query" not in image_captions(at)
    run_button = [b for b in at.button if b.label == "Run rise"]
    assert len(run_button) == 1
    run_button[0].click()
    run(at)
    assert "rise: query" in image_captions(at) and "rise: neighbour" in image_captions(at)
    at = run(app(index="tiny", query=QUERY, neighbour=nid, methods="rise"))
    assert "rise: query" in image_captions(at)  # computed once: a new visit opens it at once


def test_a_cancelled_method_says_so_and_runs_again_on_request(indexes, monkeypatch):
    monkeypatch.setenv("SIMX_CONFIRM_ABOVE_S", "0")
    nid = first_neighbour(indexes)
    at = app(index="tiny", query=QUERY, neighbour=nid, methods="lime")
    at.session_state[f"run_{QUERY}|{nid}|lime|{json.dumps({})}"] = "cancelled"  # what Cancel's click leaves
    run(at)
    assert "lime was cancelled." in texts(at.info) and "lime: query" not in image_captions(at)
    [b for b in at.button if b.label == "Run again"][0].click()
    run(at)
    assert "lime: query" in image_captions(at)
    assert not at.error


def test_an_explain_error_in_the_worker_is_shown_as_its_message(indexes, monkeypatch):
    import simx.explain
    from simx.errors import ExplainError

    def refuse(*args, **kwargs):
        raise ExplainError("gradcam needs n_samples >= 2, got 1")

    monkeypatch.setattr(simx.explain, "explain", refuse)
    nid = first_neighbour(indexes)
    at = run(app(index="tiny", query=QUERY, neighbour=nid, methods="gradcam"))
    errors = texts(at.error)
    assert "gradcam: gradcam needs n_samples >= 2, got 1" in errors and "unexpected error" not in errors


def test_an_interrupted_run_cancels_its_work(indexes, monkeypatch):
    """Cancel (or any other click) interrupts the script run while it draws the progress bar; the interrupted run
    must stop the worker's passes through simx's CancelToken rather than leave them running."""
    import threading
    import time

    import streamlit

    from simx.explain import progress as progress_mod

    tokens = []

    class RecordingToken(progress_mod.CancelToken):
        def __init__(self):
            super().__init__()
            tokens.append(self)

    class Interrupted(Exception):
        pass

    class Bar:
        def progress(self, *args, **kwargs):
            raise Interrupted("the script run was interrupted")  # what Streamlit raises when a rerun is requested

        def empty(self):
            pass

    monkeypatch.setenv("SIMX_CONFIRM_ABOVE_S", "1e9")  # no Run button: start at once
    monkeypatch.setattr(progress_mod, "CancelToken", RecordingToken)
    monkeypatch.setattr(streamlit, "progress", lambda *a, **k: Bar())
    nid = first_neighbour(indexes)
    at = app(index="tiny", query=QUERY, neighbour=nid, methods="rise")
    at.run()
    assert tokens and tokens[0].cancelled  # the rise row (the joint view after it finishes in time)
    t0 = time.perf_counter()
    for thread in [t for t in threading.enumerate() if t.name == "simx-explain"]:
        thread.join(30)
    assert time.perf_counter() - t0 < 30 and not [t for t in threading.enumerate() if t.name == "simx-explain"]
    assert "rise: query" not in image_captions(at)
