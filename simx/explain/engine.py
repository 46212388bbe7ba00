"""The shared machinery every explanation method runs on.

:class:`PairContext` holds one query and its K neighbours as model inputs on the model's device and owns the
things no method should re-implement: batched forward passes in inference mode (channels-last on CPU), caching
of unperturbed features and embeddings across calls, composing masked images on the fly batch by batch (so N
masks never exist as N full images at once), the similarity of masked embeddings to all K references in one
matrix product (methods.md 1, rule 3), bilinear upsampling, baselines, and counting the passes it made.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import itertools
import time
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data import load_image
from ..errors import ExplainError
from ..models import SimModel
from .base import REGISTRY, ContrastExplanation, Cost, Explanation, MethodOutput, MethodSpec
from .progress import CancelToken, CostEstimate, Progress
from .superpixels import parse_segmentation

#: The fill of masked pixels, one vocabulary for every perturbation method (a number in [0, 1] is a grey level, a
#: tensor is used as is); superpixel methods (those with a ``segmentation``) also take ``"segment_mean"``.
BASELINES = ("black", "white", "grey", "mean", "blur")
SEGMENT_BASELINES = ("segment_mean",)

#: Parameter names of earlier versions -> what replaced them (an old name is an error that says the new spelling).
RENAMED = {
    "n_masks": "n_samples",
    **{old: "segmentation" for old in ("n_segments", "compactness", "sigma", "kernel_size", "max_dist", "ratio")},
}


class _FeatureCache:
    """LRU of (features, embedding) of unperturbed inputs, keyed by model and input bytes."""

    def __init__(self, capacity: int = 256):
        self.capacity = capacity
        self._data: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    _tokens = itertools.count()

    @classmethod
    def key(cls, model: SimModel, x: torch.Tensor) -> tuple:
        digest = hashlib.blake2b(x.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).hexdigest()
        # a token unique to the model object for the process: id() is reused after garbage collection, and a new
        # model with the same spec (other weights or seed) would then read the old model's features
        token = model.__dict__.get("_feature_cache_token")
        if token is None:
            token = model.__dict__["_feature_cache_token"] = next(cls._tokens)
        return (token, model.spec, model.layer, digest)

    def get(self, key: tuple):
        if key in self._data:
            self._data.move_to_end(key)
            return self._data[key]
        return None

    def put(self, key: tuple, value) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()

    def discard(self, model: SimModel) -> int:
        """Drop every entry of ``model`` (e.g. a temporary clone with re-initialised weights); returns how many."""
        token = model.__dict__.get("_feature_cache_token")
        if token is None:
            return 0
        keys = [k for k in list(self._data) if k[0] == token and k[1] == model.spec]
        for k in keys:
            self._data.pop(k, None)
        return len(keys)

    def __len__(self) -> int:
        return len(self._data)


FEATURE_CACHE = _FeatureCache()


class _ModelSpeed:
    """Measured seconds per pass of each model on this machine, for cost estimates before a run.

    Every explanation of 50 passes or more records its wall time per pass, mask composition and segmentation
    included (the mean over the last ~2,000 passes, so it follows a machine getting busier); a model never run yet
    is timed once on a small batch of bare forwards (:meth:`calibrate`), which underestimates a perturbation
    method's time per pass until its first run corrects it."""

    def __init__(self, window: int = 2000):
        self.window = window
        self._data: dict[int, tuple[int, float]] = {}

    @staticmethod
    def _token(model: SimModel) -> int:
        token = model.__dict__.get("_feature_cache_token")
        if token is None:
            token = model.__dict__["_feature_cache_token"] = next(_FeatureCache._tokens)
        return token

    def record(self, model: SimModel, passes: int, seconds: float) -> None:
        n, s = self._data.get(self._token(model), (0, 0.0))
        n, s = n + passes, s + seconds
        if n > self.window:  # keep the last ~window passes' weight
            s, n = s * self.window / n, self.window
        self._data[self._token(model)] = (n, s)

    def seconds_per_pass(self, model: SimModel) -> float:
        if self._token(model) not in self._data:
            self.calibrate(model)
        n, s = self._data[self._token(model)]
        return s / max(n, 1)

    def calibrate(self, model: SimModel, batch: int = 8) -> None:
        """Time ``batch`` forwards of a grey image (after one warm-up pass, which is not counted)."""
        x = torch.zeros(batch, 3, *model.input_size, device=model.device)
        if model.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), model.autocast():
            model.embed(x[:1])
            t0 = time.perf_counter()
            model.embed(x)
        self.record(model, batch, time.perf_counter() - t0)


SPEED = _ModelSpeed()


def content_box(model: SimModel, width: int, height: int) -> tuple[int, int, int, int]:
    """The part of the model input that shows an image of ``width`` x ``height`` pixels, ``(x0, y0, x1, y1)``
    (exclusive ends): with ``fit="pad"`` the letterboxed picture inside its white padding, else the whole input."""
    pre = model.preprocessing
    s_h, s_w = model.input_size
    if pre.fit != "pad":
        return (0, 0, s_w, s_h)
    scale, dx, dy = pre.box_transform(width, height)
    nw, nh = max(1, int(round(width * scale))), max(1, int(round(height * scale)))
    return (int(dx), int(dy), int(dx) + nw, int(dy) + nh)


