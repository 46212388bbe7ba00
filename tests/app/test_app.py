"""Streamlit AppTest of every page over a tiny generated index (toy model, CPU, seconds)."""

from __future__ import annotations

import io
import re
from urllib.parse import parse_qs

import numpy as np
import pytest

from simx.explain.metrics import ESTIMATE_STEPS
from PIL import Image

from tests.app.conftest import APP, RUN_TIMEOUT_S

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

QUERY, NEIGHBOUR = "red/red1.png", None  # the neighbour is read from the search results


def nodes(at, typ: str) -> list:
    out = []

    def walk(node):
        if getattr(node, "type", None) == typ:
            out.append(node)
        ch = getattr(node, "children", None)
        if isinstance(ch, dict):
            for c in ch.values():
                walk(c)

    walk(at._tree)
    return out


def image_captions(at, raw: bool = False) -> list[str]:
    """The captions of every image as a reader sees them (``raw``: the Markdown the page sent)."""
    caps = [img.caption for n in nodes(at, "image") for img in n.proto.imgs]
    return caps if raw else [as_read(c) for c in caps]


def as_read(markdown: str) -> str:
    """Markdown text as a reader sees it: the escapes ``ui.plain`` puts in user text removed, and its invisible
    word joiners."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown.replace("\u2060", ""))


def texts(elements) -> str:
    """The elements' text as a reader sees it (the escapes of user text in Markdown removed, ``ui.plain``)."""
    return as_read("\n".join(str(e.value) for e in elements))


def run(at):
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def app(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)
    for k, v in params.items():
        at.query_params[k] = v
    return at


def first_neighbour(index_root_dir, query=QUERY) -> str:
    from simx.index import open_index

    return open_index("tiny", root=index_root_dir).search_id(query, 10)[0].id


def store(root):
    from simx.labels import open_labels

    return open_labels("tiny", root=root)


# ------------------------------------------------------------------------------------------------ Explore


def test_index_loads_and_the_page_asks_for_a_query(indexes):
    at = run(app())
    assert at.query_params["index"] == "tiny"
    assert at.sidebar.selectbox[0].value == "tiny"
    assert "device **cpu**" in texts(at.sidebar.caption)
    assert "Pick a query image" in texts(at.info)
    assert not at.error


def test_choose_query_and_neighbour_renders_maps(indexes):
    at = run(app())
    at.button(key=f"pick_{QUERY}").click()
    run(at)
    assert at.query_params["query"] == QUERY
    nb_buttons = [b for b in at.button if b.key and b.key.startswith("nb_")]
    assert len(nb_buttons) == 10  # the top-10 neighbours, each with an Open button
    nid = nb_buttons[0].key[3:]
    assert nid == first_neighbour(indexes)
    nb_buttons[0].click()
    run(at)
    assert at.query_params["neighbour"] == nid
    caps = image_captions(at)
    assert "gradcam: query" in caps and "gradcam: neighbour" in caps
    assert "similarity" in texts(at.markdown)
    assert not at.error


def test_several_methods_one_row_each_and_url_state_round_trips(indexes):
    nid = first_neighbour(indexes)
    at = run(app(index="tiny", query=QUERY, neighbour=nid, methods="searchcam,gradcam"))
    assert at.multiselect(key="methods_pick").value == ["searchcam", "gradcam"]
    caps = image_captions(at)
    for m in ("searchcam", "gradcam"):
        assert f"{m}: query" in caps and f"{m}: neighbour" in caps
    at.multiselect(key="methods_pick").set_value(["sfam"])
    run(at)
    assert at.query_params["methods"] == "sfam"
    assert "sfam: neighbour" in image_captions(at) and "gradcam: neighbour" not in image_captions(at)
    # a fresh session from the same URL reopens the same view
    again = run(app(**{k: at.query_params[k] for k in ("index", "query", "neighbour", "methods")}))
    assert again.multiselect(key="methods_pick").value == ["sfam"]
    assert "sfam: query" in image_captions(again)


def test_labeling_writes_exactly_one_row(indexes):
    nid = first_neighbour(indexes)
    at = run(app(index="tiny", query=QUERY, neighbour=nid))
    at.selectbox(key="label_reason").set_value("background_shortcut")
    at.text_input(key="label_note").set_value("the white background")
    at.button(key="label_bad").click()
    run(at)
    rows = store(indexes).list(index="tiny")
    assert len(rows) == 1
    r = rows[0]
    assert (r.query_id, r.neighbour_id, r.verdict, r.reason, r.note, r.user) == (
        QUERY, nid, "bad", "background_shortcut", "the white background", "tester")
    assert r.rank == 1 and r.model == "python:simx.models.toy:tiny_linear"
    assert "Saved: bad match" in texts(at.success)
    # labelling the same pair again replaces the verdict: still one row
    at.button(key="label_good").click()
    run(at)
    rows = store(indexes).list(index="tiny")
    assert len(rows) == 1 and rows[0].verdict == "good" and rows[0].reason is None


