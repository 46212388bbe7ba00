"""The one renderer: every map simx shows (dashboard, PNG figure, HTML report, CLI) is drawn here by one colour rule.

* :mod:`simx.render.colours`: the rule itself (a diverging colormap centred on the map's baseline, one absolute
  scale shared by the maps compared, per-map scaling as an explicit option, contours that keep maps readable on
  red or blue pictures, a legend with the real values);
* :mod:`simx.render.panels`: what a view draws for one pair of an explanation (the overlays at their shared
  scale, the faithfulness line with its direction, warnings for maps no better than random or on the padding);
* :mod:`simx.render.figure`: the PNG figure; :mod:`simx.render.html`: the HTML report (a jinja2 template);
  :mod:`simx.render.encode`: PNG bytes and data URIs.

The dashboard shows :meth:`MapPanel.picture` and :meth:`MapPanel.legend`; the figure and the report embed the same
arrays, so a download looks like the screen.
"""

from __future__ import annotations

from .colours import (ALPHA, CMAP, colorize, contour_masks, format_value, legend, limits, map_limit, overlay,
                      relative, resize_map, scale_note, shared_limit)
from .encode import data_uri, png_bytes
from .figure import figure_png, pair_figure, pair_png
from .html import report_html
from .panels import MapPanel, Note, explanation_limit, faithfulness_of, pair_panels, rows_of

__all__ = ["ALPHA", "CMAP", "colorize", "contour_masks", "format_value", "legend", "limits", "map_limit", "overlay",
           "relative", "resize_map", "scale_note", "shared_limit", "data_uri", "png_bytes", "figure_png",
           "pair_figure", "pair_png", "report_html", "MapPanel", "Note", "explanation_limit", "faithfulness_of",
           "pair_panels", "rows_of"]
