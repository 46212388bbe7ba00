"""The SANE panel uses the attribute predictor trained for the index and says which vocabulary it used; its table
lists only attributes both images are predicted to have (issue 12 item 9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.app.conftest import APP, RUN_TIMEOUT_S
from tests.app.test_app import texts

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

QUERY = "red/red1.png"
NAMES = ["look:everywhere", "look:nowhere", "look:sometimes"]


def save_predictor(root) -> None:
    """A predictor for the tiny index: 'everywhere' is predicted for every image, 'nowhere' for none."""
    from simx.attributes import AttributeHead, AttributePredictor, Vocabulary, model_record
    from simx.attributes import predictor_dir
    from simx.index import open_index

    index = open_index("tiny", root=root)
    head = AttributeHead(int(index.model.feature_channels), len(NAMES))
    with torch.no_grad():
        head.conv.weight.zero_()
        head.bias.copy_(torch.tensor([6.0, -6.0, 0.0]))
    pred = AttributePredictor(head, Vocabulary(names=NAMES, description="test looks"), model_record(index.model),
                              thresholds=np.array([0.5, 0.5, 0.6], np.float32))
    pred.save(predictor_dir(index, heat=True))


def run(at):
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_sane_panel_uses_the_index_predictor_and_shows_only_shared_attributes(indexes):
    from simx.index import open_index

    save_predictor(indexes)
    nid = open_index("tiny", root=indexes).search_id(QUERY, 10)[0].id
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)
    for key, value in {"index": "tiny", "query": QUERY, "neighbour": nid}.items():
        at.query_params[key] = value
    run(at)
    at.button(key=f"btn_sane_{QUERY}|{nid}").click()
    run(at)
    captions = texts(at.caption)
    assert "Vocabulary: the attribute predictor trained for this index (3 attributes; test looks)" in captions
    assert len(at.dataframe) == 1  # the SANE table
    table = at.dataframe[0].value
    assert list(table["attribute"]) == ["look:everywhere"]  # 'nowhere' and 'sometimes' (0.5 < 0.6) are not shared
    assert (table["query confidence"] >= table["threshold"]).all()
    assert (table["neighbour confidence"] >= table["threshold"]).all()
    assert not at.error


def test_sane_panel_says_no_predictor_is_trained(indexes):
    from simx.index import open_index

    nid = open_index("tiny", root=indexes).search_id(QUERY, 10)[0].id
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)
    for key, value in {"index": "tiny", "query": QUERY, "neighbour": nid}.items():
        at.query_params[key] = value
    run(at)
    at.button(key=f"btn_sane_{QUERY}|{nid}").click()
    run(at)
    # the toy model has no ImageNet classifier either: SANE says it is unavailable, with how to train one
    assert any("simx attributes train" in str(i.value) for i in at.info)
