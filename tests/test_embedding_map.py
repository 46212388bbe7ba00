"""The embedding map's figure (simx.embedding_map): distinct colours for 30 labels, 'other' for the rest, and a
correctness colouring that reads as right / wrong / not a query (issue 12 item 11)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from simx.embedding_map import (CORRECTNESS, LABEL_PALETTE, MAX_LABELS, OTHER, OTHER_COLOUR, label_colours,
                                map_figure)


def lab(hex_colour: str) -> np.ndarray:
    """CIELAB (D65) of an sRGB hex colour."""
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255.0
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ lin
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def projection(labels: list[str | None]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"id": [f"i{j}" for j in range(len(labels))], "label": labels,
                         "x": rng.normal(size=len(labels)), "y": rng.normal(size=len(labels))})


def test_palette_has_30_clearly_distinct_colours_none_grey():
    assert len(LABEL_PALETTE) == MAX_LABELS == 30 and len(set(LABEL_PALETTE)) == 30
    labs = [lab(c) for c in LABEL_PALETTE]
    closest = min(np.linalg.norm(a - b) for a, b in itertools.combinations(labs, 2))
    assert closest > 25  # CIE76 ΔE; about 2.3 is just noticeable
    grey = lab(OTHER_COLOUR)
    assert min(np.linalg.norm(c - grey) for c in labs) > 20
    assert all(np.hypot(c[1], c[2]) > 25 for c in labs)  # every palette colour is clearly chromatic


def test_35_labels_get_30_colours_and_other():
    labels = [f"label{j:02d}" for j in range(35) for _ in range(35 - j)]  # label00 most frequent
    fig = map_figure(projection(labels), "label")
    names = [t.name for t in fig.data]
    colours = [t.marker.color for t in fig.data]
    assert names[:30] == [f"label{j:02d}" for j in range(30)] and names[30] == OTHER and len(names) == 31
    assert len(set(colours[:30])) == 30 and colours[30] == OTHER_COLOUR
    assert len(fig.data[30].x) == sum(35 - j for j in range(30, 35))
    assert "the other 5 in grey" in fig.layout.legend.title.text
    assert sum(len(t.x) for t in fig.data) == len(labels)


def test_few_labels_no_other_and_unlabelled_points_are_shown():
    fig = map_figure(projection(["a", "b", None, "a"]), "label", item_labels={"i0": ["a", "c"]})
    assert [c[1] for c in fig.data[0].customdata] == ["a | c", "a"]  # hover: every label; colour: the primary
    assert [t.name for t in fig.data] == ["a", "(none)", "b"]  # most frequent first, ties by name
    assert OTHER not in [t.name for t in fig.data] and fig.layout.legend.title.text == "label"
    assert label_colours(["a", "a", "b"]) == {"a": LABEL_PALETTE[0], "b": LABEL_PALETTE[1]}


def test_correctness_colours_read_right_wrong_not_a_query():
    df = projection(["a", "a", "b", None])
    per_query = pd.DataFrame({"id": ["i0", "i1", "i2"], "p1": [1.0, 0.0, 0.0]})
    fig = map_figure(df, "correctness", per_query)
    by_name = {t.name.split(":")[0].split(" (")[0]: t for t in fig.data}
    assert list(by_name) == ["right", "wrong", "not a query"]
    assert [c[0] for c in by_name["right"].customdata] == ["i0"]
    assert [c[0] for c in by_name["wrong"].customdata] == ["i1", "i2"]
    assert [c[0] for c in by_name["not a query"].customdata] == ["i3"]
    r, g, b = (int(by_name["right"].marker.color[i : i + 2], 16) for i in (1, 3, 5))
    assert g > r and g > b  # green
    r, g, b = (int(by_name["wrong"].marker.color[i : i + 2], 16) for i in (1, 3, 5))
    assert r > g and r > b  # red
    grey = lab(by_name["not a query"].marker.color)
    assert np.hypot(grey[1], grey[2]) < 5  # grey
    assert fig.layout.showlegend is not False
    assert by_name["right"].name == CORRECTNESS["right"][1] and "shares a label" in by_name["right"].name
    assert "shares no label" in by_name["wrong"].name


def test_without_an_evaluation_every_point_is_not_a_query_and_bad_mode_is_refused():
    fig = map_figure(projection(["a", "b"]), "correctness", None)
    assert [t.name for t in fig.data] == [CORRECTNESS["not a query"][1]]
    with pytest.raises(ValueError, match="colour_by"):
        map_figure(projection(["a"]), "colour")
