"""``simx train``: fine-tune an index's own model on its labelled matches and write a model spec for a rebuild.

Pipeline (:func:`train_index`):

1. **Triplets** from the index's label store (:mod:`simx.training.pairs`): bad matches are hard negatives, good
   matches (and, with class labels, same-label neighbours) positives. The labelled queries are split, seeded,
   into training and a held-out validation share (20 %) that decides the best epoch and early stopping.
2. **Model**: a private copy of the index's model (same spec, layer, metric and preprocessing), every weight frozen
   but the last groups (:mod:`simx.training.split`; by default the last stage and the head, about a fifth of the
   embedding path's weights), network in eval mode throughout (BatchNorm keeps its running statistics: batches of
   a few dozen labelled images would make batch statistics noisy, and the frozen trunk was trained with them).
3. **Cached trunk**: the frozen part runs once per image; each step replays only the trainable groups (checked to
   be exact before use). L_sm runs the whole network (the erased images need it) for the first ``sm_batch``
   triplets of each step (all by default; fewer bounds its cost on a CPU).
4. **Loss** (:mod:`simx.training.losses`): a margin triplet loss in the index's similarity, optionally plus
   ``gamma L_sm``; Adam; after every epoch the training and validation losses are measured on all their triplets
   with the current weights; the best validation epoch is kept, and training stops after ``patience`` epochs
   without improvement (without a validation split: after ``epochs``, keeping the best training loss).
5. **Output** (one folder, written atomically): ``weights.safetensors`` (the whole network's state dict, so it
   reloads strictly), ``spec.txt`` (the model spec ``simx index build --model`` takes: ``default@FILE``,
   ``timm:ARCH@FILE``, ``torchvision:ARCH@FILE`` or ``python:MODULE:FACTORY@FILE``) and ``training.json`` (labels
   used, split, per-epoch losses, options, the command, the rebuild command, the reload check). The written spec
   is loaded back and must reproduce the trained model's embeddings.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data import load_image
from ..models import SimModel, load_model
from .losses import (DEFAULT_MARGIN, DEFAULT_SM_WEIGHT, SM_OMEGA, SM_SIGMA, embed_with_maps, pair_similarity,
                     similarity_mining_loss, triplet_loss)
from .pairs import TripletSet, collect_triplets, query_weights, split_triplets
from .split import DEFAULT_TRAIN_SHARE, FrozenCut, TrainingError, default_unfreeze, parameter_groups, set_trainable

WEIGHTS_FILE = "weights.safetensors"
SPEC_FILE = "spec.txt"
RECORD_FILE = "training.json"
RECORD_FORMAT = 1


@dataclass
class TrainConfig:
    """Options of :func:`train_index` (defaults sized for a few hundred labels on a CPU)."""

    epochs: int = 20
    patience: int = 3
    batch_size: int = 32  # triplets per step
    lr: float = 3e-4
    margin: float = DEFAULT_MARGIN
    unfreeze: int | None = None  # number of last groups that train; None: DEFAULT_TRAIN_SHARE of the weights
    val_share: float = 0.2
    seed: int = 0
    same_label: bool = True
    pool: int = 20  # neighbours searched for same-label positives
    sm_weight: float = 0.0  # gamma of L_sm; 0 = off
    sm_batch: int | None = None  # triplets per step that also get L_sm (None: all of them)
    users: list[str] | None = None
    device: str | None = None
    image_batch: int = 32  # images per forward when caching features


@dataclass
class TrainResult:
    """What :func:`train_index` wrote: the folder, the model spec and the training record."""

    out: Path
    spec: str
    record: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        r = self.record
        h = r["history"]
        best = r["best_epoch"]
        before, after = h[0], h[best]
        lines = [
            f"trained {r['trainable']['groups']} of {r['model']['spec']} on {r['split']['train_triplets']} "
            f"triplets ({len(r['split']['train_queries'])} queries), validated on {r['split']['val_triplets']} "
            f"({len(r['split']['val_queries'])} queries); {r['stopped']}",
            f"  training loss   {before['train_loss']:.4f} -> {after['train_loss']:.4f}",
        ]
        if after.get("val_loss") is not None:
            lines.append(f"  validation loss {before['val_loss']:.4f} -> {after['val_loss']:.4f}   ordered "
                         f"{before['val_accuracy']:.3f} -> {after['val_accuracy']:.3f}")
        if best == 0:
            lines.append("  note            no epoch improved on the starting weights, so the written model equals the "
                         "original; label more pairs or change --lr / --unfreeze")
        lines += [f"  model spec      {self.spec}", f"  written to      {self.out}",
                  f"  rebuild with    {r['rebuild_command']}"]
        return "\n".join(lines)


def weights_spec(spec: str, weights: str | os.PathLike) -> str:
    """The spec of ``spec``'s architecture with weights from ``weights`` (an existing ``@FILE`` is replaced)."""
    if spec.startswith("torchscript:"):
        raise TrainingError("TorchScript models cannot be fine-tuned by simx train; fine-tune the network in "
                            "PyTorch and export it again")
    return f"{spec.partition('@')[0]}@{Path(weights).resolve()}"


