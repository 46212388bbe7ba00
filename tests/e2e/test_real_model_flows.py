"""The pair view's SANE panel, an uploaded query through to its downloads, and the review queue's keys, in a real
browser on the demo scenes embedded by the real default model (EfficientNet-Lite0).

SANE runs exactly as a user of the demo gets it: the demo trains no attribute predictor, so the model's own
ImageNet classifier is the vocabulary (:func:`simx.attributes.index_attributes`). Downloads are read back and
checked: the PNG decodes to the figure's size, the HTML report carries the pair's ids, the user's note as escaped
text and the map pictures. Labels are checked in the database through :mod:`simx.labels`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import re
from pathlib import Path

import pytest
from markupsafe import escape

from tests.e2e.test_browser import CHROMIUM
from tests.e2e.test_every_control import page  # noqa: F401 - the fixture: one browser page per test
from tests.e2e.test_every_control import (choose, settled, shown_neighbours, until_shown, wait_param)
from tests.e2e.real_server import INDEX, index, real_demo_server, store

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install "
                                                                     "chromium): no browser to drive")]

USER = "e2e"  # the server's $SIMX_USER: the pair view's labels are this user's
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from real_demo_server(tmp_path_factory, "e2e_real_flows", user=USER)


def download(page, key: str):
    """Click the download button whose Streamlit key is ``key``: (suggested file name, bytes)."""
    with page.expect_download() as dl:
        page.locator(f".st-key-{key} button").first.click()
    return dl.value.suggested_filename, Path(dl.value.path()).read_bytes()


def png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    assert data[:8] == PNG_MAGIC
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # decodes the whole picture: a truncated file fails here
        return im.size


def maps_shown(page, method: str = "gradcam") -> None:
    """Wait for the pair view's ``method`` maps. A method may wait for a click showing its cost (its estimate
    crosses the confirmation limit on a loaded machine): click "Run <method>" when it is shown."""
    done = f"{method}: neighbour"
    page.wait_for_function("([a, b]) => document.body.innerText.includes(a) || document.body.innerText.includes(b)",
                           arg=[done, f"Run {method}"])
    run = page.locator("button", has_text=f"Run {method}")
    if run.count():
        run.first.click()
    page.locator("[data-testid='stImage']").filter(has_text=done).first.wait_for(state="visible")
    settled(page)


# ------------------------------------------------------------------------------------------------ SANE


def test_sane_on_the_pair_view_and_its_report(server, page):
    from simx.attributes import ImageNetAttributes

    idx = index(server)
    query = "scene_0007"
    neighbour = idx.search_id(query, k=1)[0].id
    note = '<img src=x onerror="alert(1)"> & sky'  # the user's text: the report must show it as text
    store(server).put(INDEX, query, neighbour, "bad", reason="background_shortcut", user=USER, note=note)
    page.goto(server["url"] + f"/?index={INDEX}&query={query}&neighbour={neighbour}")
    maps_shown(page)
    # SANE against gradcam's saliency (seconds; RISE, the default, takes minutes on a loaded CPU)
    choose(page, "sane_saliency", "gradcam")
    wait_param(page, "sane_saliency", "gradcam")
    page.get_by_role("button", name="Run SANE").click()
    wait_param(page, "sane", "1")
    # the demo trains no predictor: the default model's ImageNet classes are the vocabulary, and the panel says so
    page.get_by_text("Vocabulary: no attribute predictor is trained for this index").wait_for()
    page.wait_for_function("() => document.body.innerText.includes('on the neighbour') || "
                           "document.body.innerText.includes('No attribute that both images')")
    settled(page)
    best = page.locator("[data-testid='stImage']").filter(has_text="on the neighbour")
    assert best.count() == 1, "this pair (town and animal scenes) shares ImageNet classes: SANE must name one"
    top = re.fullmatch(r"'(.+)' on the neighbour", best.first.inner_text().strip()).group(1)
    panel = page.locator("[data-testid='stExpander']").filter(has_text="Attributes (SANE)")
    assert panel.locator("[data-testid='stDataFrame']").count() == 1  # the ranking table
    # the HTML report carries the SANE ranking, the pair's ids, the saved label (escaped) and every picture
    name, data = download(page, "dl_html")
    assert name == f"simx_{INDEX}_{query}_{neighbour}.html"
    report = data.decode("utf-8")
    assert f"<code>{query}</code>" in report and f"<code>{neighbour}</code>" in report
    assert "<h2>Label</h2>" in report and "background shortcut" in report
    assert str(escape(note)) in report and note not in report  # text, never markup
    assert "<script" not in report.lower()
    section = report.split("<h2>Attributes (SANE)</h2>", 1)[1]
    names = re.findall(r"<tr><td>(.+?)</td><td>", section)
    assert names and html.unescape(names[0]) == top
    vocabulary = set(ImageNetAttributes(idx.model, 0.1).vocabulary.names)
    assert {html.unescape(n) for n in names} <= vocabulary
    pictures = DATA_URI.findall(report)
    # gradcam's row: query, two maps with their colour bars, neighbour; then SANE's best attribute map
    assert len(pictures) == 7
    for b64 in pictures:
        w, h = png_size(base64.b64decode(b64))
        assert w >= 32 and h >= 8


# ------------------------------------------------------------------------------------------------ upload


def test_an_uploaded_query_reaches_its_maps_and_downloads(server, page, tmp_path):
    from PIL import Image

    from simx.render.figure import COLUMN_IN

    idx = index(server)
    source = idx.item("scene_0005").path
    upload = tmp_path / "my photo.png"  # not in the gallery: a re-encoded, slightly cropped copy of a scene
    with Image.open(source) as im:
        im.convert("RGB").crop((4, 4, im.width - 4, im.height - 4)).save(upload)
    data = upload.read_bytes()
    expected = [h.id for h in idx.search_image(data, k=10)]
    assert expected[0] == "scene_0005"
    page.goto(server["url"] + f"/?index={INDEX}")
    page.get_by_role("tab", name="Upload an image").click()
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(upload))
    key = "upload:" + hashlib.sha1(data).hexdigest()[:16]
    wait_param(page, "query", key)
    page.get_by_text("Top 10 neighbours").wait_for()
    page.get_by_text("uploaded image (in memory)").wait_for()
    settled(page)
    assert shown_neighbours(page) == expected
    # its nearest neighbour: the maps of the uploaded image against it, no labelling, both downloads
    neighbour = expected[0]
    page.locator(f".st-key-nb_{neighbour} button").click()
    wait_param(page, "neighbour", neighbour)
    maps_shown(page)
    page.locator("[data-testid='stImage']").filter(has_text="gradcam: query").first.wait_for(state="visible")
    page.get_by_text("Uploaded queries are not in the gallery").wait_for()
    assert page.get_by_text("Label this pair").count() == 0
    name, png = download(page, "dl_png")
    assert name.endswith(f"_{neighbour}.png") and name.startswith(f"simx_{INDEX}_upload_")
    # one row (gradcam) of simx.render.figure.pair_figure at 100 dpi
    assert png_size(png) == (round(4 * COLUMN_IN * 100), round((3.9 + 0.5) * 100))
    name, data = download(page, "dl_html")
    assert name.endswith(".html")
    report = data.decode("utf-8")
    assert "<b>Query</b>:" in report and "uploaded image" in report
    assert f"<code>{neighbour}</code>" in report and "<h3>gradcam" in report
    pictures = DATA_URI.findall(report)
    assert len(pictures) == 6  # query, two maps, two colour bars, neighbour
    with Image.open(source) as im:
        shown_size = png_size(base64.b64decode(pictures[-1]))
        assert shown_size[0] / shown_size[1] == pytest.approx(im.width / im.height, rel=0.05)


# ------------------------------------------------------------------------------------------------ review queue


def test_review_queue_skip_back_and_reason_field(server, page):
    from simx.index import evaluate
    from simx.labels import REASONS
    from simx.review import queue_pairs

    user = "reviewer"
    pairs = [(p.query, p.neighbour) for p in queue_pairs(evaluate(index(server), k=10).per_query, 10)]
    labels = store(server)
    page.goto(server["url"] + f"/review?index={INDEX}&user={user}")
    page.locator(".st-key-rq_good button").wait_for()
    page.locator("[data-testid='simxReviewKeys']").wait_for(state="attached")
    settled(page)

    def shown(page) -> tuple[str, str]:
        texts = page.locator("[data-stale='false'] [data-testid='stText']").filter(has_text="labels:")
        q, n = texts.all_inner_texts()[:2]
        return q.split("\n")[0], n.split("\n")[0]

    def progress(n: int) -> None:
        page.wait_for_function("(t) => [...document.querySelectorAll('[data-testid=\"stProgress\"]')]"
                               ".some(p => p.innerText.startsWith(t))", arg=f"{n} of {len(pairs)} pairs")
        settled(page)

    def press(key: str) -> None:
        page.evaluate("() => document.activeElement && document.activeElement.blur()")
        page.keyboard.press(key)

    def at(pair: tuple[str, str], done: int) -> None:
        """The queue shows ``pair`` with ``done`` pairs of the queue labelled or skipped."""
        progress(done)
        assert until_shown(page, shown, pair) == pair

    at(pairs[0], 0)
    # S skips: the next pair, nothing saved
    press("s")
    at(pairs[1], 1)
    assert labels.count(index=INDEX, user=user) == 0
    # Left goes back to the skipped pair (it still counts as skipped until it gets a verdict)
    press("ArrowLeft")
    at(pairs[0], 1)
    assert labels.count(index=INDEX, user=user) == 0
    # the reason field: B saves the pair as bad with the reason chosen there, and the queue moves on
    reason = "wrong_category"
    choose(page, "review_reason", REASONS[reason])
    press("b")
    at(pairs[1], 1)
    rows = labels.list(index=INDEX, user=user)
    assert [(r.query_id, r.neighbour_id, r.verdict, r.reason) for r in rows] == [(*pairs[0], "bad", reason)]
    # the reason stays chosen for the next B; G saves no reason
    press("g")
    at(pairs[2], 2)
    press("b")
    at(pairs[3], 3)
    got = {(r.query_id, r.neighbour_id): (r.verdict, r.reason) for r in labels.list(index=INDEX, user=user)}
    assert got == {pairs[0]: ("bad", reason), pairs[1]: ("good", None), pairs[2]: ("bad", reason)}
    # Left shows the last labelled pair again; going back deletes nothing
    press("ArrowLeft")
    at(pairs[2], 3)
    assert labels.count(index=INDEX, user=user) == 3
