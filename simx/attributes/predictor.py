"""SANE's attribute predictor and attribute activation maps (methods.md 4.3), and the ImageNet fallback.

:class:`AttributeHead` is SANE's head on the explained layer of the *index's* model (not a separate ResNet-50:
the features are the ones the similarity model itself computes, so they can be cached once per image):

    H_a = conv3x3(standardise(F(x)))_a          (A maps, padding 1, no bias: the attribute activation map, AAM)
    score_a = GAP(H_a) + b_a                     c_a = sigmoid(score_a)   (confidence, methods.md 4.4 step 2)
    P_a = softmax over the h*w positions of z(H_a)  (what saliency maps are matched against, 4.3/4.4; see
                                                     :func:`match_scores` for the z-scoring)

``standardise`` subtracts the per-channel training mean and divides by the standard deviation (kept in the
weights file) so that one learning rate suits any backbone; ``b_a`` is a per-attribute score offset outside the
map, so the AAM itself stays bias-free as in SANE while the sigmoid can be calibrated for rare attributes.

:class:`AttributePredictor` bundles the head with its :class:`~simx.attributes.vocab.Vocabulary`, the model
record it was trained for, per-attribute decision thresholds and its metrics. On disk (``PREDICTOR_FORMAT``)::

    weights.safetensors   conv.weight (A, C, 3, 3), bias (A,), feat_mean (C,), feat_std (C,)
    vocabulary.json       the vocabulary (simx.attributes.vocab.VOCAB_FORMAT)
    predictor.json        format, model record, thresholds, training configuration, metrics

:class:`ImageNetAttributes` answers the same calls for the default model without any training: the ImageNet
classifier's 1000 classes grouped by :func:`~simx.attributes.vocab.imagenet_vocabulary`, with class activation
maps CAM_c(j) = w_c . F(x)[:, j] + b_c on the classifier's own input layer. A group's confidence is the summed
softmax probability of its classes and its map the probability-weighted mean of their CAMs.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import SimModel
from .vocab import (AttributeVocabularyError, PredictorError, Vocabulary, imagenet_vocabulary)

#: Version of the predictor folder layout; bumped on any incompatible change.
PREDICTOR_FORMAT = 1
WEIGHTS_FILE = "weights.safetensors"
VOCAB_FILE = "vocabulary.json"
META_FILE = "predictor.json"


class AttributeHead(nn.Module):
    """3x3 conv (C -> A, no bias) on standardised features; scores = GAP of each map + a per-attribute offset."""

    def __init__(self, channels: int, n_attributes: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, n_attributes, kernel_size=3, padding=1, bias=False)
        nn.init.normal_(self.conv.weight, std=0.01)
        self.bias = nn.Parameter(torch.zeros(n_attributes))
        self.register_buffer("feat_mean", torch.zeros(channels))
        self.register_buffer("feat_std", torch.ones(channels))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, h, w) features -> (maps H (B, A, h, w), scores (B, A)) (methods.md 4.3)."""
        x = (feats.float() - self.feat_mean.view(1, -1, 1, 1)) / self.feat_std.view(1, -1, 1, 1)
        maps = self.conv(x)
        return maps, maps.mean(dim=(2, 3)) + self.bias


def spatial_softmax(maps: torch.Tensor, standardise: bool = False, temperature: float = 1.0) -> torch.Tensor:
    """softmax over the h*w positions of each map, (..., h, w) -> (..., h*w) (methods.md 4.3 P_a and G_j).

    With ``standardise`` each map is first z-scored (minus its mean, over its standard deviation): raw RISE maps
    span a small range, so softmax at temperature 1 would be almost flat (the pitfall named in methods.md 4.4).
    """
    flat = maps.flatten(-2).float()
    if standardise:
        flat = (flat - flat.mean(-1, keepdim=True)) / flat.std(-1, keepdim=True).clamp_min(1e-6)
    return torch.softmax(flat / temperature, dim=-1)


