"""The stakeholder summary of an :class:`~simx.diff.core.IndexDiff` as one self-contained HTML file.

One table (the metrics of A and B and their change, the query and labelled-pair counts), one plot (the per-query
change sorted, :func:`delta_figure`), then the worst queries and the labelled pairs that moved, and optionally one
pair's explanation under both models. Rendered with jinja2 with autoescaping on, so ids, labels and notes are
always text; pictures are inlined as base64 PNG (:func:`simx.report.data_uri`).
"""

from __future__ import annotations

import base64
import io
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .core import IndexDiff

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>simx diff: {{ d.a }} vs {{ d.b }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.6em 0 1.4em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.92em}
th{background:#f3f3f3}
.neg{color:#b2182b;font-weight:600}.pos{color:#2166ac;font-weight:600}
.pics img{max-width:260px;margin-right:.5em}
small{color:#666}
</style></head><body>
<h1>Model comparison: <code>{{ d.a }}</code> (A) vs <code>{{ d.b }}</code> (B)</h1>
<p>A: <code>{{ d.models.a }}</code><br>B: <code>{{ d.models.b }}</code><br>
<small>{{ d.overall.n_items }} gallery items, k = {{ d.k }}, labels at level {{ d.level }}; made {{ made }}</small></p>
{% for note in d.notes %}<p><small>{{ note }}</small></p>{% endfor %}
<h2>Summary</h2>
<table><tr><th>measure</th><th>A</th><th>B</th><th>change</th></tr>
{% for row in summary %}<tr><td>{{ row[0] }}</td><td>{{ row[1] }}</td><td>{{ row[2] }}</td>
<td class="{{ row[4] }}">{{ row[3] }}</td></tr>{% endfor %}
</table>
<h2>Per-query change, sorted</h2>
<img src="{{ plot }}" alt="per-query change sorted">
<h2>Worst queries</h2>
{% if worst %}<table><tr>{% for h in worst_header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in worst %}<tr>{% for v in r %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>
{% else %}<p>No query got worse.</p>{% endif %}
<h2>Labelled pairs</h2>
{% if pairs %}<table><tr>{% for h in pair_header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in pairs %}<tr>{% for v in r %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>
{% else %}<p>No labelled pair of this gallery.</p>{% endif %}
{% if pair %}<h2>Pair <code>{{ pair.query }}</code> / <code>{{ pair.neighbour }}</code> ({{ pair.method }})</h2>
<div class="pics">{% for side in pair.sides %}<p><b>{{ side.title }}</b> similarity {{ side.similarity }}<br>
<img src="{{ side.query }}" alt="query under {{ side.title }}"><img src="{{ side.neighbour }}"
 alt="neighbour under {{ side.title }}"></p>{% endfor %}
<p><img src="{{ pair.legend }}" alt="legend"><br><small>{{ pair.note }}</small></p></div>{% endif %}
</body></html>
"""


def delta_figure(diff: IndexDiff, width: float = 8.0, height: float = 3.2):
    """The summary plot: the per-query change (AP@k, else the top-k overlap) sorted ascending, as a matplotlib
    Figure (no pyplot)."""
    from matplotlib.figure import Figure

    name, values, _ = diff.sorted_deltas()
    fig = Figure(figsize=(width, height), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(values))
    if diff.has_metrics:
        colours = np.where(values < 0, "#b2182b", np.where(values > 0, "#2166ac", "#999999"))
        ax.bar(x, values, width=1.0, color=colours)
        ax.axhline(0, color="#444", lw=0.8)
    else:
        ax.plot(x, values, color="#2166ac")
    ax.set_xlabel("queries, sorted")
    ax.set_ylabel(name)
    ax.set_xlim(-0.5, max(len(values), 1) - 0.5)
    fig.tight_layout()
    return fig


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _signed(v: float) -> tuple[str, str]:
    return f"{v:+.3f}", "neg" if v < 0 else "pos" if v > 0 else ""


def summary_rows(diff: IndexDiff) -> list[tuple[str, str, str, str, str]]:
    """(measure, A, B, change, css class) rows of the summary table (the dashboard shows the same rows)."""
    o = diff.overall
    rows = []
    for key, m in (o.get("metrics") or {}).items():
        rows.append((key.replace("@k", f"@{diff.k}"), _fmt(m["a"]), _fmt(m["b"]), *_signed(m["delta"])))
    q = o.get("queries")
    if q:
        rows.append(("queries better / worse / unchanged (AP)", "", "", f"{q['better']} / {q['worse']} / "
                     f"{q['unchanged']}", ""))
    rows.append((f"mean top-{diff.k} overlap", "", "", _fmt(o["mean_overlap"]), ""))
    rows.append(("items whose first neighbour changed", "", "", str(o["top1_changed"]), ""))
    p = o["pairs"]
    rows.append(("labelled pairs fixed / regressed / unchanged", "", "",
                 f"{p['fixed']} / {p['regressed']} / {p['unchanged']}", ""))
    return rows


def _worst_rows(diff: IndexDiff, n: int) -> tuple[list[str], list[list[str]]]:
    worst = diff.worst(n)
    if diff.has_metrics:
        header = ["query", "label", "AP A", "AP B", "change", "P@1 A", "P@1 B", "entered", "left"]
        rows = [[r.id, _fmt(r.label), _fmt(r.ap_a), _fmt(r.ap_b), f"{r.d_ap:+.3f}", _fmt(r.p1_a), _fmt(r.p1_b),
                 ", ".join(r.entered[:5]), ", ".join(r.left[:5])] for r in worst.itertuples(index=False)]
    else:
        header = ["query", "overlap", "entered", "left"]
        rows = [[r.id, _fmt(r.overlap), ", ".join(r.entered[:5]), ", ".join(r.left[:5])]
                for r in worst.itertuples(index=False)]
    return header, rows


def diff_report_html(diff: IndexDiff, worst: int = 20, pairs: int = 50, pair: dict[str, Any] | None = None) -> str:
    """The HTML summary (see the module docstring). ``pair`` (optional): ``query``, ``neighbour``, ``method`` and
    ``pictures`` (the dict of :func:`simx.diff.core.pair_pictures`) of one pair to show under both models."""
    import jinja2

    from ..report import data_uri

    buf = io.BytesIO()
    delta_figure(diff).savefig(buf, format="png")
    plot = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    worst_header, worst_rows = _worst_rows(diff, worst)
    pair_header = ["query", "neighbour", "verdict", "rank A", "rank B", "status", "users"]
    pair_rows = [[r.query, r.neighbour, r.verdict, r.rank_a, r.rank_b, r.status, r.users]
                 for r in diff.pairs.head(pairs).itertuples(index=False)]
    pair_ctx = None
    if pair is not None:
        pics = pair["pictures"]
        pair_ctx = {"query": pair["query"], "neighbour": pair["neighbour"], "method": pair["method"],
                    "legend": data_uri(pics["legend"]), "note": pics["note"],
                    "sides": [{"title": f"{t} ({diff.a if t == 'A' else diff.b})",
                               "similarity": f"{pics[key]['similarity']:.4f}",
                               "query": data_uri(pics[key]["query"]), "neighbour": data_uri(pics[key]["neighbour"])}
                              for t, key in (("A", "a"), ("B", "b"))]}
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_TEMPLATE).render(
        d=diff, made=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), summary=summary_rows(diff),
        plot=plot, worst=worst_rows, worst_header=worst_header, pairs=pair_rows, pair_header=pair_header,
        pair=pair_ctx)