def prepare_input(model: SimModel, image: Any, what: str) -> tuple[torch.Tensor, tuple[int, int, int, int] | None]:
    """A PIL image, a path, or a (3, S, S) tensor -> ((3, S, S) model input on the CPU, the image's own area in
    it (:func:`content_box`; None for a tensor, whose padding is unknown)), with clear errors."""
    if isinstance(image, torch.Tensor):
        t = image.detach()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() != 3:
            raise ExplainError(f"{what}: expected a (3, H, W) tensor, got shape {tuple(t.shape)}")
        if t.shape[0] != 3:
            raise ExplainError(f"{what}: expected 3 colour channels, got {t.shape[0]} (grey-scale tensors must be "
                               "converted to RGB first; PIL images are converted automatically)")
        if tuple(t.shape[1:]) != model.input_size:
            raise ExplainError(f"{what}: tensor is {tuple(t.shape[1:])} but the model takes {model.input_size}; "
                               "pass PIL images to let simx preprocess them")
        return t.float().cpu(), None
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        image = load_image(image)
    return model.preprocess(image.convert("RGB")), content_box(model, image.width, image.height)


def to_input(model: SimModel, image: Any, what: str) -> torch.Tensor:
    """A PIL image, a path, or a (3, S, S) tensor -> (3, S, S) model input on the CPU (see :func:`prepare_input`)."""
    return prepare_input(model, image, what)[0]