def match_scores(aams: torch.Tensor, saliency: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Saliency matching m_a of every AAM against every saliency map (methods.md 4.4 step 2; L_heat, 4.3):

        P_a = softmax(z(H_a) / T),  G = softmax(z(S) / T)  over the h*w positions,
        m_a = 1 - || P_a - G ||_2 / (|| P_a ||_2 + || G ||_2)

    Two stated changes to SANE's 1 - ||P_a - G||_2 [D]: both maps are z-scored before the softmax (raw RISE
    values make G flat, the 4.4 pitfall, and an AAM's scale would otherwise decide its peakiness), and the distance
    is divided by ||P_a|| + ||G|| (its bound), so m lies in [0, 1] whatever the grid: at SANE's 4x4 the raw form
    is spread out, at 7x7-16x16 every distance shrinks towards ||G|| and m would barely separate attributes.
    ``aams`` (..., A, h, w), ``saliency`` (..., R, h, w) at the same resolution -> (..., R, A)."""
    p = spatial_softmax(aams, standardise=True, temperature=temperature)
    g = spatial_softmax(saliency, standardise=True, temperature=temperature)
    dist = torch.cdist(g, p)
    bound = g.norm(dim=-1).unsqueeze(-1) + p.norm(dim=-1).unsqueeze(-2)
    return 1.0 - dist / bound.clamp_min(1e-12)


def resize_maps(maps: torch.Tensor | np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(..., H, W) -> (..., h, w): area averaging when shrinking (a saliency map becomes its mean over each
    feature cell), bilinear otherwise."""
    t = torch.as_tensor(np.asarray(maps) if isinstance(maps, np.ndarray) else maps).float()
    lead = t.shape[:-2]
    t = t.reshape(-1, 1, *t.shape[-2:])
    if t.shape[-2] >= size[0] and t.shape[-1] >= size[1]:
        out = F.adaptive_avg_pool2d(t, size)
    else:
        out = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size)


def model_record(model: SimModel) -> dict[str, Any]:
    """What a predictor remembers about the model whose features it reads."""
    return {"spec": model.spec, "layer": model.layer, "metric": model.metric,
            "channels": int(model.feature_channels), "input_size": list(model.input_size),
            "preprocessing": model.preprocessing.to_dict()}


