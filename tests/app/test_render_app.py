"""The dashboard draws a map with the same pixels as the PNG figure and the HTML report (one renderer)."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from tests.app.test_app import QUERY, app, first_neighbour, nodes, run


@pytest.fixture
def shown_media(monkeypatch) -> dict[str, bytes]:
    """file id -> bytes of every picture the app hands to Streamlit's (in-memory) media storage."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    seen: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):
        file_id = original(self, path_or_data, mimetype, kind, filename)
        if isinstance(path_or_data, bytes):
            seen[file_id] = path_or_data
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    return seen


def _picture(at, media: dict[str, bytes], caption: str) -> np.ndarray:
    urls = [img.url for n in nodes(at, "image") for img in n.proto.imgs if img.caption == caption]
    assert len(urls) == 1, caption
    file_id = urls[0].rsplit("/", 1)[-1].split(".")[0]
    return np.asarray(Image.open(io.BytesIO(media[file_id])).convert("RGB"))


def test_screen_png_and_report_agree_at_probe_points(indexes, shown_media):
    from simx import render
    from simx.data import load_image
    from simx.explain import explain
    from simx.explain.metrics import ESTIMATE_STEPS, faithfulness
    from simx.index import open_index

    nid = first_neighbour(indexes)
    at = run(app(index="tiny", query=QUERY, neighbour=nid, methods="searchcam"))
    screen = [_picture(at, shown_media, f"searchcam: {side}") for side in ("query", "neighbour")]
    index = open_index("tiny", root=indexes)
    exp = explain(index.model, load_image(index.item(QUERY).path), [load_image(index.item(nid).path)],
                  method="searchcam")
    faithfulness(exp, index.model, steps=ESTIMATE_STEPS)
    html = render.report_html([exp])
    inlined = {alt: np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")) for alt, b64 in
               re.findall(r'<img class="pic" alt="([^"]+)" src="data:image/png;base64,([^"]+)"', html)}
    fig = render.pair_figure([exp])
    png = np.asarray(Image.open(io.BytesIO(render.figure_png(fig))).convert("RGB"))
    size = screen[0].shape[0]
    probes = [(size // 4, size // 4), (size // 2, size // 2), (3 * size // 4, size // 3), (size // 5, 4 * size // 5)]
    for col, (panel, shown) in enumerate(zip(render.pair_panels(exp), screen)):
        assert shown.shape == panel.image.shape
        box = fig.axes[1 + col].get_window_extent()
        for x, y in probes:
            assert np.array_equal(shown[y, x], inlined[panel.title][y, x]), (panel.side, x, y)
            fx = int(box.x0 + (x + 0.5) / size * box.width)
            fy = int(png.shape[0] - (box.y1 - (y + 0.5) / size * box.height))
            assert np.abs(png[fy, fx].astype(int) - shown[y, x]).max() <= 2, (panel.side, x, y)
    assert len({tuple(screen[0][y, x]) for x, y in probes}) > 1  # the probes see a map, not one flat colour


def test_per_map_toggle_rescales_the_weaker_map(indexes, shown_media):
    nid = first_neighbour(indexes)
    at = run(app(index="tiny", query=QUERY, neighbour=nid, methods="searchcam"))
    shared = [_picture(at, shown_media, f"searchcam: {side}") for side in ("query", "neighbour")]
    legends = [c for c in (t.value for t in at.caption)]
    at.toggle(key="per_map").set_value(True)
    run(at)
    own = [_picture(at, shown_media, f"searchcam: {side}") for side in ("query", "neighbour")]
    assert sum(not np.array_equal(a, b) for a, b in zip(shared, own)) >= 1  # the weaker side got its own scale
    assert legends  # notes were drawn with the maps
