"""The method picker and slow methods in Explore: groups by kind, a typed name picks that name only, the choice
survives an index change, the cost is said before a slow method starts, progress and Run again after a cancel
(issue 12 item 8)."""

from __future__ import annotations

import json
import re
import shutil

import pytest

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


@pytest.mark.parametrize("method", ["rise", "sbsm"])
def test_a_slow_method_says_its_true_cost_and_waits_for_run(indexes, monkeypatch, method):
    """The cost said before Run counts the map's passes and its faithfulness estimate's (44 for a pair), and the
    run then makes exactly that many, all counted by the progress bar."""
    from simx.explain.progress import Progress

    finished = []
    real_finish = Progress.finish
    monkeypatch.setattr(Progress, "finish", lambda self: (finished.append((self.done, self.total)),
                                                          real_finish(self))[1])
    monkeypatch.setenv("SIMX_CONFIRM_ABOVE_S", "0")  # every method counts as slow here
    nid = first_neighbour(indexes)
    at = run(app(index="tiny", query=QUERY, neighbour=nid, methods=method))
    said = [c for c in texts(at.caption).split("\n") if c.startswith(f"{method}: ")]
    assert len(said) == 1 and "(44 of them score the maps), about" in said[0] and "on this machine" in said[0]
    announced = int(re.match(rf"{method}: ([\d,]+) forward passes", said[0]).group(1).replace(",", ""))
    assert f"{method}: query" not in image_captions(at) and (announced, announced) not in finished
    run_button = [b for b in at.button if b.label == f"Run {method}"]
    assert len(run_button) == 1
    run_button[0].click()
    run(at)
    assert f"{method}: query" in image_captions(at) and f"{method}: neighbour" in image_captions(at)
    assert (announced, announced) in finished  # (the joint view below it finishes its own, cached: 0 passes)
    at = run(app(index="tiny", query=QUERY, neighbour=nid, methods=method))
    assert f"{method}: query" in image_captions(at)  # computed once: a new visit opens it at once


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
    import simx.explain.scored
    from simx.errors import ExplainError

    def refuse(*args, **kwargs):
        raise ExplainError("gradcam needs n_samples >= 2, got 1")

    monkeypatch.setattr(simx.explain.scored, "explain_scored", refuse)
    nid = first_neighbour(indexes)
    at = run(app(index="tiny", query=QUERY, neighbour=nid, methods="gradcam"))
    errors = texts(at.error)
    assert "gradcam: gradcam needs n_samples >= 2, got 1" in errors and "unexpected error" not in errors


def test_an_interrupted_run_cancels_its_work(indexes, monkeypatch):
    """Cancel (or any other click) interrupts the script run while it draws the progress bar; the interrupted run
    must stop the worker's passes through simx's CancelToken rather than leave them running."""
    import threading
    import time


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
    from streamlit.delta_generator import DeltaGenerator

    monkeypatch.setattr(DeltaGenerator, "progress", lambda *a, **k: Bar())
    nid = first_neighbour(indexes)
    at = app(index="tiny", query=QUERY, neighbour=nid, methods="rise")
    at.run()
    assert tokens and tokens[0].cancelled  # the rise row (the joint view after it finishes in time)
    t0 = time.perf_counter()
    for thread in [t for t in threading.enumerate() if t.name == "simx-explain"]:
        thread.join(30)
    assert time.perf_counter() - t0 < 30 and not [t for t in threading.enumerate() if t.name == "simx-explain"]
    assert "rise: query" not in image_captions(at)
