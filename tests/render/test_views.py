"""The PNG figure and the HTML report draw an explanation's maps exactly as the dashboard does."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from simx import render
from simx.data import Item
from simx.explain import explain
from simx.explain.metrics import ESTIMATE_STEPS, faithfulness
from simx.models.toy import tiny_linear
from tests.render.test_colours import blocks

#: Block centres (x, y) of the 4 x 4 block maps below (16-pixel blocks on a 64-pixel input).
PROBES = [(8, 8), (24, 40), (56, 24), (40, 56)]


@pytest.fixture(scope="module")
def model():
    return tiny_linear()


@pytest.fixture
def exp(model):
    """A real explanation whose maps are replaced by block maps, so probe points are unambiguous."""
    q, n = pictures(2, seed=0)
    e = explain(model, q, [n], method="searchcam")
    e.query_maps = blocks(np.array([[0.51, 0.52, 0.53, 0.52]] * 4) + np.eye(4) * 0.005)[None]
    e.neighbour_maps = blocks(np.array([[0.50, 0.52, 0.54, 0.52]] * 4))[None]
    e.query_baseline = np.array([0.52], np.float32)
    e.neighbour_baseline = np.array([0.52], np.float32)
    return e


def pictures(n: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]


def _images_of(html: str) -> dict[str, np.ndarray]:
    """alt text -> decoded picture of every inlined image of a report."""
    out = {}
    for alt, b64 in re.findall(r"<img class=\"pic\" alt=\"([^\"]+)\" src=\"data:image/png;base64,([^\"]+)\"", html):
        out[alt] = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
    return out


def _axes_pixel(fig, ax, png: np.ndarray, x: float, y: float, size: int = 64) -> np.ndarray:
    """The PNG pixel at image coordinate (x, y) of the picture drawn in ``ax``."""
    box = ax.get_window_extent()
    h = png.shape[0]
    px = box.x0 + (x + 0.5) / size * box.width
    py = h - (box.y0 + box.height - (y + 0.5) / size * box.height)
    return png[int(py), int(px)]


def test_png_report_and_dashboard_show_the_same_colours(exp):
    panels = render.pair_panels(exp)  # what the dashboard shows (st.image of panel.picture())
    screen = [p.picture() for p in panels]
    html = render.report_html([exp])
    inlined = _images_of(html)
    fig = render.pair_figure([exp])
    png = np.asarray(Image.open(io.BytesIO(render.figure_png(fig))).convert("RGB"))
    for col, (panel, shown) in enumerate(zip(panels, screen)):
        in_report = inlined[panel.title]
        ax = fig.axes[1 + col]  # row: query, query map, neighbour map, neighbour
        for x, y in PROBES:
            assert np.array_equal(in_report[y, x], shown[y, x]), (panel.side, x, y)
            assert np.abs(_axes_pixel(fig, ax, png, x, y).astype(int) - shown[y, x]).max() <= 2, (panel.side, x, y)
    # the probes really differ: blue, white and red blocks, not one wash
    n = panels[1]
    colours = render.colorize(n.heat, n.limit, n.baseline).astype(int)  # the colours blended into the picture
    assert colours[8, 8, 2] > colours[8, 8, 0] + 60  # 0.50: blue
    assert colours[8, 40, 0] > colours[8, 40, 2] + 60  # 0.54: red
    assert np.ptp(colours[8, 24]) < 10  # 0.52, the baseline: white


def test_the_two_sides_share_one_scale_unless_per_map(exp):
    q, n = render.pair_panels(exp)
    assert q.limit == n.limit == pytest.approx(0.02, abs=1e-6)  # the neighbour's 0.50 / 0.54 set the scale
    q_own, n_own = render.pair_panels(exp, per_map=True)
    assert q_own.limit == pytest.approx(0.015, abs=1e-6) and n_own.limit == pytest.approx(0.02, abs=1e-6)
    assert not np.array_equal(q.picture(), q_own.picture())
    # per map, the query's weaker deviations reach the ends of the colour scale
    assert render.colorize(q_own.heat, q_own.limit, q_own.baseline)[40, 40].tolist() == \
        render.colorize(n.heat, n.limit, n.baseline)[8, 40].tolist()
    fig_text = " ".join(t.get_text() for ax in render.pair_figure([exp], per_map=True).axes for t in ax.texts)
    labels = " ".join(ax.get_xlabel() for ax in render.pair_figure([exp], per_map=True).axes)
    assert "scaled per map" in labels + fig_text
    assert "Each map is scaled to its own" in render.report_html([exp], per_map=True)


def test_colour_bars_show_the_real_values(exp):
    fig = render.pair_figure([exp])
    ticks = [t.get_text() for ax in fig.axes for t in ax.get_xticklabels()]
    assert {"0.5", "0.52", "0.54"} <= set(ticks)


def test_faithfulness_direction_and_flags_are_shown_everywhere(exp, model):
    f = faithfulness(exp, model, steps=ESTIMATE_STEPS)
    q, n = render.pair_panels(exp)
    assert "higher is better" in q.notes[0].text and f"{f['query']['insertion'][0]:.1f}" in q.notes[0].text
    html = render.report_html([exp])
    assert "higher is better" in html and f"{f['neighbour']['deletion'][0]:.1f}" in html
    exp.scores["faithfulness_estimate"]["query"]["better_than_random"] = [False]
    q, _ = render.pair_panels(exp)
    assert any(note.warning and "random map" in note.text for note in q.notes)
    assert "no better than a random map" in render.report_html([exp])


def test_a_map_on_the_padding_gets_a_warning(exp):
    exp.query_box = np.array([0, 16, 64, 48], np.int32)  # a letterboxed picture: rows 0-15, 48-63 are padding
    heat = np.zeros((1, 64, 64), np.float32)
    heat[0, :16] = 1.0
    exp.query_maps, exp.query_baseline = heat, np.zeros(1, np.float32)
    q, n = render.pair_panels(exp)
    assert any(note.warning and "padding" in note.text for note in q.notes)
    assert not any("padding" in note.text for note in n.notes)
    assert "on the padding" in render.report_html([exp])


def test_report_escapes_user_text_and_is_self_contained(exp):
    q = Item(id="q<script>", path="/g/q.png", label="cats & dogs", attributes=["fur"],
             metadata={"description": "![x](http://host/track.png)"})
    n = Item(id="n1", path="/g/n.png", label="<b>bold</b>")
    html = render.report_html([exp], query_item=q, neighbour_item=n, index_name="demo<1>", model_spec="toy",
                              rank=1, score=0.5, label={"verdict": "bad", "reason": "other",
                                                        "note": "<img src=http://x/y.png>", "user": "[me](http://a)"},
                              sane={"attributes": [("red <stripe>", 0.7)], "map": exp.query_maps[0],
                                    "image": exp.query_image})
    assert "<script>" not in html and "q&lt;script&gt;" in html and "cats &amp; dogs" in html
    assert "&lt;img src=http://x/y.png&gt;" in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "red &lt;stripe&gt;" in html and "demo&lt;1&gt;" in html
    assert not re.search(r"(src|href)=\"https?:", html)  # nothing fetched from outside the file


def test_figure_uses_no_pyplot_state_and_draws_one_row_per_method(exp, model, tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    q, n = pictures(2, seed=5)
    other = explain(model, q, [n], method="rise", n_samples=32)
    out = tmp_path / "pair.png"
    one = Image.open(io.BytesIO(render.pair_png([exp])))
    two = Image.open(io.BytesIO(render.pair_png([exp, other], path=out)))
    assert one.format == "PNG" and two.height > one.height * 1.6 and out.read_bytes()[:4] == b"\x89PNG"
    assert plt.get_fignums() == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # written atomically


def test_one_side_only_and_bad_pair(model):
    q, nb = pictures(2, seed=22)
    e = explain(model, q, [nb], method="searchcam", side="query")
    fig = render.pair_figure([e])
    assert "no map" in fig.axes[2].get_title()
    with pytest.raises(IndexError):
        render.pair_panels(e, k=1)
