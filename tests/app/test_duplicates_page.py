"""The Duplicates page (issue 16): groups of near-identical items from a range search, and leaks into another
index, drawn from :mod:`simx.index.duplicates` without error."""

from __future__ import annotations

import pytest

from tests.app.conftest import APP, RUN_TIMEOUT_S

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest


def _run(at):
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_duplicates_page_groups_and_leaks(indexes):
    from simx.index import open_index
    from simx.index.duplicates import find_duplicates

    # the tiny toy model calls every coloured square alike: at 0.999 the page has groups to show
    expected = find_duplicates(open_index("tiny", root=indexes), threshold=0.999)
    assert expected.groups
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)
    at.query_params["index"] = "tiny"
    _run(at)
    at.switch_page("app_pages/duplicates.py")
    _run(at)
    at.sidebar.number_input(key="dup_threshold").set_value(0.999)
    _run(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["near-duplicate pairs"] == str(len(expected.pairs))
    assert metrics["groups"] == str(len(expected.groups))
    headers = [h.value for h in at.subheader]
    g = expected.groups[0]
    assert headers[0] == f"{g['size']} items, scores {g['min_score']:.4f} to {g['max_score']:.4f}"
    assert (indexes / "tiny" / "duplicates_t0.9990.parquet").is_file()