class PairContext:
    """One query and K neighbours prepared for a model; the only place methods get passes from."""

    def __init__(self, model: SimModel, query: Any, neighbours: Sequence[Any] | torch.Tensor, seed: int = 0,
                 batch_size: int | None = None, known_embeddings: Any = None):
        if isinstance(neighbours, torch.Tensor):
            neighbours = list(neighbours) if neighbours.dim() == 4 else [neighbours]
        elif isinstance(neighbours, (Image.Image, str)):
            neighbours = [neighbours]
        neighbours = list(neighbours)
        if not neighbours:
            raise ExplainError("no neighbours to explain: pass at least one neighbour image")
        self.model = model
        self.device = model.device
        self.seed = int(seed)
        self.batch_size = int(batch_size or (128 if self.device.type == "cuda" else 32))
        self.cost = Cost()
        q, self.query_box = prepare_input(model, query, "query")
        self.query = q.unsqueeze(0).to(self.device)
        prepared = [prepare_input(model, n, f"neighbour {i}") for i, n in enumerate(neighbours)]
        self.neighbours = torch.stack([t for t, _ in prepared]).to(self.device)
        self.neighbour_boxes = [box for _, box in prepared]
        self._unperturbed: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._recorded: dict[str, tuple[torch.Tensor, list[torch.Tensor], tuple[int, int]]] = {}
        self.known_embeddings = self._check_known(known_embeddings)
        #: ticked at every counted pass (progress bar, cancellation); set by :func:`explain`
        self.progress: Progress | None = None

    # -- pass counting ---------------------------------------------------------------------------------------------
    def count(self, forward: int = 0, backward: int = 0) -> None:
        """Count passes just made: the cost and the progress, which raises
        :class:`~simx.explain.progress.ExplanationCancelled` once cancelled."""
        self.cost.forward += int(forward)
        self.cost.backward += int(backward)
        if self.progress is not None:
            self.progress.advance(int(forward) + int(backward))

    def check_cancelled(self) -> None:
        """Raise :class:`~simx.explain.progress.ExplanationCancelled` if the caller cancelled (checked before
        every batch, so a cancel never waits for more than one batch)."""
        if self.progress is not None:
            self.progress.check()

    # -- sizes -------------------------------------------------------------------------------------------------
    @property
    def k(self) -> int:
        return int(self.neighbours.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return self.model.input_size

    def generator(self, offset: int = 0) -> np.random.Generator:
        """A numpy generator derived from the explanation seed (``offset`` separates independent streams)."""
        return np.random.default_rng(self.seed + 7919 * offset)

    # -- unperturbed features and embeddings (cached) -----------------------------------------------------------
    def _check_known(self, known: Any) -> torch.Tensor | None:
        """``known_embeddings`` as a (K, D) float tensor on the device, with a clear error for a wrong shape."""
        if known is None:
            return None
        t = torch.as_tensor(np.asarray(known) if not isinstance(known, torch.Tensor) else known).float()
        if t.dim() == 1:
            t = t.unsqueeze(0)
        if t.dim() != 2 or t.shape[0] != self.k:
            raise ExplainError(f"known_embeddings must hold one row per neighbour ({self.k}), got shape "
                               f"{tuple(t.shape)}")
        return t.to(self.device)

    def _rows(self, rows: list[int]) -> list[tuple[torch.Tensor | None, torch.Tensor]]:
        """Unperturbed (features, embedding) of input rows (0 = the query, 1..K = the neighbours): from the
        feature cache, the rest in ONE batched forward (chunked by ``batch_size``), counted."""
        x = torch.cat([self.query, self.neighbours])
        keys = [FEATURE_CACHE.key(self.model, x[i]) for i in rows]
        found = [FEATURE_CACHE.get(key) for key in keys]
        todo = [n for n, hit in enumerate(found) if hit is None]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            xb = x[[rows[n] for n in chunk]]
            if self.device.type == "cpu":
                xb = xb.contiguous(memory_format=torch.channels_last)
            self.check_cancelled()
            # the same precision as the masked passes (embed / embed_masked), so that a masked score and the
            # unperturbed score it is compared with differ only by the mask
            with torch.inference_mode(), self.model.autocast():
                f = self.model.features(xb) if self.model.has_features else None
                e = self.model.head(f) if f is not None else self.model.embed(xb)
            self.count(forward=len(chunk))
            for j, n in enumerate(chunk):
                found[n] = (f[j : j + 1].float().contiguous().clone() if f is not None else None,
                            e[j : j + 1].float().clone())
                FEATURE_CACHE.put(keys[n], found[n])
        return found

    @staticmethod
    def _stack(found: list[tuple[torch.Tensor | None, torch.Tensor]]) -> tuple[torch.Tensor | None, torch.Tensor]:
        feats = None if found[0][0] is None else torch.cat([hit[0] for hit in found])
        return feats, torch.cat([hit[1] for hit in found])

    def _features_embeddings(self, which: str, features: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Unperturbed (features, embeddings) of the query (``which="query"``) or the neighbours.

        Without ``known_embeddings`` the first call computes the query and all neighbours not already in the
        cache in ONE batched forward (the floor of the gradient methods), then serves both sides from it. With
        them, the query side of a method that needs only the neighbours' embeddings (the gradient and
        closed-form query maps, every perturbation of the query) runs the query alone: the neighbours go forward
        only when their feature maps are asked for (their own side's maps), and from then on their computed
        embeddings are used, consistent with their features. Embeddings :meth:`recorded` made serve as they are;
        the features (``features=True``) are then computed by a forward of their own.
        """
        def missing(key: str) -> bool:  # not computed yet, or served by recorded() without the features asked for
            got = self._unperturbed.get(key)
            return got is None or (features and got[0] is None and self.model.has_features)

        if which == "query" and missing("query"):
            rows = [0] if self.known_embeddings is not None else list(range(self.k + 1))
            found = self._rows(rows)
            self._unperturbed["query"] = self._stack(found[:1])
            if len(found) > 1:
                self._unperturbed["neighbours"] = self._stack(found[1:])
        if which != "query" and missing("neighbours"):
            if "query" in self._unperturbed and not missing("query"):
                self._unperturbed["neighbours"] = self._stack(self._rows(list(range(1, self.k + 1))))
            else:
                found = self._rows(list(range(self.k + 1)))
                self._unperturbed["query"] = self._stack(found[:1])
                self._unperturbed["neighbours"] = self._stack(found[1:])
        return self._unperturbed["query" if which == "query" else "neighbours"]

    def recorded(self, which: str) -> tuple[torch.Tensor, list[torch.Tensor], tuple[int, int]]:
        """(embeddings with their autograd graph, every block's attention probabilities (B, heads, T, T) in block
        order, patch grid) of the query (``which="query"``) or the K neighbours, for methods that differentiate
        through the whole network (``register(..., records_graph=True)``: attngrad).

        The first call forwards the query and the neighbours through the whole network with the graph (the
        model's ``run_from_input``), as two graphs so that each side's backward pass traverses only its own
        images, and serves the unperturbed embeddings from them: this IS the context's unperturbed forward (K + 1
        passes), not a second one after a graph-free pass. :meth:`release` drops a side's graph once used."""
        if which not in ("query", "neighbours"):
            raise ExplainError(f"recorded(): which must be 'query' or 'neighbours', got {which!r}")
        if not self._recorded:
            for name, x in (("query", self.query), ("neighbours", self.neighbours)):
                self.check_cancelled()
                sink: list[torch.Tensor] = []
                with torch.enable_grad():
                    # frozen weights: the input is the leaf that puts the attention maps in an autograd graph
                    emb, grid = self.model.run_from_input(x.detach().clone().requires_grad_(True), attention=sink)
                self.count(forward=int(x.shape[0]))
                self._recorded[name] = (emb, sink, grid)
            if not self._unperturbed:
                self._unperturbed = {name: (None, self._recorded[name][0].detach().float().clone())
                                     for name in ("query", "neighbours")}
        if which not in self._recorded:
            raise ExplainError(f"the recorded graph of the {which} was released already")
        return self._recorded[which]

    def release(self, which: str) -> None:
        """Drop the autograd graph :meth:`recorded` kept for ``which`` (its memory: every block's activations)."""
        self._recorded.pop(which, None)

    def uncached(self, side: str = "both") -> int:
        """How many of the unperturbed forwards a run of ``side`` on these images would make now: those not in
        the feature cache (which keeps what any context computed); with ``known_embeddings`` the query side
        needs only the query's."""
        x = torch.cat([self.query, self.neighbours])
        rows = [0] if self.known_embeddings is not None and side == "query" else range(x.shape[0])
        return sum(FEATURE_CACHE.get(FEATURE_CACHE.key(self.model, x[i])) is None for i in rows)

    @property
    def query_features(self) -> torch.Tensor:
        """F(query), (1, C, h, w)."""
        self._require_features()
        return self._features_embeddings("query", features=True)[0]

    @property
    def neighbour_features(self) -> torch.Tensor:
        """F(neighbour_k), (K, C, h, w)."""
        self._require_features()
        return self._features_embeddings("neighbours", features=True)[0]

    @property
    def query_embedding(self) -> torch.Tensor:
        """e(query), (1, D), not normalised."""
        return self._features_embeddings("query")[1]

    @property
    def neighbour_embeddings(self) -> torch.Tensor:
        """e(neighbour_k), (K, D), not normalised; the ``known_embeddings`` (e.g. an index's stored vectors,
        L2-normalised for cosine) until the neighbours' features are computed."""
        if self.known_embeddings is not None and "neighbours" not in self._unperturbed:
            return self.known_embeddings
        return self._features_embeddings("neighbours")[1]

    def similarities(self) -> torch.Tensor:
        """s(query, neighbour_k), (K,)."""
        return self.model.similarity(self.query_embedding, self.neighbour_embeddings)[0]

    def _require_features(self) -> None:
        if not self.model.has_features:
            raise ExplainError(f"model {self.model.spec!r} exposes no spatial feature map; use a perturbation "
                               "method (sbsm, rise, kernelshap, lime)")

    def head_with_grad(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F with requires_grad, e = head(F)) for gradient methods: at the last layer of a pooled model the
        gradient of the similarity needs no backward pass through the backbone, only through the head."""
        f = feats.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            e = self.model.head(f)
        return f, e

    def backward(self, scalar: torch.Tensor, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Gradients of ``scalar`` w.r.t. ``inputs``, counted as one backward pass."""
        self.check_cancelled()
        grads = torch.autograd.grad(scalar, list(inputs))
        self.count(backward=1)
        return grads

    # -- batched forwards -----------------------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, D) of a batch of model inputs, batched, in inference mode; counts N forwards."""
        out = []
        with torch.inference_mode():
            for i in range(0, x.shape[0], self.batch_size):
                out.append(self._embed_batch(x[i : i + self.batch_size].to(self.device)))
        return torch.cat(out)

    def _embed_batch(self, xb: torch.Tensor) -> torch.Tensor:
        """Embeddings of one batch already on the device (inside inference mode), counted; a cancelled run stops
        here, before the pass."""
        if self.device.type == "cpu":
            xb = xb.contiguous(memory_format=torch.channels_last)
        self.check_cancelled()
        with self.model.autocast():
            emb = self.model.embed(xb).float()
        self.count(forward=xb.shape[0])
        return emb

    def baseline(self, name: str | float | torch.Tensor = "black", image: torch.Tensor | None = None) -> torch.Tensor:
        """The fill of masked pixels, (1, 3, H, W) in model-input space.

        ``black``/``white``/``grey`` are raw pixel colours (0, 1, 0.5) passed through the model's normalisation,
        ``mean`` is zero in normalised space (the dataset mean colour), ``blur`` a Gaussian blur of ``image``;
        a number is a grey level in [0, 1]; a tensor is used as is.
        """
        pre = self.model.preprocessing
        h, w = self.size
        if isinstance(name, torch.Tensor):
            return name.to(self.device).reshape(1, 3, h, w) if name.numel() == 3 * h * w else \
                name.to(self.device).reshape(1, 3, 1, 1).expand(1, 3, h, w)
        if isinstance(name, (int, float)):
            return pre.normalise(torch.full((1, 3, h, w), float(name), device=self.device))
        if name == "mean":
            return torch.zeros(1, 3, h, w, device=self.device)
        if name in ("black", "white", "grey"):
            level = {"black": 0.0, "white": 1.0, "grey": 0.5}[name]
            return pre.normalise(torch.full((1, 3, h, w), level, device=self.device))
        if name == "blur":
            if image is None:
                raise ExplainError("baseline 'blur' needs the image to blur")
            sigma = max(h, w) / 16
            k = int(2 * round(3 * sigma) + 1)
            ax = torch.arange(k, device=self.device, dtype=torch.float32) - k // 2
            g = torch.exp(-(ax**2) / (2 * sigma**2))
            g = g / g.sum()
            x = F.pad(image.reshape(1, 3, h, w), (k // 2,) * 4, mode="reflect")
            x = F.conv2d(x, g.view(1, 1, 1, k).expand(3, 1, 1, k), groups=3)
            return F.conv2d(x, g.view(1, 1, k, 1).expand(3, 1, k, 1), groups=3)
        raise ExplainError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}, a number or a tensor")

    def embed_masked(self, image: torch.Tensor, masks: torch.Tensor | np.ndarray,
                     baseline: str | float | torch.Tensor = "black") -> torch.Tensor:
        """Embeddings (N, D) of ``mask * image + (1 - mask) * baseline`` for N masks (N, H, W) or (N, h, w)
        in [0, 1] (1 = keep); low-resolution masks are upsampled bilinearly. Images are composed per batch."""
        image = image.reshape(1, 3, *self.size).to(self.device)
        base = self.baseline(baseline, image)
        masks = torch.as_tensor(np.asarray(masks) if isinstance(masks, np.ndarray) else masks, dtype=torch.float32)
        if masks.dim() == 2:
            masks = masks.unsqueeze(0)
        out = []
        with torch.inference_mode():
            for i in range(0, masks.shape[0], self.batch_size):
                m = masks[i : i + self.batch_size].to(self.device).unsqueeze(1)
                if tuple(m.shape[-2:]) != self.size:
                    m = F.interpolate(m, size=self.size, mode="bilinear", align_corners=False)
                out.append(self._embed_batch(m * image + (1 - m) * base))
        return torch.cat(out)

    def embed_masked_each(self, images: torch.Tensor, masks: torch.Tensor | np.ndarray,
                          baseline: str | float | torch.Tensor = "black") -> torch.Tensor:
        """Embeddings (K, N, D) of each of K images (K, 3, H, W) under each of N masks (as :meth:`embed_masked`).

        The K x N composites are streamed in full batches across the images, composed batch by batch: calling
        :meth:`embed_masked` image by image runs batches of N, and a small N (4 windows of a coarse sbsm grid,
        rise's last partial batch) left the default CNN's forwards at a fraction of their batched speed."""
        images = images.reshape(-1, 3, *self.size).to(self.device)
        k = images.shape[0]
        bases = torch.cat([self.baseline(baseline, images[j : j + 1]) for j in range(k)])  # (K, 3, H, W)
        masks = torch.as_tensor(np.asarray(masks) if isinstance(masks, np.ndarray) else masks, dtype=torch.float32)
        if masks.dim() == 2:
            masks = masks.unsqueeze(0)
        n = masks.shape[0]
        out = []
        with torch.inference_mode():
            for start in range(0, k * n, self.batch_size):
                idx = torch.arange(start, min(start + self.batch_size, k * n))
                which, mask = idx // n, idx % n
                m = masks[mask].to(self.device).unsqueeze(1)
                if tuple(m.shape[-2:]) != self.size:
                    m = F.interpolate(m, size=self.size, mode="bilinear", align_corners=False)
                which = which.to(self.device)
                xb = m * images[which] + (1 - m) * bases[which]
                if self.device.type == "cpu":
                    xb = xb.contiguous(memory_format=torch.channels_last)
                self.check_cancelled()
                with self.model.autocast():
                    out.append(self.model.embed(xb).float())
                self.count(forward=xb.shape[0])
        return torch.cat(out).reshape(k, n, -1)

    def query_mask_scores(self, masks, baseline="black") -> torch.Tensor:
        """(N, K): similarity of the query under each mask to every unperturbed neighbour, from N forwards (the
        masked-query embeddings are shared by all K neighbours: one matrix product)."""
        emb = self.embed_masked(self.query, masks, baseline)
        return self.model.similarity(emb, self.neighbour_embeddings)

    def neighbour_mask_scores(self, masks, baseline="black") -> torch.Tensor:
        """(K, N): similarity of each neighbour under each mask to the unperturbed query (K x N forwards, in full
        batches across the neighbours: :meth:`embed_masked_each`)."""
        emb = self.embed_masked_each(self.neighbours, masks, baseline)  # (K, N, D)
        k, n = emb.shape[:2]
        return self.model.similarity(emb.reshape(k * n, -1), self.query_embedding)[:, 0].reshape(k, n)

    # -- maps ---------------------------------------------------------------------------------------------------
    def upsample(self, maps: np.ndarray | torch.Tensor) -> np.ndarray:
        """(K, h, w) -> (K, H, W) bilinear (align_corners=False), float32 numpy."""
        t = torch.as_tensor(np.asarray(maps) if isinstance(maps, np.ndarray) else maps).float()
        if tuple(t.shape[-2:]) == self.size:
            return t.cpu().numpy().astype(np.float32)
        up = F.interpolate(t.unsqueeze(1).cpu(), size=self.size, mode="bilinear", align_corners=False)[:, 0]
        return up.numpy().astype(np.float32)

    def display_image(self, x: torch.Tensor) -> np.ndarray:
        """Model input (3, H, W) -> (H, W, 3) uint8 exactly as the model saw it."""
        rgb = self.model.preprocessing.denormalise(x.reshape(1, 3, *self.size).float().cpu())[0]
        return (rgb.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


SIDES = ("both", "query", "neighbour")


def _method(model: SimModel, method: str, side: str, params: dict[str, Any]):
    """The registry entry of ``method`` after checking the side, the model's features and the parameter names."""
    from . import METHODS  # noqa: F401  (imports every method module, filling the registry)

    if method not in REGISTRY:
        raise ExplainError(f"unknown method {method!r}; choose one of {', '.join(sorted(REGISTRY))}")
    if side not in SIDES:
        raise ExplainError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
    spec = REGISTRY[method]
    if spec.needs_features and not model.has_features:
        raise ExplainError(f"model {model.spec!r} exposes no spatial feature map; use a perturbation method "
                           "(sbsm, rise, kernelshap, lime)")
    accepted = inspect.signature(spec.fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(params) - set(accepted))
        renamed = [name for name in unknown if RENAMED.get(name) in accepted]
        if renamed:
            raise ExplainError(f"method {method!r}: {renamed_message(params, renamed)}")
        if unknown:
            known = [n for n in accepted if n not in ("ctx", "side")]
            raise ExplainError(f"method {method!r} has no parameter {', '.join(unknown)}; its parameters: "
                               f"{', '.join(known) or 'none'}")
    if "segmentation" in params and "segmentation" in accepted:
        parse_segmentation(params["segmentation"])  # a bad spec fails here, before any pass
    if "baseline" in params and "baseline" in accepted:
        check_baseline(method, params["baseline"], superpixels="segmentation" in accepted)
    return spec


def renamed_message(params: dict[str, Any], names: Sequence[str]) -> str:
    """The error text for parameters given under their old names, with the new spelling filled in."""
    parts = []
    if "n_masks" in names:
        parts.append(f"n_masks is now n_samples (n_samples={params['n_masks']!r})")
    seg_keys = [n for n in names if RENAMED[n] == "segmentation"]
    if seg_keys:
        algo = "quickshift" if {"kernel_size", "max_dist", "ratio"} & set(seg_keys) else "slic"
        keys = {"n_segments": "n"}
        spec = f"{algo}:" + ",".join(f"{keys.get(n, n)}={params[n]}" for n in seg_keys)
        parts.append(f"{', '.join(seg_keys)} {'is' if len(seg_keys) == 1 else 'are'} now one segmentation spec "
                     f"(segmentation={spec!r})")
    return "; ".join(parts)


def check_baseline(method: str, baseline: Any, superpixels: bool = False) -> None:
    """An :class:`ExplainError` before any pass for a fill outside the one vocabulary (:data:`BASELINES`)."""
    if isinstance(baseline, (torch.Tensor, int, float)) and not isinstance(baseline, bool):
        if not isinstance(baseline, torch.Tensor) and not 0.0 <= float(baseline) <= 1.0:
            raise ExplainError(f"method {method!r}: a numeric baseline is a grey level in [0, 1], got {baseline}")
        return
    names = BASELINES + (SEGMENT_BASELINES if superpixels else ())
    if baseline not in names:
        hint = "" if superpixels or baseline not in SEGMENT_BASELINES else " (segment_mean needs superpixels: " \
            "lime, kernelshap, shapleytaylor)"
        raise ExplainError(f"method {method!r}: unknown baseline {baseline!r}{hint}; choose one of "
                           f"{', '.join(names)}, a grey level in [0, 1] or a tensor")


def _explanation(method: str, ctx: PairContext, out: MethodOutput, t0: float) -> Explanation:
    """Turn a method's output into an :class:`Explanation` (pixel maps, similarities, effective parameters)."""
    sims = ctx.similarities().detach().cpu().numpy().astype(np.float32)
    ctx.cost.seconds = time.perf_counter() - t0
    if ctx.cost.forward + ctx.cost.backward >= 50:
        SPEED.record(ctx.model, ctx.cost.forward + 2 * ctx.cost.backward, ctx.cost.seconds)

    def pixel(maps: np.ndarray | None, fmaps: np.ndarray | None) -> np.ndarray | None:
        if maps is not None:
            return np.asarray(maps, dtype=np.float32)
        return ctx.upsample(fmaps) if fmaps is not None else None

    def baselines(given: np.ndarray | None, maps: np.ndarray | None) -> np.ndarray | None:
        if maps is None:
            return None
        if given is None:
            return np.zeros(len(maps), dtype=np.float32)
        return np.broadcast_to(np.asarray(given, dtype=np.float32).reshape(-1), (len(maps),)).copy()

    query_maps = pixel(out.query_maps, out.query_feature_maps)
    neighbour_maps = pixel(out.neighbour_maps, out.neighbour_feature_maps)
    effective = {"seed": ctx.seed, "batch_size": ctx.batch_size, **out.params}
    return Explanation(
        method=method,
        similarities=sims,
        query_maps=query_maps,
        neighbour_maps=neighbour_maps,
        params=effective,
        cost=ctx.cost,
        query_feature_maps=None if out.query_feature_maps is None else np.asarray(out.query_feature_maps, np.float32),
        neighbour_feature_maps=None if out.neighbour_feature_maps is None
        else np.asarray(out.neighbour_feature_maps, np.float32),
        extras=out.extras,
        joint=out.joint,
        query_cells=out.query_cells,
        neighbour_cells=out.neighbour_cells,
        query_image=ctx.display_image(ctx.query[0]),
        neighbour_images=np.stack([ctx.display_image(n) for n in ctx.neighbours]),
        query_baseline=baselines(out.query_baseline, query_maps),
        neighbour_baseline=baselines(out.neighbour_baseline, neighbour_maps),
        query_box=None if ctx.query_box is None else np.asarray(ctx.query_box, dtype=np.int32),
        neighbour_boxes=None if any(b is None for b in ctx.neighbour_boxes)
        else np.asarray(ctx.neighbour_boxes, dtype=np.int32),
    )


def run_method(spec: MethodSpec, ctx: PairContext, side: str, params: dict[str, Any],
               query_params: dict[str, Any] | None = None) -> MethodOutput:
    """Run a method on the requested side(s): a first-order method once per side (``query_params``, when given,
    for the query side), the outputs merged field by field (``query_*`` from the query call, ``neighbour_*`` from
    the neighbour call); a joint method once, with the caller's side."""
    if not spec.per_side:
        return spec.fn(ctx, side, **params)
    q_out = spec.fn(ctx, "query", **(params if query_params is None else query_params)) \
        if side in ("query", "both") else None
    n_out = spec.fn(ctx, "neighbour", **params) if side in ("neighbour", "both") else None
    return merge_sides(q_out, n_out)


def merge_sides(q_out: MethodOutput | None, n_out: MethodOutput | None) -> MethodOutput:
    """One output from a query-side and a neighbour-side call (either may be None): ``query_*`` fields from the
    first, ``neighbour_*`` fields and the parameters from the second, extras from both."""
    if q_out is None or n_out is None:
        return q_out if n_out is None else n_out if n_out is not None else MethodOutput()
    merged = MethodOutput(params={**n_out.params}, extras={**q_out.extras, **n_out.extras})
    for f in dataclasses.fields(MethodOutput):
        source = q_out if f.name.startswith("query_") else n_out if f.name.startswith("neighbour_") else None
        if source is not None:
            setattr(merged, f.name, getattr(source, f.name))
        elif f.name not in ("params", "extras"):
            setattr(merged, f.name, getattr(n_out, f.name) if getattr(n_out, f.name) is not None
                    else getattr(q_out, f.name))
    return merged


def _sides(spec: MethodSpec, side: str) -> list[str]:
    if not spec.per_side:
        return [side]
    return ["query", "neighbour"] if side == "both" else [side]


def estimate(model: SimModel, method: str, k: int = 1, side: str = "both", pair: PairContext | None = None,
             known_embeddings: bool = False, **params: Any) -> CostEstimate:
    """What ``explain(model, query, K neighbours, method, side, **params)`` will cost, before it runs: forward and
    backward passes and the seconds they take at this model's measured speed on this machine (a model not run yet
    is timed on 8 passes).

    Without ``pair`` the K + 1 unperturbed forwards are counted whether or not they are cached, and a method whose
    count depends on the images (the superpixel methods: SLIC returns fewer superpixels than asked) is counted
    with what it asks for: an upper bound, said so (``upper_bound``). With ``pair`` (the prepared
    :class:`PairContext` of the images to explain; preparing it makes no pass) the count is exact: only the
    unperturbed forwards not in the feature cache, and the superpixels the segmentation returns (segmenting is
    cheap next to the passes). A query-side run with the neighbours' embeddings known makes one unperturbed
    forward, the query's (``known_embeddings=True`` without ``pair``; a pair made with them knows it).

    >>> estimate(load_model("default"), "rise", k=1).describe()
    'rise: 4,002 forward passes, about 4 min on this machine'
    """
    spec = _method(model, method, side, params)
    k = pair.k if pair is not None else int(k)
    if spec.records_graph:  # the recorded graph forwards every image, cached or known or not
        forward = k + 1
    elif pair is None:
        forward = 1 if known_embeddings and side == "query" else k + 1
    else:
        forward = pair.uncached(side)
    backward = 0
    exact_later = pair is None and spec.pair_passes is not None
    for s in _sides(spec, side):
        if pair is not None and spec.pair_passes is not None:
            f, b = spec.pair_passes(pair, s, dict(params))
        elif spec.passes is not None:
            f, b = spec.passes(k, s, tuple(model.input_size), dict(params))
        else:
            f, b = 0, 0
        forward, backward = forward + int(f), backward + int(b)
    spp = SPEED.seconds_per_pass(model)
    return CostEstimate(method=method, forward=forward, backward=backward, seconds=(forward + 2 * backward) * spp,
                        seconds_per_pass=spp, upper_bound=exact_later)


def explain(model: SimModel, query: Any, neighbours: Sequence[Any] | Any, method: str = "gradcam",
            side: str = "both", seed: int = 0, batch_size: int | None = None, versus: Sequence[Any] | Any = None,
            progress: Progress | Callable[[Progress], None] | None = None, cancel: CancelToken | None = None,
            known_embeddings: Any = None, **params: Any) -> Explanation | ContrastExplanation:
    """Explain why ``query`` matches each of ``neighbours`` with one method.

    ``query`` and ``neighbours`` are PIL images, paths or preprocessed (3, S, S) tensors; ``model`` comes from
    :func:`simx.models.load_model`. Returns an :class:`Explanation` with (K, H, W) maps on the requested side(s),
    the K similarities, the effective parameters (seed included) and the cost. See ``METHODS`` for the names.

    ``progress``: a :class:`~simx.explain.progress.Progress` or a function called with one after every counted
    batch of passes (its ``total`` is :func:`estimate`'s); ``cancel``: a
    :class:`~simx.explain.progress.CancelToken` whose ``cancel()`` stops the run at its next batch with
    :class:`~simx.explain.progress.ExplanationCancelled`.

    With ``versus`` (one image or a list of J images: the neighbours that should have ranked first),
    ``neighbours`` is the ONE wrong neighbour and the result is a :class:`ContrastExplanation`: the map of each
    margin s(query, wrong) - s(query, right_j) on the query (side "query" or "both") and the usual pair maps on the
    wrong and the right neighbours (side "neighbour" or "both"), see :func:`explain_contrast`.

    ``known_embeddings``: the neighbours' embeddings when they are known, one row per neighbour (with ``versus``:
    the wrong one, then the right ones), e.g. an index's stored vectors (``index.embeddings[rows]``, made by the same
    model and preprocessing). A query-side explanation then needs no forward pass of the neighbours (the gradient
    and closed-form query maps read only their embeddings, a perturbation method scores masked queries against
    them): one forward, the query's. Sides that draw the neighbours' own maps need their feature maps, so they go
    forward anyway and the known embeddings are not used (they would save nothing).
    """
    spec = _method(model, method, side, params)
    tracker = _tracker(progress, cancel)
    if versus is not None:
        outer = tracker is not None and tracker.running
        result = explain_contrast(model, query, neighbours, versus, spec, side, seed, batch_size, params, tracker,
                                  known_embeddings)
        return _finish(None if outer else tracker, result)
    ctx = PairContext(model, query, neighbours, seed=seed, batch_size=batch_size,
                      known_embeddings=known_embeddings if side == "query" else None)
    owner = _start(tracker, ctx, method, side, params)
    t0 = time.perf_counter()
    out = run_method(spec, ctx, side, params)
    return _finish(tracker if owner else None, _explanation(method, ctx, out, t0))


def _tracker(progress: Progress | Callable[[Progress], None] | None, cancel: CancelToken | None) -> Progress | None:
    if progress is None and cancel is None:
        return None
    tracker = progress if isinstance(progress, Progress) else Progress(callback=progress)
    if cancel is not None:
        tracker.token = cancel
    return tracker


def _start(tracker: Progress | None, ctx: PairContext, method: str, side: str, params: dict[str, Any]) -> bool:
    """Attach ``tracker`` to ``ctx``; start it with this run's estimated total unless an outer run (a method that
    explains through another, like ``sane``) already did. Returns whether this run started it."""
    if tracker is None:
        return False
    ctx.progress = tracker
    if tracker.running:
        return False
    tracker.start(estimate(ctx.model, method, side=side, pair=ctx, **params).passes)
    tracker.check()
    return True


def _finish(tracker: Progress | None, result: Any) -> Any:
    if tracker is not None:
        tracker.finish()
    return result


def _as_list(images: Sequence[Any] | Any) -> list[Any]:
    if isinstance(images, torch.Tensor):
        return list(images) if images.dim() == 4 else [images]
    if isinstance(images, (Image.Image, str, np.ndarray)) or not isinstance(images, Sequence):
        return [images]
    return list(images)


def explain_contrast(model: SimModel, query: Any, wrong: Any, versus: Sequence[Any] | Any, spec: MethodSpec,
                     side: str, seed: int, batch_size: int | None, params: dict[str, Any],
                     tracker: Progress | None = None, known_embeddings: Any = None) -> ContrastExplanation:
    """The contrastive explanation behind ``explain(..., versus=...)``, for every method that declares a linear
    query map (``register(..., contrast=...)``).

    One :class:`PairContext` holds the query and the neighbours [wrong, right_1, ..., right_J], so the unperturbed
    images go forward once and the query side is computed ONCE against all 1 + J neighbours: gradient methods
    replicate F(q) over the 1 + J rows of one backward pass (one extra head evaluation per rival, no backbone
    pass), closed-form methods cost one more einsum row, perturbation methods score the same masked-query passes
    against every neighbour (one matrix product). The query map is taken in the method's linear (signed) form, so
    the map of the margin is exactly map(q, wrong) - map(q, right_j), each taken about its "no effect" value (RISE's
    mean masked score; 0 for the others), so a pixel that does not matter reads ~0; the neighbour side runs with
    the caller's parameters (the usual pair maps). With ``known_embeddings`` (the neighbours' stored vectors) and
    ``side="query"`` the neighbours make no forward pass: the contrast costs what the plain query map costs.
    """
    wrongs, rights = _as_list(wrong), _as_list(versus)
    if len(wrongs) != 1:
        raise ExplainError(f"a contrastive explanation compares ONE wrong neighbour with versus=...; got {len(wrongs)}")
    if not rights:
        raise ExplainError("versus is empty: pass the neighbour(s) that should have ranked above the wrong one")
    linear = spec.contrast_params(model)
    if linear is None:
        able = sorted(n for n, s in REGISTRY.items() if s.contrast_params(model) is not None)
        raise ExplainError(f"method {spec.name!r} has no contrastive (margin) map for model {model.spec!r}; "
                           f"use one of {', '.join(able)}")
    ctx = PairContext(model, query, wrongs + rights, seed=seed, batch_size=batch_size,
                      known_embeddings=known_embeddings if side == "query" else None)
    _start(tracker, ctx, spec.name, side, params)
    t0 = time.perf_counter()
    query_params = {**params, **linear}
    q_out = spec.fn(ctx, "query", **query_params) if side in ("query", "both") else None
    n_out = spec.fn(ctx, "neighbour", **params) if side in ("neighbour", "both") else None
    pair = _explanation(spec.name, ctx, merge_sides(q_out, n_out), t0)
    if q_out is not None:
        pair.params["query_params"] = {"seed": ctx.seed, **q_out.params}

    def margin_maps(maps: np.ndarray | None, base: np.ndarray | None) -> np.ndarray | None:
        # each pair map minus its "no effect" value first (RISE: the mean masked score), so the margin map reads ~0
        # where a pixel does not matter: RISE's E[s_w - s_r | pixel kept] - E[s_w - s_r], not that plus the mean
        # masked margin everywhere (the baselines of the other methods are 0)
        if maps is None:
            return None
        centred = maps - (0.0 if base is None else np.asarray(base, np.float32).reshape(-1, 1, 1))
        return (centred[:1] - centred[1:]).astype(np.float32)

    sims = pair.similarities
    return ContrastExplanation(method=spec.name, similarities=sims, margins=(sims[0] - sims[1:]).astype(np.float32),
                               query_maps=margin_maps(pair.query_maps, pair.query_baseline), pair=pair,
                               query_params={"seed": ctx.seed, **q_out.params} if side != "neighbour" else {},
                               cost=ctx.cost, query_feature_maps=margin_maps(pair.query_feature_maps, None))