def _progress(total: int, enabled: bool, desc: str = "train", unit: str = "step"):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)


class _Trainer:
    """Holds the model, the triplets and the image data; computes losses on index arrays of triplets."""

    def __init__(self, model: SimModel, ts: TripletSet, paths: list[str], cfg: TrainConfig, progress: bool):
        self.model, self.ts, self.cfg = model, ts, cfg
        self.groups = parameter_groups(model)
        self.n_unfreeze = cfg.unfreeze or default_unfreeze(self.groups, DEFAULT_TRAIN_SHARE)
        self.params = set_trainable(model, self.groups, self.n_unfreeze)
        self.use_sm = cfg.sm_weight > 0
        images = [model.preprocess(load_image(p)) for p in paths]
        self.images = torch.stack(images).to(model.device) if self.use_sm else None
        self.cut = FrozenCut(model, self.groups[-self.n_unfreeze])
        probe = torch.stack(images[: min(4, len(images))]).to(model.device)
        self.calibration = self.cut.calibrate(probe)
        parts: list[tuple[torch.Tensor, ...]] = []
        bar = _progress(len(images), progress, "frozen trunk", "img")
        for i in range(0, len(images), cfg.image_batch):
            parts.append(self.cut.prefix_features(torch.stack(images[i : i + cfg.image_batch]).to(model.device)))
            if bar is not None:
                bar.update(len(parts[-1][0]))
        if bar is not None:
            bar.close()
        self.cache = [torch.cat([p[j] for p in parts]) for j in range(len(parts[0]))]
        del images

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.cut.embed_from(tuple(c[idx] for c in self.cache))

    def batch_loss(self, trip: np.ndarray, weights: np.ndarray) -> tuple[torch.Tensor, float, float]:
        """Loss of one batch of triplets (differentiable), and its metric and L_sm parts as numbers. The metric
        part replays the cached trunk; L_sm runs the first ``sm_batch`` triplets through the whole network."""
        w = torch.as_tensor(weights, device=self.model.device)
        uniq, inv = np.unique(trip, return_inverse=True)
        e = self.embed(torch.as_tensor(uniq, device=self.model.device))
        inv = torch.as_tensor(inv.reshape(trip.shape), device=self.model.device)
        metric = triplet_loss(self.model, e, inv, w, self.cfg.margin)
        if not self.use_sm:
            return metric, float(metric.detach()), 0.0
        sub = trip[: self.cfg.sm_batch or len(trip)]
        flat = torch.as_tensor(np.concatenate([sub[:, 0], sub[:, 1], sub[:, 2]]), device=self.model.device)
        x = self.images[flat]
        f, A = embed_with_maps(self.model, x)
        sm = similarity_mining_loss(self.model, x, f, A)
        return metric + self.cfg.sm_weight * sm, float(metric.detach()), float(sm.detach())

    @torch.no_grad()
    def measure(self, trip: np.ndarray) -> dict[str, float] | None:
        """Weighted triplet loss and the share of triplets ordered (s(q,p) > s(q,n)) with the current weights."""
        if not len(trip):
            return None
        uniq = np.unique(trip)
        embs = []
        for i in range(0, len(uniq), self.cfg.image_batch):
            embs.append(self.embed(torch.as_tensor(uniq[i : i + self.cfg.image_batch], device=self.model.device)))
        e = torch.cat(embs)
        ix = torch.as_tensor(np.searchsorted(uniq, trip), device=self.model.device)
        sp = pair_similarity(self.model, e[ix[:, 0]], e[ix[:, 1]])
        sn = pair_similarity(self.model, e[ix[:, 0]], e[ix[:, 2]])
        w = torch.as_tensor(query_weights(trip), device=self.model.device)
        return {"loss": float(triplet_loss(self.model, e, ix, w, self.cfg.margin)),
                "accuracy": float((sp > sn).float().mean())}