def test_joint_view_projects_a_query_point(indexes):
    nid = first_neighbour(indexes)
    at = run(app(index="tiny", query=QUERY, neighbour=nid))
    assert at.selectbox(key="joint_method").value == "jointcam"
    assert "Click a point" in texts(at.caption)
    at.number_input(key="joint_x").set_value(20.0)
    at.number_input(key="joint_y").set_value(30.0)
    run(at)
    assert "query point (20, 30)" in texts(at.caption)
    assert len(nodes(at, "plotly_chart")) == 1


def test_faithfulness_beside_every_map_and_full_curves_on_demand(indexes):
    nid = first_neighbour(indexes)
    at = run(app(index="tiny", query=QUERY, neighbour=nid, methods="searchcam,gradcam"))
    cap = texts(at.caption)
    assert cap.count("(higher is better)") == 4 and f"estimate, {ESTIMATE_STEPS} steps" in cap  # 2 methods x 2 sides
    assert "query: insertion" not in cap
    at.button(key=f"btn_faith_{QUERY}|{nid}_searchcam").click()
    run(at)
    cap = texts(at.caption)
    assert "query: insertion" in cap and "neighbour: insertion" in cap and "higher is better" in cap
    assert "101 steps" in cap  # the maps' notes now show the full curve's numbers


def test_upload_query_in_memory_and_bad_upload_message(indexes):
    at = run(app(index="tiny"))
    buf = io.BytesIO()
    a = np.full((40, 40, 3), 255, np.uint8)
    a[5:25, 5:25] = (220, 40, 40)
    Image.fromarray(a).save(buf, format="PNG")
    at.get("file_uploader")[0].set_value(("mine.png", buf.getvalue(), "image/png"))
    run(at)
    assert at.query_params["query"].startswith("upload:")
    nb = [b for b in at.button if b.key and b.key.startswith("nb_")]
    assert len(nb) == 10
    assert not any(p.name == "mine.png" for p in indexes.rglob("*.png"))  # never written into the gallery
    bad = run(app(index="tiny"))
    bad.get("file_uploader")[0].set_value(("broken.png", b"this is not a png", "image/png"))
    run(bad)
    assert "Cannot use 'broken.png' as a query" in texts(bad.error)
    assert "not a readable image" in texts(bad.error)
    assert "query" not in bad.query_params


def test_missing_index_and_unknown_query_are_messages(indexes):
    at = run(app(index="nope"))
    assert "No index named 'nope'" in texts(at.error)
    at = run(app(index="tiny", query="no/such.png"))
    assert "No image with id 'no/such.png'" in texts(at.error)


