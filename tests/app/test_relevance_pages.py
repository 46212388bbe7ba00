"""The dashboard on a multi-label index (issue 12 items 5 and 11): badges, Next failure, the review queue's
order, the Failures table and the embedding map's correctness colours all use "shares a label"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.app.conftest import APP, RUN_TIMEOUT_S, TOY

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 220), "yellow": (230, 200, 20)}
#: id -> labels. q0's primary label is red; the green|blue items share 'green' with it but not its primary label.
LABELS = {"q0": "red|green", "r1": "red", **{f"g{i}": "green|blue" for i in range(4)},
          **{f"b{i}": "blue|yellow" for i in range(4)}, "y0": "yellow", "y1": "yellow"}
QUERY = "q0"


@pytest.fixture(scope="session")
def multi_root(tmp_path_factory) -> Path:
    from simx.index import build_index

    base = tmp_path_factory.mktemp("simx_multi")
    gallery = base / "gallery"
    gallery.mkdir()
    rng = np.random.default_rng(1)
    rows = []
    for item_id, labels in LABELS.items():
        a = np.full((48, 48, 3), 255, np.uint8)
        for j, lab in enumerate(labels.split("|")):
            x, y = rng.integers(0, 20, 2)
            a[y + 24 * j // 2 : y + 24 * j // 2 + 16, x : x + 16] = COLOURS[lab]
        Image.fromarray(a).save(gallery / f"{item_id}.png")
        rows.append({"id": item_id, "path": f"{item_id}.png", "labels": labels})
    pd.DataFrame(rows).to_csv(gallery / "manifest.csv", index=False)
    root = base / "indexes"
    build_index(gallery / "manifest.csv", "multi", model=TOY, root=root, workers=0, progress=False)
    return root


@pytest.fixture()
def multi(multi_root, tmp_path, monkeypatch) -> Path:
    root = tmp_path / "indexes"
    shutil.copytree(multi_root, root)
    monkeypatch.setenv("SIMX_INDEXES", str(root))
    monkeypatch.delenv("SIMX_LABELS_URL", raising=False)
    monkeypatch.setenv("SIMX_USER", "tester")
    return root


def run(at):
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def app(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)
    for k, v in params.items():
        at.query_params[k] = v
    return at


def evaluation(root: Path, k: int = 10):
    from simx.index import evaluate, open_index

    index = open_index("multi", root=root)
    return index, evaluate(index, k=k)


def test_badges_say_shares_a_label_for_a_match_on_a_secondary_label(multi):
    from simx.relevance import shares_label

    index, _ = evaluation(multi)
    at = run(app(index="multi", query=QUERY))
    cards = [m.value for m in at.markdown if str(m.value).startswith("#")]
    hits = index.search_id(QUERY, 10)
    assert len(cards) == len(hits) == 10
    secondary = 0
    for card, hit in zip(cards, hits):
        expected = shares_label(index.item(QUERY), index.item(hit.id))
        assert ("shares a label" in card) is expected and ("no shared label" in card) is (not expected), card
        secondary += expected and index.item(hit.id).label != "red"
    assert secondary >= 1  # a green|blue neighbour: correct, though its primary label is not the query's
    assert "red \\| green" in "\n".join(str(c.value) for c in at.caption)  # the query's labels, all of them


def test_next_failure_walks_the_failures_of_the_new_definition(multi):
    from simx.index.evaluation import failure_ids

    _, res = evaluation(multi)
    failures = failure_ids(res.per_query)
    assert failures and all(ap < 1 for i, ap in zip(res.per_query["id"], res.per_query["ap"]) if i in failures)
    at = run(app(index="multi"))
    button = next(b for b in at.button if b.label == "Next failure")
    assert not button.disabled
    button.click()
    run(at)
    assert at.query_params["query"] == failures[0]


def test_review_queue_follows_the_evaluation_order_and_badges(multi):
    from simx.index.evaluation import review_pairs
    from simx.relevance import shares_label

    index, res = evaluation(multi)
    q, n, rank = review_pairs(res.per_query, 10)[0]
    at = run(app(index="multi"))
    at.switch_page("app_pages/review.py")
    run(at)
    shown = [str(t.value) for t in at.text]  # ids and labels as plain text under the pictures
    assert any(t.startswith(f"{q}\nlabels: ") for t in shown) and any(t.startswith(f"{n}\nlabels: ") for t in shown)
    assert at.metric[0].label == f"score (rank {rank})"
    badge = "shares a label" if shares_label(index.item(q), index.item(n)) else "no shared label"
    assert any(badge in str(m.value) for m in at.markdown)


def test_failures_table_shows_all_labels_and_marks_each_neighbour(multi):
    _, res = evaluation(multi)
    at = run(app(index="multi"))
    at.switch_page("app_pages/failures.py")
    run(at)
    df = at.dataframe[0].value
    expected = res.per_query.set_index("id")
    assert dict(zip(df["id"], df["p1"])) == dict(zip(expected.index, expected["p1"]))
    row = df.set_index("id").loc[QUERY]
    assert row["labels"] == "red | green"
    marks = [part.split(" ")[0] for part in row["neighbours"].split(", ")]
    assert marks == ["✓" if r else "✗" for r in expected.loc[QUERY, "relevant"][:5]]
    assert any("relevant = shares a label" in str(c.value) for c in at.caption)
    # the label filter matches any of a query's labels
    at.multiselect(key="fail_labels").set_value(["green"])
    run(at)
    ids = set(at.dataframe[0].value["id"])
    assert ids == {i for i, labs in zip(expected.index, expected["labels"]) if "green" in labs}


def test_embedding_map_correctness_colours_and_legend(multi):
    _, res = evaluation(multi)
    at = run(app(index="multi"))
    at.switch_page("app_pages/embedding_map.py")
    run(at)
    at.segmented_control(key="map_colour").set_value("correctness")
    run(at)
    spec = json.loads(_nodes(at, "plotly_chart")[0].proto.spec)
    traces = {t["name"].split(":")[0].split(" (")[0]: t for t in spec["data"]}
    right = {c[0] for c in traces["right"]["customdata"]}
    wrong = {c[0] for c in traces.get("wrong", {"customdata": []})["customdata"]}
    p1 = dict(zip(res.per_query["id"], res.per_query["p1"]))
    assert right == {i for i, v in p1.items() if v == 1} and wrong == {i for i, v in p1.items() if v < 1}
    assert traces["right"]["marker"]["color"] != traces.get("wrong", traces["right"])["marker"]["color"] or not wrong
    assert any("Green: the first neighbour is right" in str(c.value) for c in at.caption)


def _nodes(at, typ: str) -> list:
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
