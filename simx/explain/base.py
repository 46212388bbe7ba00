"""The explanation protocol: what a method receives and what it returns.

A method is one module in ``simx/explain/methods/`` that registers one function::

    @register("gradcam", "Grad-CAM with the similarity as target (methods.md 2.1)")
    def attribute(ctx: PairContext, side: str, **params) -> MethodOutput: ...

``ctx`` (:class:`simx.explain.engine.PairContext`) owns the model, the query and its K neighbours on the right
device, cached unperturbed features and embeddings, batching, mask composition and pass counting; the method
only says what is special about it (Captum's ``attribute`` naming, pytorch-grad-cam's one-override shape).
``side`` is ``"query"`` or ``"neighbour"``: the query side explains the query with respect to each neighbour
(K maps), the neighbour side explains each neighbour with respect to the query (K maps). The engine calls a
first-order method once per requested side and merges the two outputs; a joint method (``kind="joint"``) is
called once with the caller's side (``"both"``, ``"query"`` or ``"neighbour"``: which marginals to fill).
Shared parameter names across methods: ``n_samples``, ``batch_size``, ``seed``, ``baseline`` (one vocabulary:
:data:`simx.explain.engine.BASELINES`), ``segmentation`` (one spec string such as ``"slic:n=50,compactness=20"``,
:func:`simx.explain.superpixels.parse_segmentation`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np


@dataclass
class Cost:
    """Work done for one explanation: images passed forward, backward passes (batched calls), wall time."""

    forward: int = 0
    backward: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {"forward": self.forward, "backward": self.backward, "seconds": round(self.seconds, 4)}


@dataclass
class MethodOutput:
    """What a method function returns; the engine turns it into an :class:`Explanation`.

    Give feature-resolution maps (K, h, w) and/or pixel maps (K, H, W) per side; the engine upsamples
    feature maps bilinearly to the input size when pixel maps are missing. ``params`` holds the effective
    parameters (defaults filled in), ``extras`` any method-specific numbers (channel weights, superpixel values,
    window scores, ...). Joint (second-order) methods fill ``joint`` (K, Nq, Nn) and the cell geometry.
    ``query_baseline`` / ``neighbour_baseline`` (K,): the map value that means "no effect" for each pair when it
    is not 0 (RISE: the mean masked score); the renderer draws maps relative to it.
    """

    query_feature_maps: np.ndarray | None = None
    neighbour_feature_maps: np.ndarray | None = None
    query_maps: np.ndarray | None = None
    neighbour_maps: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    joint: np.ndarray | None = None
    query_cells: Any = None
    neighbour_cells: Any = None
    query_baseline: np.ndarray | None = None
    neighbour_baseline: np.ndarray | None = None


@dataclass
class Explanation:
    """The result of :func:`simx.explain.explain` for one query and K neighbours: a plain value.

    It holds numbers and pictures only (numpy arrays, dicts, :class:`Cost`), no model and no tensors, so it
    pickles, caches (the dashboard's ``st.cache_data``) and travels between processes; metrics are functions over
    it and a model (:func:`simx.explain.metrics.faithfulness`), as Captum keeps metrics apart from attributions.

    ``query_maps[k]`` / ``neighbour_maps[k]`` are (H, W) maps at the model's input resolution for pair k;
    ``*_feature_maps`` the same at feature resolution where the method is natural there; ``similarities`` (K,)
    the model's similarity of each pair; ``params`` the effective parameters including the seed; ``cost`` the
    forward/backward passes and wall time. ``query_baseline`` / ``neighbour_baseline`` (K,) are the map values
    that mean "no effect" (0 for signed attributions, the mean masked score for RISE): maps are drawn relative
    to them. ``query_image`` and ``neighbour_images`` are the (H, W, 3) uint8 pictures exactly as the model saw
    them, so maps can be overlaid (and the model inputs rebuilt) without guessing the preprocessing;
    ``query_box`` / ``neighbour_boxes`` ((4,) / (K, 4) ints ``x0, y0, x1, y1``, exclusive ends) the part of each
    picture that is the image itself, not letterbox padding (the whole picture when unknown). ``scores`` holds
    the metrics a caller chose to keep with it (``faithfulness`` writes its result there).
    """

    method: str
    similarities: np.ndarray
    query_maps: np.ndarray | None
    neighbour_maps: np.ndarray | None
    params: dict[str, Any]
    cost: Cost
    query_feature_maps: np.ndarray | None = None
    neighbour_feature_maps: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    joint: np.ndarray | None = None
    query_cells: Any = None
    neighbour_cells: Any = None
    scores: dict[str, Any] = field(default_factory=dict)
    query_image: np.ndarray | None = None
    neighbour_images: np.ndarray | None = None
    query_baseline: np.ndarray | None = None
    neighbour_baseline: np.ndarray | None = None
    query_box: np.ndarray | None = None
    neighbour_boxes: np.ndarray | None = None

    @property
    def k(self) -> int:
        return int(len(self.similarities))

    def maps(self, side: str) -> np.ndarray | None:
        """The (K, H, W) maps of ``side`` ("query" or "neighbour"), None when that side was not explained."""
        if side not in ("query", "neighbour"):
            raise ValueError(f"side must be 'query' or 'neighbour', got {side!r}")
        return self.query_maps if side == "query" else self.neighbour_maps

    def baseline(self, side: str, k: int = 0) -> float:
        """The "no effect" value of map ``k`` of ``side`` (0 when the method recorded none)."""
        b = self.query_baseline if side == "query" else self.neighbour_baseline
        return 0.0 if b is None else float(np.asarray(b).reshape(-1)[k])

    def image(self, side: str, k: int = 0) -> np.ndarray | None:
        """The picture the model saw on ``side`` for pair ``k`` (the query is the same for every k)."""
        if side == "query":
            return self.query_image
        return None if self.neighbour_images is None else np.asarray(self.neighbour_images)[k]

    def pair_extras(self, k: int = 0) -> dict[str, Any]:
        """The extras that concern pair ``k``: per-pair lists and arrays (one entry per neighbour) taken at ``k``,
        single values as they are (SANE's ranking of pair k, a method's per-pair message, ...)."""
        out: dict[str, Any] = {}
        for key, value in (self.extras or {}).items():
            if isinstance(value, (list, tuple)) and len(value) == self.k:
                out[key] = value[k]
            elif isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == self.k:
                out[key] = value[k]
            elif isinstance(value, (int, float, str, bool, np.generic)) or value is None:
                out[key] = value
        return out

    def box(self, side: str, k: int = 0) -> tuple[int, int, int, int] | None:
        """The image's own area (not padding) on ``side`` for pair ``k``, ``(x0, y0, x1, y1)``, or None."""
        b = self.query_box if side == "query" else (None if self.neighbour_boxes is None
                                                    else np.asarray(self.neighbour_boxes)[k])
        return None if b is None else tuple(int(v) for v in np.asarray(b).reshape(4))


@dataclass
class ContrastExplanation:
    """Why the wrong neighbour beat the right one(s): the result of ``explain(model, q, wrong, versus=rights)``.

    ``query_maps[j]`` (J, H, W) is the method's map of the margin ``margins[j] = s(q, wrong) - s(q, right_j)`` on
    the query, signed: positive where the query argues for the wrong neighbour, negative where it argues for right
    neighbour j, and ~0 where a pixel does not matter. It is the difference of the method's linear (signed) query
    maps against the two neighbours, which ``pair.query_maps`` (1 + J, row 0 = wrong) holds, each taken about its
    "no effect" value (``pair.query_baseline``: RISE's mean masked score, 0 for the other methods), so for RISE it
    is E[margin | pixel kept] - E[margin] over the masks; ``pair.neighbour_maps`` are the usual pair maps on the wrong
    neighbour (row 0) and on each right one. ``similarities`` = (s(q, wrong), s(q, right_1), ...).
    ``query_params`` are the parameters the query maps were computed with (the method's linear form).
    """

    method: str
    similarities: np.ndarray
    margins: np.ndarray
    query_maps: np.ndarray | None
    pair: Explanation
    query_params: dict[str, Any]
    cost: Cost
    query_feature_maps: np.ndarray | None = None

    @property
    def j(self) -> int:
        """Number of right (expected) neighbours compared with the wrong one."""
        return int(len(self.margins))

    @property
    def query_image(self) -> np.ndarray | None:
        return self.pair.query_image

    @property
    def wrong_image(self) -> np.ndarray | None:
        return None if self.pair.neighbour_images is None else self.pair.neighbour_images[0]

    @property
    def right_images(self) -> np.ndarray | None:
        return None if self.pair.neighbour_images is None else self.pair.neighbour_images[1:]


class MethodFn(Protocol):
    def __call__(self, ctx: Any, side: str, **params: Any) -> MethodOutput: ...


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    fn: Callable[..., MethodOutput]
    kind: str  # "gradient", "closed-form", "perturbation", "joint", "attribute"
    needs_features: bool
    #: parameters that make the method's query-side map linear in the similarity it explains (so the map of a
    #: margin s(q, a) - s(q, b) is the difference of the two maps: :func:`simx.explain.explain` with ``versus``),
    #: or a function ``model -> such parameters or None``; None: no contrastive map is defined for the method.
    contrast: dict[str, Any] | Callable[[Any], dict[str, Any] | None] | None = None

    #: ``passes(k, side, size, params) -> (forward, backward)``: the passes one call of the method makes beyond
    #: the K + 1 unperturbed forwards, for ``side`` ("query" / "neighbour"; "both" for joint methods), K
    #: neighbours, input ``size`` (H, W) and the caller's parameters; None: no passes of its own.
    passes: Callable[[int, str, tuple[int, int], dict[str, Any]], tuple[int, int]] | None = None

    #: ``pair_passes(ctx, side, params) -> (forward, backward)``: the same count for a prepared pair
    #: (:class:`~simx.explain.engine.PairContext`, no pass made), for a method whose count depends on the images:
    #: the superpixel methods segment them first (cheap), since SLIC returns fewer superpixels than it is asked for
    #: (40 for 50 on a 64 px picture), and their ``passes`` counts those asked for, an upper bound. None: ``passes``
    #: is exact.
    pair_passes: Callable[[Any, str, dict[str, Any]], tuple[int, int]] | None = None

    #: True for methods that differentiate through the whole network (attention methods): the engine's unperturbed
    #: forward of the K + 1 images then records the autograd graph (:meth:`PairContext.recorded`) and is made for
    #: every image, cached or not, instead of a graph-free forward followed by a second one with the graph.
    records_graph: bool = False

    def contrast_params(self, model: Any) -> dict[str, Any] | None:
        """The parameters of the linear (signed) query map for ``model``, or None when there is none."""
        return self.contrast(model) if callable(self.contrast) else self.contrast

    @property
    def per_side(self) -> bool:
        """First-order methods explain one side per call (the engine calls them once per requested side); joint
        methods compute both sides' cells in one matrix and are called once."""
        return self.kind != "joint"


#: name -> MethodSpec, filled by ``@register`` when the method modules are imported.
REGISTRY: dict[str, MethodSpec] = {}


def register(name: str, description: str, kind: str, needs_features: bool = False,
             contrast: dict[str, Any] | Callable[[Any], dict[str, Any] | None] | None = None,
             passes: Callable[[int, str, tuple[int, int], dict[str, Any]], tuple[int, int]] | None = None,
             pair_passes: Callable[[Any, str, dict[str, Any]], tuple[int, int]] | None = None,
             records_graph: bool = False) -> Callable[[MethodFn], MethodFn]:
    """Register a method function under ``name`` with a one-line description. ``contrast``: the parameters under
    which its query map is linear in the explained similarity (``{}`` when it always is); ``passes``: its pass
    count before it runs (the cost estimate and the progress bar's total); ``pair_passes``: the exact count once the
    pair is known, where ``passes`` can only bound it; ``records_graph``: the unperturbed forward keeps the autograd
    graph of the whole network; see :class:`MethodSpec`."""

    def deco(fn: MethodFn) -> MethodFn:
        if name in REGISTRY:
            raise ValueError(f"explanation method {name!r} registered twice")
        REGISTRY[name] = MethodSpec(name, description, fn, kind, needs_features, contrast, passes, pair_passes,
                                    records_graph)
        return fn

    return deco
