"""How a reader takes a faithfulness score and a map: the direction of the scores and the padding warning.

These sit with the renderer, which shows them beside every map; :mod:`simx.explain.metrics` computes the scores
and uses the same definitions, so the renderer never needs the metrics module (and :mod:`simx.explain`, which
draws through :mod:`simx.render`, is never imported back by it).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: Which way each faithfulness score is better, shown wherever the scores are.
DIRECTION = "insertion AUC: higher is better; deletion AUC: lower is better"
#: Share of a map's positive mass on letterbox padding above which the map gets a warning.
PADDING_WARNING = 0.5


def padding_share(heat: np.ndarray, box: Sequence[int] | None, baseline: float = 0.0) -> float | None:
    """The share of a map's positive mass (``max(v - baseline, 0)``) that lies outside ``box`` (the image's own
    area, ``(x0, y0, x1, y1)``), i.e. on letterbox padding; None when the box is unknown, 0 for a map with no
    positive mass or no padding."""
    if box is None:
        return None
    pos = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float64)) - float(baseline), 0.0, None)
    total = float(pos.sum())
    x0, y0, x1, y1 = (int(v) for v in box)
    if total <= 0:
        return 0.0
    inside = float(pos[max(y0, 0):y1, max(x0, 0):x1].sum())
    return max(0.0, 1.0 - inside / total)