def _snapshot(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _restore(params: list[torch.nn.Parameter], saved: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.copy_(s)


def fit(trainer: _Trainer, progress: bool = False, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the epochs of ``trainer``; returns history, best epoch and why it stopped (weights = best epoch)."""
    cfg, ts = trainer.cfg, trainer.ts
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.Adam(trainer.params, lr=cfg.lr)
    weights = query_weights(ts.train)
    has_val = len(ts.val) > 0

    def epoch_row(epoch: int, step_losses: list[float], sm_losses: list[float], seconds: float) -> dict[str, Any]:
        tr, va = trainer.measure(ts.train), trainer.measure(ts.val)
        return {"epoch": epoch, "train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
                "val_loss": va["loss"] if va else None, "val_accuracy": va["accuracy"] if va else None,
                "mean_step_loss": float(np.mean(step_losses)) if step_losses else None,
                "mean_sm_loss": float(np.mean(sm_losses)) if sm_losses else None, "seconds": round(seconds, 3)}

    history = [epoch_row(0, [], [], 0.0)]
    key = "val_loss" if has_val else "train_loss"
    best, best_epoch, best_state, stale = history[0][key], 0, _snapshot(trainer.params), 0
    steps = max(1, int(np.ceil(len(ts.train) / cfg.batch_size)))
    bar = _progress(cfg.epochs * steps, progress)
    stopped = f"stopped after the maximum of {cfg.epochs} epochs"
    try:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            order = rng.permutation(len(ts.train))
            step_losses, sm_losses = [], []
            for s in range(steps):
                sel = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
                loss, metric, sm = trainer.batch_loss(ts.train[sel], weights[sel])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step_losses.append(metric)
                if trainer.use_sm:
                    sm_losses.append(sm)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{metric:.4f}", **({"sm": f"{sm:.3f}"} if trainer.use_sm else {}))
            row = epoch_row(epoch, step_losses, sm_losses, time.perf_counter() - t0)
            history.append(row)
            if bar is not None:
                bar.set_postfix(epoch=epoch, train=f"{row['train_loss']:.4f}",
                                **({"val": f"{row['val_loss']:.4f}"} if has_val else {}))
            if log is not None:
                log(f"epoch {epoch}: train {row['train_loss']:.4f}" + (f", val {row['val_loss']:.4f}" if has_val else ""))
            if row[key] < best - 1e-6:
                best, best_epoch, best_state, stale = row[key], epoch, _snapshot(trainer.params), 0
            else:
                stale += 1
                if has_val and stale >= cfg.patience:
                    stopped = f"early stop after epoch {epoch}: no validation improvement for {cfg.patience} epochs"
                    break
    finally:
        if bar is not None:
            bar.close()
    _restore(trainer.params, best_state)
    return {"history": history, "best_epoch": best_epoch, "stopped": stopped + f"; kept epoch {best_epoch}",
            "selected_by": key}


def _write_outputs(out: Path, model: SimModel, record: dict[str, Any], spec_for: Callable[[Path], str],
                   force: bool) -> str:
    """Write weights, spec and record into ``out`` atomically (a temporary sibling folder renamed into place)."""
    from safetensors.torch import save_file

    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise TrainingError(f"{out} already exists; choose another --out or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        state = {k: v.detach().cpu().clone().contiguous() for k, v in model.net.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        spec = spec_for(out / WEIGHTS_FILE)
        record["spec"] = spec
        (tmp / SPEC_FILE).write_text(spec + "\n", encoding="utf-8")
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return spec


def _reload_check(spec: str, trained: SimModel, probe: torch.Tensor) -> float:
    """Max abs difference between the trained model's and the reloaded spec's embeddings on ``probe``."""
    again = load_model(spec, layer=trained.layer, metric=trained.metric, device=trained.device,
                       preprocessing=trained.preprocessing, cache=False)
    with torch.no_grad():
        diff = float((again.embed(probe).float() - trained.embed(probe).float()).abs().max())
    if diff > 1e-4:
        raise TrainingError(f"the written weights do not reproduce the trained model (max difference {diff:.3g})")
    return diff


def rebuild_command(index, spec: str, name: str) -> str:
    """The ``simx index build`` line that embeds ``index``'s gallery with ``spec`` like ``index`` was built."""
    m, f = index.meta["model"], index.meta["faiss"]
    args = ["simx", "index", "build", str(index.meta.get("source", "SOURCE")), "--name", name, "--model", spec,
            "--layer", m["layer"], "--metric", m["metric"], "--factory", f["factory"],
            "--fit", m["preprocessing"].get("fit", "pad")]
    return shlex.join(args)


def train_index(index_name: str, out: str | os.PathLike, config: TrainConfig | None = None, root=None,
                labels_url: str | None = None, force: bool = False, progress: bool = False,
                command: str | None = None, log: Callable[[str], None] | None = None) -> TrainResult:
    """Fine-tune ``index_name``'s model on its labels and write the result to the folder ``out``.

    Raises :class:`~simx.training.split.TrainingError` (a :class:`~simx.errors.SimxError`) with what to do when
    the index has no usable labels or the model cannot be trained. The label store is only read.
    """
    from ..index import open_index
    from ..labels import open_labels

    cfg = config or TrainConfig()
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0 or not 0 <= cfg.val_share < 1 or cfg.sm_weight < 0:
        raise TrainingError("epochs and batch size must be at least 1, the learning rate positive, the validation "
                            "share in [0, 1) and the L_sm weight not negative")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for but CUDA is not available here; use --device cpu")
    t_start = time.perf_counter()
    index = open_index(index_name, root=root)
    meta_model = index.meta["model"]
    weights_spec(meta_model["spec"], Path(out) / WEIGHTS_FILE)  # refuses TorchScript before any work
    store = open_labels(index.name, root=index.path.parent, url=labels_url)
    rows, label_record = collect_triplets(store, index, same_label=cfg.same_label, pool=cfg.pool, users=cfg.users)
    ts = split_triplets(rows, cfg.val_share, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = load_model(meta_model["spec"], layer=meta_model["layer"], metric=meta_model["metric"], device=cfg.device,
                       preprocessing=meta_model["preprocessing"], cache=False)
    paths = [index.item(i).path for i in ts.ids]
    trainer = _Trainer(model, ts, paths, cfg, progress)
    result = fit(trainer, progress=progress, log=log)
    model.net.eval()
    for p in model.net.parameters():
        p.requires_grad_(False)
    name_hint = f"{index.name}-ft"
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "command": command or shlex.join(["simx", *sys.argv[1:]]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "index": {"name": index.name, "path": str(index.path), "source": index.meta.get("source"),
                  "built_at": index.meta.get("built_at")},
        "model": {"spec": meta_model["spec"], "layer": meta_model["layer"], "metric": meta_model["metric"],
                  "preprocessing": meta_model["preprocessing"]},
        "labels": {"store": repr(store), **label_record},
        "split": ts.record,
        "trainable": {"groups": [g.name for g in trainer.groups[-trainer.n_unfreeze:]],
                      "frozen_groups": [g.name for g in trainer.groups[: -trainer.n_unfreeze]],
                      "trainable_params": int(sum(p.numel() for p in trainer.params)),
                      "embedding_params": int(sum(g.n_params for g in trainer.groups)),
                      "cached_trunk": True, "cut_check": trainer.calibration},
        "loss": {"kind": "margin triplet on per-query standardised similarities (query-balanced)", "margin": cfg.margin, "similarity": meta_model["metric"],
                 "l_sm": ({"gamma": cfg.sm_weight, "omega": SM_OMEGA, "sigma": SM_SIGMA,
                           "weights": "clamp(1-|fa-fp|,0)*|fa-fn| on normalised embeddings, stop-gradient",
                           "erase_fill": "0 in normalised input space (mean colour)"} if cfg.sm_weight > 0 else None)},
        "config": asdict(cfg),
        "device": str(model.device),
        "versions": {"torch": torch.__version__},
        **result,
    }
    probe = trainer.images[:4] if trainer.images is not None else torch.stack(
        [model.preprocess(load_image(p)) for p in paths[:4]]).to(model.device)
    record["elapsed_s"] = round(time.perf_counter() - t_start, 2)

    def spec_for(weights_path: Path) -> str:
        spec = weights_spec(meta_model["spec"], weights_path)
        record["rebuild_command"] = rebuild_command(index, spec, name_hint)
        return spec

    out_path = Path(out).resolve()
    spec = _write_outputs(out_path, model, record, spec_for, force)
    record["reload_max_abs_difference"] = _reload_check(spec, model, probe)
    tmp = out_path / f".{RECORD_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, out_path / RECORD_FILE)
    return TrainResult(out_path, spec, record)