class AttributeSource(Protocol):
    """What :mod:`simx.explain.methods.sane` needs from an attribute predictor."""

    vocabulary: Vocabulary

    def describe(self) -> str: ...

    def check_model(self, model: SimModel) -> None: ...

    def attribute_maps(self, model: SimModel, x: torch.Tensor, feats: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(maps (B, A, h, w), confidences (B, A) in [0, 1]) for model inputs ``x`` whose explained-layer
        features are ``feats``."""
        ...

    def thresholds(self) -> np.ndarray: ...


class AttributePredictor:
    """A trained SANE attribute head with its vocabulary, model record, thresholds and metrics."""

    def __init__(self, head: AttributeHead, vocabulary: Vocabulary, model: dict[str, Any],
                 thresholds: np.ndarray | None = None, metrics: dict[str, Any] | None = None,
                 training: dict[str, Any] | None = None, path: Path | None = None):
        if head.conv.out_channels != len(vocabulary):
            raise PredictorError(f"predictor head has {head.conv.out_channels} maps but the vocabulary "
                                 f"{len(vocabulary)} attributes")
        self.head = head.eval()
        self.vocabulary = vocabulary
        self.model = dict(model)
        self._thresholds = (np.full(len(vocabulary), 0.5, np.float32) if thresholds is None
                            else np.asarray(thresholds, np.float32))
        self.metrics = dict(metrics or {})
        self.training = dict(training or {})
        self.path = path

    # -- the AttributeSource protocol ------------------------------------------------------------------------
    def describe(self) -> str:
        heat = "with" if self.training.get("heat") else "without"
        where = f" at {self.path}" if self.path else ""
        return f"trained attribute predictor ({len(self.vocabulary)} attributes, {heat} saliency supervision){where}"

    def thresholds(self) -> np.ndarray:
        return self._thresholds

    def check_model(self, model: SimModel) -> None:
        """:class:`PredictorError` if ``model``'s explained layer is not the one this predictor was trained on."""
        diffs = [f"{k}: predictor has {self.model.get(k)!r}, model has {v!r}"
                 for k, v in (("spec", model.spec), ("layer", model.layer), ("channels", int(model.feature_channels)))
                 if self.model.get(k) != v]
        if diffs:
            raise PredictorError("the attribute predictor was trained on another model's features: " + "; ".join(diffs))

    @torch.no_grad()
    def attribute_maps(self, model: SimModel, x: torch.Tensor | None, feats: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if feats is None:
            if x is None:
                raise PredictorError("attribute_maps needs model inputs or features")
            feats = model.features(x.to(model.device))
        head = self.head.to(feats.device)
        maps, scores = head(feats.float())
        return maps, torch.sigmoid(scores)

    def predict(self, feats: torch.Tensor) -> torch.Tensor:
        """Confidences c_a = sigmoid(GAP(H_a) + b_a), (B, A)."""
        return self.attribute_maps(None, None, feats)[1]  # type: ignore[arg-type]

    # -- persistence ---------------------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> Path:
        """Write weights (safetensors), vocabulary and metrics (JSON) into ``folder`` (created), atomically per
        file (``predictor.json`` last, so a folder with it is complete)."""
        from safetensors.torch import save_file

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        tmp = out / (WEIGHTS_FILE + ".tmp")
        save_file(state, str(tmp), metadata={"format": str(PREDICTOR_FORMAT)})
        os.replace(tmp, out / WEIGHTS_FILE)
        tmp = out / (VOCAB_FILE + ".tmp")
        self.vocabulary.save(tmp)
        os.replace(tmp, out / VOCAB_FILE)
        meta = {"format": PREDICTOR_FORMAT, "kind": "sane-attribute-head", "model": self.model,
                "n_attributes": len(self.vocabulary), "channels": int(self.head.conv.in_channels),
                "thresholds": [float(t) for t in self._thresholds], "training": self.training,
                "metrics": self.metrics, "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        tmp = out / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=1, default=_json_default), encoding="utf-8")
        os.replace(tmp, out / META_FILE)
        self.path = out
        return out

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "AttributePredictor":
        """Read a predictor folder written by :meth:`save`, with clear errors for a missing or foreign one."""
        from safetensors.torch import load_file

        root = Path(folder)
        meta_path = root / META_FILE
        if not meta_path.is_file():
            raise PredictorError(f"no attribute predictor in {root} (missing {META_FILE}); "
                                 "train one with `simx attributes train INDEX`")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PredictorError(f"{meta_path} is not valid JSON ({exc.msg})") from None
        if meta.get("format") != PREDICTOR_FORMAT:
            raise PredictorError(f"{root}: predictor format {meta.get('format')!r} is not supported "
                                 f"(this simx reads {PREDICTOR_FORMAT}); retrain it")
        try:
            vocab = Vocabulary.load(root / VOCAB_FILE)
        except AttributeVocabularyError as exc:
            raise PredictorError(f"{root}: {exc}") from None
        try:
            state = load_file(str(root / WEIGHTS_FILE))
        except Exception as exc:  # noqa: BLE001
            raise PredictorError(f"{root / WEIGHTS_FILE} is unreadable: {exc}") from None
        w = state.get("conv.weight")
        if w is None or w.dim() != 4:
            raise PredictorError(f"{root / WEIGHTS_FILE} holds no conv.weight of shape (A, C, 3, 3)")
        head = AttributeHead(int(w.shape[1]), int(w.shape[0]))
        try:
            head.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise PredictorError(f"{root / WEIGHTS_FILE} does not fit the attribute head: {str(exc).splitlines()[0]}") from None
        return cls(head, vocab, meta.get("model", {}), np.asarray(meta.get("thresholds") or [0.5] * len(vocab)),
                   meta.get("metrics"), meta.get("training"), path=root)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class ImageNetAttributes:
    """Zero-configuration attributes for a model that keeps its ImageNet classifier (the default model).

    Confidence of attribute a (a class or a group of classes): c_a = sum_{c in a} softmax(logits)_c.
    Map of a: H_a(j) = sum_{c in a} p_c CAM_c(j) / c_a with CAM_c(j) = w_c . F(x)[:, j] + b_c on the
    classifier's input layer (the last spatial map before pooling), i.e. the classic class activation map, whose
    spatial mean is exactly the class logit for a GAP + linear classifier.
    """

    def __init__(self, model: SimModel, min_confidence: float = 0.1):
        classifier = getattr(model, "_classifier", None)
        names = getattr(model, "_class_names", None)
        if classifier is None or names is None:
            raise PredictorError(f"model {model.spec!r} has no ImageNet classifier; train an attribute predictor "
                                 "with `simx attributes train INDEX` and pass predictor=")
        weight = getattr(classifier, "weight", None)
        if not isinstance(classifier, nn.Linear) or weight is None or weight.shape[0] != 1000:
            raise PredictorError(f"model {model.spec!r}: its classifier is not a 1000-class linear layer, so class "
                                 "activation maps cannot be formed; train an attribute predictor instead")
        if hasattr(model, "layout") and model.linear_head() is None:
            # a transformer whose classifier reads a class token or an attention pool: w . F over patch tokens is
            # no class activation map (its mean is not the logit)
            raise PredictorError(f"model {model.spec!r}: its classifier does not read the mean of the explained "
                                 f"patch tokens (layer {model.layer!r}), so class activation maps cannot be formed; "
                                 "train an attribute predictor with `simx attributes train INDEX`")
        if getattr(model, "_linear_pool", None) != "avg":
            # the classifier reads the pooled last map; CAMs need that pooling to be a plain average
            pool = getattr(model, "_pool_fn", None)
            probe = torch.randn(2, int(weight.shape[1]), 3, 3, device=model.device)
            if pool is None or not torch.allclose(pool(probe), probe.mean(dim=(2, 3)), atol=1e-5):
                raise PredictorError(f"model {model.spec!r} does not average-pool before its classifier; "
                                     "class activation maps do not apply")
        self.spec = model.spec
        self.weight = weight.detach().float()
        self.bias = (classifier.bias.detach().float() if classifier.bias is not None
                     else torch.zeros(1000, device=self.weight.device))
        self.vocabulary = imagenet_vocabulary(names)
        member = torch.zeros(len(self.vocabulary), 1000)
        for a, name in enumerate(self.vocabulary.names):
            member[a, self.vocabulary.members[name]] = 1.0
        self.membership = member
        self.min_confidence = float(min_confidence)

    def describe(self) -> str:
        return (f"ImageNet classifier of {self.spec!r} as vocabulary ({len(self.vocabulary)} classes and groups, "
                "class activation maps)")

    def thresholds(self) -> np.ndarray:
        return np.full(len(self.vocabulary), self.min_confidence, np.float32)

    def check_model(self, model: SimModel) -> None:
        if model.spec != self.spec:
            raise PredictorError(f"ImageNet attributes were built for {self.spec!r}, not {model.spec!r}")

    @staticmethod
    def last_features(model: SimModel, x: torch.Tensor, feats: torch.Tensor | None) -> torch.Tensor:
        """The classifier's input map: the explained layer's features when it is the last spatial layer, else a
        forward to that layer."""
        last = getattr(model, "_last_mod", None)
        if feats is not None and (last is None or getattr(model, "_layer_mod", None) is last):
            return feats
        with torch.inference_mode():
            return model._run_until(x.to(model.device), last).float()  # type: ignore[attr-defined]

    @torch.no_grad()
    def attribute_maps(self, model: SimModel, x: torch.Tensor, feats: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.last_features(model, x, feats).float()
        w, b = self.weight.to(f.device), self.bias.to(f.device)
        cams = torch.einsum("kc,bchw->bkhw", w, f) + b.view(1, -1, 1, 1)  # (B, 1000, h, w)
        probs = torch.softmax(cams.mean(dim=(2, 3)), dim=-1)  # mean of CAM = logit (GAP + linear)
        member = self.membership.to(f.device)
        conf = probs @ member.T  # (B, A)
        weighted = torch.einsum("ak,bk,bkhw->bahw", member, probs, cams)
        maps = weighted / conf.clamp_min(1e-12).unsqueeze(-1).unsqueeze(-1)
        return maps, conf.clamp(0, 1)


def load_predictor(source: "AttributePredictor | str | os.PathLike") -> AttributePredictor:
    """An :class:`AttributePredictor` from an object or a folder. A folder that holds no predictor itself but an
    index's ``attributes/`` folder (or the index folder) resolves to the predictor trained with saliency
    supervision when there is one, else the one without."""
    if isinstance(source, AttributePredictor):
        return source
    root = Path(source)
    for cand in (root, root / "predictor", root / "predictor-no-heat", root / "attributes" / "predictor",
                 root / "attributes" / "predictor-no-heat"):
        if (cand / META_FILE).is_file():
            return AttributePredictor.load(cand)
    raise PredictorError(f"no attribute predictor found at {root} (looked for {META_FILE} there and in "
                         "predictor/, attributes/predictor/); train one with `simx attributes train INDEX`")
