""""Why not the right one?" on Explore, from Failures and in the review queue (issue 14), over the tiny index."""

from __future__ import annotations

from urllib.parse import parse_qs

from tests.app.test_app import app, first_neighbour, image_captions, run, store, texts

QUERY = "red/red1.png"


def test_a_wrong_neighbour_gets_the_contrast_view_and_the_label_form_its_reason(indexes, monkeypatch):
    import simx.explain.contrast as contrast

    # the random toy model has no real cause to find; make the suggestion fixed to check that the form takes it
    monkeypatch.setattr(contrast, "suggest_reason", lambda *a, **k: "colour_over_shape")
    WRONG = first_neighbour(indexes)  # labelled bad: the best-ranked neighbour is a failure
    store(indexes).put("tiny", QUERY, WRONG, "bad", user="ann")
    at = run(app(index="tiny", query=QUERY, neighbour=WRONG))
    assert not at.error
    assert "Why not the right one?" in [h.value for h in at.subheader]
    caps = image_captions(at)
    assert any(c.startswith(f"wrong {WRONG}: s = ") for c in caps)
    right = [c for c in caps if c.startswith("right red/")]
    assert right, caps  # the proposed right neighbour shares the query's label
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["margin s(q, wrong) - s(q, right)"]) > 0
    reading = texts(at.text)
    assert "margin" in reading and ("favours the wrong one" in reading or "the cause is global" in reading)
    assert at.selectbox(key="contrast_method_explore").value == "searchcam"
    assert "Suggested label reason: colour over shape" in texts(at.caption)
    assert at.selectbox(key="label_reason").value == "colour_over_shape"  # the label form starts on it


def test_a_right_neighbour_has_no_contrast_view_unless_asked(indexes):
    right = first_neighbour(indexes)
    at = run(app(index="tiny", query=QUERY, neighbour=right))
    assert "Why not the right one?" not in [h.value for h in at.subheader]
    other = "red/red3.png" if right != "red/red3.png" else "red/red2.png"
    at = run(app(index="tiny", query=QUERY, neighbour=right, versus=other, why="1"))
    assert "Why not the right one?" in [h.value for h in at.subheader]
    assert any(c.startswith(f"right {other}") for c in image_captions(at))


def test_failures_links_straight_to_the_contrast_view(indexes):
    top = first_neighbour(indexes)
    store(indexes).put("tiny", QUERY, top, "bad", user="ann")
    at = run(app(index="tiny"))
    at.switch_page("app_pages/failures.py")
    run(at)
    ids = list(at.dataframe[0].value["id"])
    at.session_state["fail_table"] = {"selection": {"rows": [ids.index(QUERY)], "columns": [], "cells": []}}
    run(at)
    links = [p.proto for p in at.get("page_link")]
    why = [link for link in links if link.label.startswith("Why not the right one?")]
    assert why, [link.label for link in links]
    params = parse_qs(why[0].query_string)
    assert params["query"] == [QUERY] and params["neighbour"] == [top] and params["why"] == ["1"]
    assert params["versus"][0].startswith("red/") and params["versus"][0] not in (QUERY, top)


def test_review_queue_can_show_the_contrast_view(indexes):
    at = run(app(index="tiny"))
    at.switch_page("app_pages/review.py")
    run(at)
    at.toggle(key="review_contrast").set_value(True)
    run(at)
    assert not at.error
    assert "Why not the right one?" in [h.value for h in at.subheader] or "nothing to compare with" in texts(
        at.caption)


def test_a_slow_contrast_method_says_its_cost_and_waits_for_run(indexes):
    wrong = first_neighbour(indexes)
    store(indexes).put("tiny", QUERY, wrong, "bad", user="ann")
    at = run(app(index="tiny", query=QUERY, neighbour=wrong))
    at.selectbox(key="contrast_method_explore").set_value("sbsm")
    run(at)
    assert "forward passes" in texts(at.caption) and not any(c.startswith("wrong ") for c in image_captions(at))
    at.button(key="contrast_go_explore").click()
    run(at)
    assert any(c.startswith(f"wrong {wrong}: s = ") for c in image_captions(at)) and not at.error
