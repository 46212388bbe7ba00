"""The Compare page (Streamlit AppTest) over two indexes of one tiny gallery."""

from __future__ import annotations

import pytest

from tests.app.conftest import APP

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest


def test_compare_page_shows_worst_queries_and_a_pair_under_both_models(root):
    from simx.labels import open_labels

    from simx.index import open_index

    a = open_index("tiny", root=root)
    q = a.ids[0]
    first = a.search_id(q, 1)[0].id
    open_labels("tiny", root=root).put("tiny", q, first, "bad", user="ann")
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["index"] = "tiny"
    at.query_params["b"] = "tiny-b"
    at.run()
    at.switch_page("app_pages/compare.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.sidebar.selectbox[1].value == "tiny-b"
    summary = at.dataframe[0].value
    assert "precision@1" in set(summary["measure"])
    worst = at.dataframe[1].value
    assert len(worst) and list(worst["d_ap"]) == sorted(worst["d_ap"]) and (worst["d_ap"] < 0).any()
    pairs = at.dataframe[2].value
    assert (pairs["query"] == q).any()
    captions = [c.value for c in at.caption]
    assert any(c.startswith("1. ") for c in captions)  # the neighbour lists
    assert any("similarity" in m.value for m in at.markdown if m.value.startswith("**A\\: tiny"))
    assert any("similarity" in m.value for m in at.markdown if m.value.startswith("**B\\: tiny\\-b"))
    assert len(at.get("download_button")) == 2  # the summary, and the summary with the pair
    assert at.query_params["query"] == [worst.iloc[0]["id"]] or at.query_params["query"] == worst.iloc[0]["id"]


def test_compare_page_without_a_second_index_says_how_to_make_one(root):
    import shutil

    shutil.rmtree(root / "tiny-b")
    shutil.rmtree(root / "part")
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["index"] = "tiny"
    at.run()
    at.switch_page("app_pages/compare.py")
    at.run()
    assert not at.exception
    assert "simx train tiny --out" in at.info[0].value
