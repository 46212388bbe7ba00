"""The HTML report shows people's text (notes, names, labels, ids) as text: escaped, never Markdown or HTML."""

from __future__ import annotations

from simx import render
from simx.data import Item
from tests.render.test_views import exp, model  # noqa: F401 - fixtures

NOTE = '![x](http://host.invalid/track.png) <img src="http://host.invalid/pixel.png"> **bold**'
USER = '[bob](http://evil.invalid/)<script>alert(1)</script>'


def test_report_escapes_notes_names_and_labels(exp):  # noqa: F811
    item = Item(id='q<b>1</b>', path="q.png", label='<i>label</i>')
    html = render.report_html([exp], query_item=item, neighbour_item=item, index_name="tiny", model_spec="toy",
                              label={"verdict": "bad", "reason": "wrong category", "note": NOTE, "user": USER})
    assert "<img src=\"http://host.invalid" not in html and "<script>alert" not in html and "<b>1</b>" not in html
    assert "&lt;img src=&#34;http://host.invalid/pixel.png&#34;&gt;" in html or \
        "&lt;img src=&quot;http://host.invalid/pixel.png&quot;&gt;" in html
    assert "![x](http://host.invalid/track.png)" in html and "**bold**" in html  # as typed, not rendered
    assert "[bob](http://evil.invalid/)&lt;script&gt;" in html and "wrong category" in html
