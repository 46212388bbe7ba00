"""The one renderer: every map simx shows (dashboard, PNG figure, HTML report, CLI) is drawn here by one colour rule.

:mod:`simx.render.colours` holds the rule (diverging colormap centred on the map's baseline, one absolute scale
shared by the maps compared, per-map scaling as an explicit option, contours, a legend with real values).
"""

from __future__ import annotations

from .colours import (ALPHA, CMAP, colorize, contour_masks, format_value, legend, limits, map_limit, overlay,
                      relative, resize_map, scale_note, shared_limit)

__all__ = ["ALPHA", "CMAP", "colorize", "contour_masks", "format_value", "legend", "limits", "map_limit", "overlay",
           "relative", "resize_map", "scale_note", "shared_limit"]
