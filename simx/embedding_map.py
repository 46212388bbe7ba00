"""The embedding map's picture: the 2-D projection coloured by label or by retrieval correctness.

The dashboard's Embedding map page only draws what :func:`map_figure` returns (a Plotly figure).

* By label: the :data:`MAX_LABELS` most frequent labels get one colour each from :data:`LABEL_PALETTE`, the rest
  are grouped as ``other`` in grey. The 30 palette colours were picked greedily to be as far apart as possible in
  CIELAB among sRGB colours of lightness 30-85 and chroma above 30 (no greys, so ``other`` stands apart): the
  closest two are ΔE 31 apart (CIE76), where about 2.3 is a just-noticeable difference.
* By correctness: a query whose first neighbour is relevant (shares a label, :mod:`simx.relevance`) is green
  ("right"), one whose first neighbour is not is red ("wrong"), and items that are not queries (no label, or no
  other item shares one) are grey; the legend says so in words.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

#: Most labels coloured individually; the rest are grouped as :data:`OTHER`.
MAX_LABELS = 30
#: 30 colours, pairwise CIELAB ΔE >= 31 (see the module docstring).
LABEL_PALETTE = (
    "#1e78b4", "#00f000", "#ff0000", "#0000ff", "#ff1eb4", "#f0d278", "#00e1c3", "#873c3c", "#1e5a00", "#5a2da5",
    "#ffb4f0", "#e100ff", "#c3e100", "#c36900", "#ff3c69", "#00c35a", "#ffa596", "#0f7869", "#78e1ff", "#e178ff",
    "#871e69", "#5a87ff", "#87783c", "#ffc300", "#960000", "#96c387", "#879600", "#784bff", "#e16996", "#a5b4ff",
)
OTHER = "other"
OTHER_COLOUR = "#9e9e9e"
NO_LABEL = "(none)"

RIGHT, WRONG, NOT_A_QUERY = "right", "wrong", "not a query"
#: Correctness group -> (colour, legend text).
CORRECTNESS = {
    RIGHT: ("#1a9641", "right: the first neighbour shares a label"),
    WRONG: ("#d7191c", "wrong: the first neighbour shares no label"),
    NOT_A_QUERY: ("#b4b4b4", "not a query (no label, or no other item shares one)"),
}


def label_colours(labels: Sequence[Any], max_labels: int = MAX_LABELS) -> dict[str, str]:
    """label -> colour for the ``max_labels`` most frequent labels (ties by name), in that order."""
    if max_labels > len(LABEL_PALETTE):
        raise ValueError(f"at most {len(LABEL_PALETTE)} distinct label colours, asked for {max_labels}")
    counts = Counter(NO_LABEL if lab is None or lab != lab else str(lab) for lab in labels)
    ranked = sorted(counts, key=lambda lab: (-counts[lab], lab))[:max_labels]
    return {lab: LABEL_PALETTE[i] for i, lab in enumerate(ranked)}


def label_groups(labels: Sequence[Any], max_labels: int = MAX_LABELS) -> list[str]:
    """Each point's colour group: its label when among the ``max_labels`` most frequent, else :data:`OTHER`."""
    keep = label_colours(labels, max_labels)
    names = [NO_LABEL if lab is None or lab != lab else str(lab) for lab in labels]
    return [lab if lab in keep else OTHER for lab in names]


def correctness_groups(ids: Sequence[str], per_query: Any) -> list[str]:
    """Each id's correctness group from an evaluation table (``id`` and ``p1`` columns):
    :data:`RIGHT`, :data:`WRONG` or :data:`NOT_A_QUERY`."""
    first = dict(zip(per_query["id"], per_query["p1"])) if per_query is not None else {}
    return [NOT_A_QUERY if i not in first else RIGHT if first[i] >= 1 else WRONG for i in ids]


def map_figure(df: Any, colour_by: str = "label", per_query: Any = None, max_labels: int = MAX_LABELS,
               webgl_above: int = 5000, item_labels: dict[str, Sequence[str]] | None = None):
    """A Plotly scatter of the projection ``df`` (``id``, ``label``, ``x``, ``y``), one trace per colour group.

    ``colour_by="label"``: one trace per frequent label, then ``other``. ``colour_by="correctness"``: the traces
    right, wrong and not a query (``per_query`` from :func:`simx.index.evaluate`; without it every point is
    "not a query"). Points carry ``customdata = [id, labels]`` for selections and the hover text (``labels``:
    every label of the item from ``item_labels``, ``a | b``, else its primary label; colours follow the primary
    label). Above ``webgl_above`` points the traces use WebGL.
    """
    import plotly.graph_objects as go

    if colour_by not in ("label", "correctness"):
        raise ValueError(f"colour_by must be 'label' or 'correctness', got {colour_by!r}")
    ids = [str(i) for i in df["id"]]
    labels = [NO_LABEL if lab is None or lab != lab else str(lab) for lab in df["label"]]
    if colour_by == "label":
        colours = label_colours(labels, max_labels)
        groups = label_groups(labels, max_labels)
        order = [*colours, OTHER]
        style = {lab: (colours.get(lab, OTHER_COLOUR), lab) for lab in order}
        title = "label"
        if OTHER in groups:
            title = f"label ({len(colours)} most frequent; the other {len(set(labels)) - len(colours)} in grey)"
    else:
        groups = correctness_groups(ids, per_query)
        order = list(CORRECTNESS)
        style = CORRECTNESS
        title = "first neighbour"
    hover = [" | ".join(item_labels[i]) if item_labels and item_labels.get(i) else lab for i, lab in zip(ids, labels)]
    trace = go.Scatter if len(ids) <= webgl_above else go.Scattergl  # SVG points are crisp and clickable
    fig = go.Figure()
    xs, ys = list(df["x"]), list(df["y"])
    for group in order:
        rows = [j for j, g in enumerate(groups) if g == group]
        if not rows:
            continue
        colour, name = style[group]
        fig.add_trace(trace(
            x=[xs[j] for j in rows], y=[ys[j] for j in rows], mode="markers", name=name, legendgroup=group,
            customdata=[[ids[j], hover[j]] for j in rows],
            marker=dict(size=7, opacity=0.85, color=colour, line=dict(width=0)),
            hovertemplate="%{customdata[0]}<br>%{customdata[1]}<extra>" + name.split(":")[0] + "</extra>",
        ))
    # no dragmode: Streamlit then keeps point clicks as selections; lasso and box are in the chart's toolbar
    fig.update_layout(height=620, margin=dict(l=0, r=0, t=10, b=0), legend=dict(itemsizing="constant", title=title),
                      xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig


__all__ = ["CORRECTNESS", "LABEL_PALETTE", "MAX_LABELS", "NOT_A_QUERY", "OTHER", "OTHER_COLOUR", "RIGHT", "WRONG",
           "correctness_groups", "label_colours", "label_groups", "map_figure"]
