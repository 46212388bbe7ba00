"""Counterfactuals of a retrieval failure: the smallest region whose removal puts the right neighbour first.

Given a query q ranked closer to a wrong neighbour w than to a right one r (margin m = s(q, w) - s(q, r) > 0),
:func:`counterfactual` answers "what would have to change for r to win":

* **query side**: cut the query into a grid of cells, order the cells by the contrast map (the map of m on the
  query, most "for the wrong one" first), and grow the removed region one cell at a time in that order. Every
  candidate region is *verified by a forward pass* (its cells filled with the removal fill, the masked query
  embedded and scored against both neighbours); the answer is the smallest grown region whose removal makes
  s(q', r) > s(q', w), with its area (share of the image). Candidates are evaluated in batches in increasing size
  and the search stops at the first batch holding a flip; batches start at 8 regions and double, so a small region
  costs few passes.
* **wrong side**: the same on the wrong neighbour, ordered by its pair map with the query (what makes it look like
  the query), until s(q, w') < s(q, r).
* **global**: when no region up to half the image flips the order, the cause is global (colour, style), not a
  place: :func:`grey_check` gives the margin with the three images converted to grey, which tells whether colour
  alone decides.

The removal fill follows the preprocessing: white for ``fit="pad"`` (the letterbox colour, so a removed region
looks like padding), the dataset mean colour otherwise (:func:`removal_fill`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ExplainError
from ..models import SimModel
from .engine import PairContext

#: Cells per side of the removal grid (16 x 16 = 256 cells; 14 px cells at 224 px).
GRID = 16
#: Largest region tried, as a share of the image ("up to half the image": beyond it the cause is global).
MAX_AREA = 0.5
#: Regions tried in the first batch of forward passes; later batches double up to the engine's batch size.
FIRST_BATCH = 8
#: A grey margin below this share of the colour margin counts as collapsed (colour decides).
COLLAPSE = 0.25


@dataclass
class Counterfactual:
    """The smallest region found on one side (``"query"`` or ``"wrong"``) whose removal flips the order.

    ``found`` is False when no grown region up to ``max_area`` flips it; ``mask`` (H, W) bool is then the largest
    region tried. ``margin_before`` / ``margin_after``: s(q, w) - s(q, r) unperturbed and with the region removed
    (the *worst* right neighbour when several are compared: all must win). ``curve``: (area, margin) of every
    region evaluated. ``forwards``: passes this search made.
    """

    side: str
    found: bool
    mask: np.ndarray
    area: float
    margin_before: float
    margin_after: float
    curve: list[tuple[float, float]] = field(default_factory=list)
    forwards: int = 0
    fill: Any = None

    def to_dict(self, with_mask: bool = False) -> dict[str, Any]:
        d = {"side": self.side, "found": self.found, "area": round(self.area, 4),
             "margin_before": self.margin_before, "margin_after": self.margin_after, "forwards": self.forwards,
             "fill": self.fill if isinstance(self.fill, (str, int, float)) else "tensor"}
        if with_mask:
            d["mask"] = self.mask.astype(int).tolist()
        return d


def removal_fill(model: SimModel) -> str:
    """The fill of removed pixels: white where the preprocessing letterboxes on white (``fit="pad"``), so a removed
    region looks like the padding the model already sees, else the dataset mean colour."""
    return "white" if getattr(model.preprocessing, "fit", None) == "pad" else "mean"


def cell_order(score_map: np.ndarray, grid: int = GRID) -> tuple[np.ndarray, np.ndarray]:
    """Cells of a ``grid`` x ``grid`` partition of the (H, W) map, ordered by their mean value, highest first.

    Returns (order (grid * grid,) of cell numbers, cell label image (H, W) int) so ``labels == c`` is cell c."""
    h, w = score_map.shape
    rows = np.minimum(np.arange(h) * grid // h, grid - 1)
    cols = np.minimum(np.arange(w) * grid // w, grid - 1)
    labels = rows[:, None] * grid + cols[None, :]
    sums = np.bincount(labels.ravel(), weights=np.asarray(score_map, np.float64).ravel(), minlength=grid * grid)
    counts = np.bincount(labels.ravel(), minlength=grid * grid)
    means = sums / np.maximum(counts, 1)
    return np.argsort(-means, kind="stable"), labels


def _margins(ctx: PairContext, edit: str, masks: torch.Tensor, fill: Any) -> np.ndarray:
    """Worst-case margin max_j (s(q', w) - s(q', r_j)) for each keep-mask (N, H, W) applied to the edited image."""
    if edit == "query":
        sims = ctx.model.similarity(ctx.embed_masked(ctx.query, masks, fill), ctx.neighbour_embeddings)  # (N, 1+J)
        margins = sims[:, :1] - sims[:, 1:]
    else:
        emb = ctx.embed_masked(ctx.neighbours[0], masks, fill)  # the wrong neighbour, edited
        s_wrong = ctx.model.similarity(emb, ctx.query_embedding)[:, 0]  # (N,)
        s_right = ctx.similarities()[1:]  # (J,)
        margins = s_wrong[:, None] - s_right[None, :]
    return margins.amax(dim=1).double().cpu().numpy()


def counterfactual(model: SimModel, query: Any, wrong: Any, rights: Any, score_map: np.ndarray, side: str = "query",
                   grid: int = GRID, max_area: float = MAX_AREA, fill: Any = None,
                   batch_size: int | None = None) -> Counterfactual:
    """The smallest region grown from ``score_map`` (H, W) on the ``side`` image (``"query"``: the contrast map on
    the query; ``"wrong"``: the wrong neighbour's pair map) whose removal ranks every right neighbour above the
    wrong one, verified by forward passes. See the module docstring."""
    if side not in ("query", "wrong"):
        raise ExplainError(f"counterfactual side must be 'query' or 'wrong', got {side!r}")
    if not 0 < max_area <= 1:
        raise ExplainError(f"max_area must lie in (0, 1], got {max_area}")
    rights = list(rights) if isinstance(rights, (list, tuple)) else [rights]
    ctx = PairContext(model, query, [wrong, *rights], batch_size=batch_size)
    score_map = np.asarray(score_map, np.float64)
    if score_map.shape != tuple(ctx.size):
        raise ExplainError(f"the map is {score_map.shape} but the model's input is {tuple(ctx.size)}")
    fill = removal_fill(model) if fill is None else fill
    sims = ctx.similarities()
    before = float((sims[0] - sims[1:]).max())
    start_forwards = ctx.cost.forward
    order, labels = cell_order(score_map, grid)
    cell_area = np.bincount(labels.ravel(), minlength=grid * grid) / labels.size
    areas = np.cumsum(cell_area[order])
    n_steps = int(np.searchsorted(areas, max_area + 1e-9, side="right"))
    labels_t = torch.as_tensor(labels, device=ctx.device)
    rank_of_cell = torch.empty(grid * grid, dtype=torch.long, device=ctx.device)
    rank_of_cell[torch.as_tensor(order, device=ctx.device)] = torch.arange(grid * grid, device=ctx.device)
    pixel_rank = rank_of_cell[labels_t]  # (H, W): the step at which each pixel is removed
    curve: list[tuple[float, float]] = []
    found_step = None
    last_margin = before
    if before <= 0:
        found_step = 0
    step, chunk = 0, min(FIRST_BATCH, ctx.batch_size)
    while found_step is None and step < n_steps:
        steps = torch.arange(step + 1, min(step + chunk, n_steps) + 1, device=ctx.device)
        chunk = min(2 * chunk, ctx.batch_size)  # small first batches: a small region costs few passes
        keep = (pixel_rank[None] >= steps[:, None, None]).float()  # remove the first `steps` cells
        margins = _margins(ctx, side, keep, fill)
        for s, m in zip(steps.tolist(), margins.tolist()):
            curve.append((float(areas[s - 1]), float(m)))
            last_margin = float(m)
            if m < 0:
                found_step = s
                break
        step = int(steps[-1])
    removed = found_step if found_step is not None else n_steps
    mask = (pixel_rank < removed).cpu().numpy()
    after = before if removed == 0 else (curve[removed - 1][1] if found_step is not None else last_margin)
    return Counterfactual(side=side, found=found_step is not None, mask=mask, area=float(mask.mean()),
                          margin_before=before, margin_after=float(after), curve=curve,
                          forwards=ctx.cost.forward - start_forwards, fill=fill)


def to_grey(image: Any) -> Any:
    """A PIL image (or path / uint8 array) converted to grey and back to RGB (luminance only)."""
    from PIL import Image

    from ..data import load_image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        image = load_image(image)
    return image.convert("L").convert("RGB")


def grey_check(model: SimModel, query: Any, wrong: Any, rights: Any) -> dict[str, Any]:
    """The global-colour check: margins s(q, w) - s(q, r_j) in colour and with all the images converted to grey.

    ``colour_decides``: the wrong neighbour wins in colour, and in grey it loses or keeps less than a quarter of its
    margin (:data:`COLLAPSE`): colour, not shape, decides the ranking ("colour over shape")."""
    rights = list(rights) if isinstance(rights, (list, tuple)) else [rights]
    colour = PairContext(model, query, [wrong, *rights]).similarities().double().cpu().numpy()
    grey = PairContext(model, to_grey(query), [to_grey(wrong), *[to_grey(r) for r in rights]]).similarities()
    grey = grey.double().cpu().numpy()
    m_colour, m_grey = colour[0] - colour[1:], grey[0] - grey[1:]
    return {"margin": [float(v) for v in m_colour], "grey_margin": [float(v) for v in m_grey],
            "similarities": [float(v) for v in colour], "grey_similarities": [float(v) for v in grey],
            "colour_decides": bool(np.all(m_colour > 0) and np.any(m_grey < COLLAPSE * m_colour))}