def test_no_index_says_how_to_build_one(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMX_INDEXES", str(tmp_path / "empty"))
    at = run(app())
    info = texts(at.info)
    assert "simx demo" in info and "simx index build" in info


def test_broken_index_is_a_message(indexes):
    (indexes / "tiny" / "embeddings.npy").unlink()
    at = run(app(index="tiny"))
    assert "incomplete" in texts(at.error) and "embeddings.npy" in texts(at.error)


def test_presentation_mode_hides_the_controls(indexes):
    nid = first_neighbour(indexes)
    at = run(app(index="tiny", query=QUERY, neighbour=nid, present="1"))
    keys = {b.key for b in at.button}
    assert "label_bad" not in keys and "methods_pick" not in {m.key for m in at.multiselect}
    assert not [b for b in at.button if b.key and b.key.startswith("pick_")]
    assert "gradcam: neighbour" in image_captions(at)


def review_page(**params):
    at = run(app(**params))
    at.switch_page("app_pages/review.py")
    return run(at)


def review_keys(at) -> dict:
    """What the review page hands to its key component (pair on screen, last press applied, key map)."""
    import json

    (node,) = [n for n in nodes(at, "bidi_component") if n.proto.component_name == "simx_review_keys"]
    return json.loads(node.proto.json)


def test_review_queue_labels_worst_pairs_with_skip_and_back(indexes):
    at = review_page(index="tiny")
    keys = review_keys(at)  # the keys go through the queueing component, not through button shortcuts
    assert keys["enabled"] and keys["ack"] == 0
    assert {k: keys["keys"][k] for k in ("g", "b", "s", "ArrowLeft", "1", "5")} == {
        "g": "good", "b": "bad", "s": "skip", "ArrowLeft": "back", "1": "bad", "5": "bad"}
    assert not any(at.button(key=key).proto.shortcut for key in ("rq_good", "rq_bad", "rq_skip", "rq_back"))
    shown = keys["pair"]
    at.button(key="rq_bad").click()
    run(at)
    s = store(indexes)
    rows = s.list(index="tiny")
    assert len(rows) == 1 and rows[0].verdict == "bad" and rows[0].reason == "other"
    first = (rows[0].query_id, rows[0].neighbour_id)
    assert [*first, rows[0].rank] == shown and rows[0].score is not None and rows[0].user == "tester"
    assert review_keys(at)["pair"] != shown  # the next pair is handed to the keys
    at.button(key="rq_skip").click()
    run(at)
    assert s.count(index="tiny") == 1  # skip writes nothing
    at.button(key="rq_good").click()
    run(at)
    rows = s.list(index="tiny")
    assert len(rows) == 2 and {r.verdict for r in rows} == {"good", "bad"}
    assert first in {(r.query_id, r.neighbour_id) for r in rows}
    # back shows the previous pair again; relabelling it replaces, not adds
    at.button(key="rq_back").click()
    run(at)
    at.button(key="rq_bad").click()
    run(at)
    rows = s.list(index="tiny")
    assert len(rows) == 2 and all(r.verdict == "bad" for r in rows)


# ------------------------------------------------------------------------------------------------ other pages


def test_failures_page_table_confusion_and_open(indexes):
    store(indexes).put("tiny", QUERY, "blue/blue0.png", "bad", user="ann")
    at = run(app(index="tiny"))
    at.switch_page("app_pages/failures.py")
    run(at)
    assert not at.error
    df = at.dataframe[0].value
    assert list(df["ap"]) == sorted(df["ap"])  # worst first
    assert {"id", "labels", "ap", "p1", "bad_labels"} <= set(df.columns) and len(df) == 15
    assert dict(zip(df["id"], df["bad_labels"]))[QUERY] == 1
    assert len(nodes(at, "plotly_chart")) == 1  # the confusion heat map
    assert any(m.label == "precision@1" for m in at.metric)


def test_embedding_map_page_projects_once(indexes):
    at = run(app(index="tiny"))
    at.switch_page("app_pages/embedding_map.py")
    run(at)
    assert not at.error
    assert (indexes / "tiny" / "projection.parquet").is_file()
    assert (indexes / "tiny" / "projection.json").is_file()
    assert len(nodes(at, "plotly_chart")) == 1
    assert "PCA projection" in texts(at.caption) or "UMAP projection" in texts(at.caption)


def test_labels_page_filters_edits_deletes_and_exports(indexes):
    s = store(indexes)
    a = s.put("tiny", QUERY, "blue/blue0.png", "bad", reason="wrong_category", user="ann")
    s.put("tiny", QUERY, "red/red2.png", "good", user="bob")
    at = run(app(index="tiny"))
    at.switch_page("app_pages/labels.py")
    run(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["labels"] == "2" and metrics["good"] == "1" and metrics["bad"] == "1"
    assert {d.key for d in at.get("download_button")} >= {"exp_csv", "exp_jsonl", "exp_triplets"}
    at.multiselect(key="lab_verdict").set_value(["bad"])
    run(at)
    assert {m.label: m.value for m in at.metric}["labels"] == "1"
    at.text_input(key=f"ln_{a.id}").set_value("edited note")
    at.button(key=f"ls_{a.id}").click()
    run(at)
    assert s.get(a.id).note == "edited note"
    at.button(key=f"ld_{a.id}").click()
    run(at)
    assert s.get(a.id) is not None  # Delete asks first
    at.button(key=f"ldn_{a.id}").click()  # cancel
    run(at)
    assert s.get(a.id) is not None and at.button(key=f"ld_{a.id}") is not None
    at.button(key=f"ld_{a.id}").click()
    run(at)
    at.button(key=f"ldy_{a.id}").click()
    run(at)
    assert s.get(a.id) is None and s.count(index="tiny") == 1


def test_failures_row_opens_in_explore(indexes):
    at = run(app(index="tiny"))
    at.switch_page("app_pages/failures.py")
    run(at)
    worst = at.dataframe[0].value.iloc[0]["id"]
    at.session_state["fail_table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    run(at)
    assert f"Selected query: {worst}" in texts(at.markdown)
    link = at.get("page_link")[0].proto
    assert link.label == "Open in Explore"
    assert parse_qs(link.query_string) == {"index": ["tiny"], "query": [worst]}
    for key, value in {"index": "tiny", "query": worst}.items():
        at.query_params[key] = value
    at.switch_page("app_pages/explore.py")
    run(at)
    assert "Top 10 neighbours" in texts(at.markdown)


def test_model_mismatch_is_a_message(indexes):
    import json

    meta_path = indexes / "tiny" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["spec"] = "python:simx.models.toy:tiny_gap"  # 16-d embeddings, the index holds 12-d ones
    meta_path.write_text(json.dumps(meta))
    at = run(app(index="tiny"))
    err = texts(at.error)
    assert "Cannot open index 'tiny'" in err and "different model" in err


def test_imported_modules_are_frozen_out_of_the_collector_once_per_import(indexes):
    """The dashboard freezes what it has imported (gc.freeze) so full collections skip torch/plotly/Streamlit; a
    second run that imports nothing new freezes nothing more."""
    import gc
    import sys

    from app_pages import _common as ui

    gc.unfreeze()
    ui._FROZEN_MODULES[0] = 0
    try:
        ui.freeze_long_lived()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000 and ui._FROZEN_MODULES[0] == len(sys.modules)
        junk = [[i] for i in range(5000)]  # new objects, no new module: left to the collector
        ui.freeze_long_lived()
        # (frozen objects that die leave the count, so it may shrink a little; freezing again would add >= 5000)
        assert gc.get_freeze_count() < frozen + 5000
        sys.modules["simx_test_new_module"] = type(sys)("simx_test_new_module")  # a new import: freeze again
        try:
            ui.freeze_long_lived()
            assert gc.get_freeze_count() >= frozen + 5000 - 100 and len(junk) == 5000
        finally:
            del sys.modules["simx_test_new_module"]
    finally:
        gc.unfreeze()


def test_old_review_links_open_the_review_page(indexes):
    at = run(app(index="tiny", mode="review"))
    assert at.title[0].value == "Review queue"
    assert "mode" not in at.query_params and at.query_params["index"] == "tiny"
    assert at.button(key="rq_good") is not None


# ------------------------------------------------------------------------------------------------ issue 12


HOSTILE_NOTE = "![x](http://host/track.png)"
HOSTILE_USER = "[bob](http://evil.example/)"


def markdown_sources(at) -> list[str]:
    """Every string the page hands to Streamlit's Markdown renderer (markdown, captions, alerts, button labels)."""
    out = [str(e.value) for kind in ("markdown", "caption", "error", "warning", "info", "success")
           for e in getattr(at, kind)]
    out += [b.proto.label for b in at.button] + image_captions(at, raw=True)
    return out


def test_user_text_is_never_rendered_as_markdown(indexes):
    nid = first_neighbour(indexes)
    store(indexes).put("tiny", QUERY, nid, "bad", reason="wrong_category", note=HOSTILE_NOTE, user=HOSTILE_USER)
    at = run(app(index="tiny", query=QUERY, neighbour=nid, user=HOSTILE_USER))
    at.switch_page("app_pages/labels.py")
    run(at)
    explore = run(app(index="tiny", query=QUERY, neighbour=nid, user=HOSTILE_USER))
    for page in (explore, at):
        sources = "\n".join(markdown_sources(page))
        assert "](http" not in sources and "![" not in sources  # no image fetched, no link made
        assert HOSTILE_USER in texts(page.markdown) or HOSTILE_NOTE in texts(page.markdown)
    assert HOSTILE_NOTE in texts(explore.markdown)  # the note, shown as typed, beside this user's verdict
    assert HOSTILE_USER in texts(at.markdown)  # the Labels page names the labeller as typed
    assert "wrong category" in texts(explore.markdown) and "wrong_category" not in texts(explore.markdown)
    # a hostile id in the URL is shown as text in the error too
    bad = run(app(index="tiny", query=HOSTILE_NOTE))
    assert "![" not in "\n".join(markdown_sources(bad)) and HOSTILE_NOTE in texts(bad.error)


def test_the_failures_page_shows_the_selected_query_id_as_text(tmp_path, monkeypatch):
    """A gallery file name is user text: the Failures page's "Selected query" line shows it as named, with no
    image fetched, no code span broken out of, no emphasis (it was put inside backticks in a Markdown string)."""
    import shutil

    from simx.index import build_index
    from tests.app.conftest import TOY, make_gallery

    gallery = make_gallery(tmp_path / "gallery", per_label=3)
    hostile = "red/`![x](http:t.png)` **b**.png"
    shutil.copy(gallery / "red" / "red0.png", gallery / hostile)
    root = tmp_path / "indexes"
    build_index(gallery, "tiny", model=TOY, root=root, workers=0, progress=False)
    monkeypatch.setenv("SIMX_INDEXES", str(root))
    monkeypatch.setenv("SIMX_USER", "tester")
    at = app(index="tiny")
    at.switch_page("app_pages/failures.py")
    run(at)
    ids = list(at.dataframe[0].value["id"])
    at.session_state["fail_table"] = {"selection": {"rows": [ids.index(hostile)], "columns": []}}  # a row click
    run(at)
    assert f"Selected query: {hostile}" in texts(at.markdown)
    sources = "\n".join(markdown_sources(at))
    assert "![" not in sources and "**b**" not in sources and "`" not in sources.replace("\\`", "")


def test_labelling_asks_for_a_name_instead_of_saving_as_anonymous(indexes, monkeypatch):
    monkeypatch.delenv("SIMX_USER")
    at = review_page(index="tiny")
    assert "Who is labelling?" in texts(at.warning)
    assert at.button(key="rq_good").disabled and at.button(key="rq_bad").disabled
    assert not review_keys(at)["enabled"]  # the keys wait for a name too
    at.text_input(key="user_prompt_review").set_value("carol")
    run(at)
    assert review_keys(at)["enabled"] and not at.warning and at.text_input(key="user").value == "carol"
    at.button(key="rq_good").click()
    run(at)
    rows = store(indexes).list(index="tiny")
    assert [(r.user, r.verdict) for r in rows] == [("carol", "good")]
    assert "anonymous" not in store(indexes).users(index="tiny")
    # the Explore page's label panel asks too
    nid = first_neighbour(indexes)
    ex = run(app(index="tiny", query=QUERY, neighbour=nid))
    assert "Who is labelling?" in texts(ex.warning) and ex.button(key="label_bad").disabled


def test_the_name_in_the_url_labels_and_the_per_user_queue_resumes(indexes, monkeypatch):
    monkeypatch.delenv("SIMX_USER")
    at = review_page(index="tiny", user="dave")
    first = review_keys(at)["pair"]
    for key in ("rq_good", "rq_bad"):
        at.button(key=key).click()
        run(at)
    third = review_keys(at)["pair"]
    assert [r.user for r in store(indexes).list(index="tiny")] == ["dave", "dave"]
    # a new session (reload, new tab, shared link with the name) resumes dave's queue where he left it
    again = review_page(index="tiny", user="dave")
    assert review_keys(again)["pair"] == third != first
    assert "2 of " in again.get("progress")[0].proto.text
    # someone else starts at the beginning of their own queue
    assert review_keys(review_page(index="tiny", user="erin"))["pair"] == first


def test_review_queue_shows_the_score_and_reasons_as_text(indexes):
    at = review_page(index="tiny")
    q, n, r = review_keys(at)["pair"]
    metric = at.metric[0]
    assert metric.label == f"score (rank {r})" and r >= 1
    from simx.index import open_index

    hit = next(h for h in open_index("tiny", root=indexes).search_id(q, 10) if h.id == n)
    assert metric.value == f"{hit.score:.4f}"
    legend = texts(at.caption)
    assert "**1** background shortcut" in legend and "**2** wrong category" in legend
    assert "wrong_category" not in legend and "background_shortcut" not in legend
    assert at.selectbox(key="review_reason").format_func("wrong_category") == "wrong category"


def _png(size: tuple[int, int], mode: str) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def test_uploads_too_large_when_decoded_or_svg_are_refused_in_the_page(indexes):
    bomb = _png((7900, 7900), "1")
    assert len(bomb) < 20_000
    at = run(app(index="tiny"))
    at.get("file_uploader")[0].set_value(("bomb.png", bomb, "image/png"))
    run(at)
    err = texts(at.error)
    assert "Cannot use 'bomb.png' as a query" in err and "too large" in err and "7900 x 7900" in err
    assert "query" not in at.query_params
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    at = run(app(index="tiny"))
    at.get("file_uploader")[0].set_value(("logo.svg", svg, "image/svg+xml"))
    run(at)
    assert "SVG (vector) images are not supported" in texts(at.error) and "query" not in at.query_params


def test_manifest_columns_show_beside_the_query_as_text(tmp_path, monkeypatch):
    from simx.index import build_index
    from tests.app.conftest import TOY, make_gallery

    gallery = make_gallery(tmp_path / "g", per_label=2)
    rows = ["path,id,label,photographer"]
    for p in sorted(gallery.rglob("*.png")):
        rows.append(f"{p},{p.stem},{p.parent.name},**Ana** [x](http://example.invalid)")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    root = tmp_path / "indexes"
    build_index(tmp_path / "m.csv", "shots", model=TOY, root=root, workers=0, progress=False)
    monkeypatch.setenv("SIMX_INDEXES", str(root))
    monkeypatch.setenv("SIMX_USER", "tester")
    at = run(app(index="shots", query="red0"))
    (exp,) = [e for e in at.expander if e.label == "More about this image"]
    table = exp.dataframe[0].value
    assert list(table["column"]) == ["photographer"]
    assert list(table["value"]) == ["**Ana** [x](http://example.invalid)"]  # verbatim, in a table, not Markdown


def test_url_state_k_opacity_point_and_sane_round_trip(indexes):
    nid = first_neighbour(indexes)
    # an out-of-range or malformed k is corrected in the URL too
    for raw, fixed in (("500", "30"), ("0", "1"), ("ten", "10")):
        at = run(app(index="tiny", query=QUERY, k=raw))
        assert at.query_params["k"] == fixed and at.slider(key="k_pick").value == int(fixed)
        assert f"Top {min(int(fixed), 14)} neighbours" in texts(at.markdown)  # 15 images: 14 others at most
    # the URL says what is shown; a changed URL (Back / Forward) is followed by the widgets
    at = run(app(index="tiny", query=QUERY, k="5"))
    at.slider(key="k_pick").set_value(7)
    run(at)
    assert at.query_params["k"] == "7"
    at.query_params["k"] = "5"  # Back
    run(at)
    assert at.slider(key="k_pick").value == 5 and "Top 5 neighbours" in texts(at.markdown)
    # opacity, the joint view's point and SANE live in the URL: a link reopens them
    at = run(app(index="tiny", query=QUERY, neighbour=nid, alpha="0.3", point="20,30", sane="1"))
    assert at.slider(key="alpha").value == 0.3
    assert "query point (20, 30)" in texts(at.caption)
    assert not [b for b in at.button if b.key and b.key.startswith("btn_sane_")]  # SANE ran, no "Run" button
    at.number_input(key="joint_x").set_value(12.0)
    run(at)
    assert at.query_params["point"] == "12,30"
    at.slider(key="alpha").set_value(0.8)
    run(at)
    assert at.query_params["alpha"] == "0.8"
    at.button(key="joint_clear").click()
    run(at)
    assert "point" not in at.query_params and "Click a point" in texts(at.caption)
    # a new neighbour starts without the previous pair's point and SANE panel
    at.query_params["point"] = "3,4"
    run(at)
    assert "query point (3, 4)" in texts(at.caption)
    other = [b for b in at.button if b.key and b.key.startswith("nb_") and b.key != f"nb_{nid}"][0]
    other.click()
    run(at)
    assert at.query_params["neighbour"] == other.key[3:]
    assert "point" not in at.query_params and "sane" not in at.query_params


def test_long_gallery_labels_are_shown_whole(tmp_path, monkeypatch):
    """A gallery label longer than its grid cell wraps as text under the picture (a button would cut it to
    "a very lon..."); the button only picks."""
    from simx.index import build_index
    from tests.app.conftest import TOY

    long = "a very long label name that goes on and on for many characters indeed"
    for i, label in enumerate((long, "short")):
        (tmp_path / "g" / label).mkdir(parents=True)
        for j in range(3):
            Image.fromarray(np.full((32, 32, 3), 40 * (i + 1) + 10 * j, np.uint8)).save(
                tmp_path / "g" / label / f"x{j}.png")
    build_index(tmp_path / "g", "tiny", model=TOY, root=tmp_path / "idx", workers=0, progress=False)
    monkeypatch.setenv("SIMX_INDEXES", str(tmp_path / "idx"))
    at = run(app(index="tiny"))
    assert texts(at.caption).count(long) == 3
    picks = [b for b in at.button if b.key and b.key.startswith("pick_")]
    assert len(picks) == 6 and {b.label for b in picks} == {"Choose"}
