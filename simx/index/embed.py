"""Turning image files into index-ready vectors.

There is exactly one definition of "the embedding of a file", split in two steps that every path shares:

* :func:`decode` (file -> normalised input tensor, or a skip reason) runs wherever decoding happens: in the
  caller for :func:`embed_batch`, in DataLoader worker processes for :func:`embed_paths`;
* :func:`forward` (input batch -> float32 vectors normalised as ``model.normalise_embeddings`` does) runs where the
  model is.

:func:`embed_batch` is the pure batch function (model spec, paths, model keyword arguments in; vectors and skip
reasons out) meant to be mapped over batches by a distributed engine such as Ray Data; :func:`embed_paths` is the
local path a build uses, a ``torch.utils.data.DataLoader`` whose workers decode while the model computes. Both
give identical vectors for the same batches (tested).

Throughput settings (measured by ``benchmarks/bench_index.py`` on a 2-core CPU) live in :data:`DEFAULT_BATCH_SIZE`
and :func:`prepare_model`: ``torch.inference_mode``, channels-last memory layout on CPU, one decoding thread per
worker.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data import load_image
from ..errors import ImageLoadError
from ..models import Preprocessing, SimModel, load_model

#: Images per forward pass in a build: 64 was the fastest of 16/32/64 for the default model on a 2-core CPU
#: (benchmarks/bench_index.py, docs/benchmarks.md).
DEFAULT_BATCH_SIZE = 64


def default_workers() -> int:
    """Decoding worker processes for a build: one per CPU core, at most 4.

    On the 2-core benchmark machine 2 workers kept the model busiest (build / bare forward 0.94, against 0.81
    with 1 worker and 0.67 decoding in the main process): workers sleep while their prefetch queue is full, so
    they cost the model little, and one slow file never stalls a batch.
    """
    return max(1, min(4, os.cpu_count() or 1))


def model_kwargs(model: SimModel) -> dict[str, Any]:
    """The keyword arguments of :func:`simx.models.load_model` that rebuild ``model`` exactly (JSON-safe, so they
    can be shipped to other processes or machines along with the spec)."""
    return {
        "layer": model.layer,
        "metric": model.metric,
        "preprocessing": model.preprocessing.to_dict(),
        "device": str(model.device),
    }


def prepare_model(model: SimModel) -> SimModel:
    """Apply the throughput settings once: channels-last weights on CPU (faster convolutions with oneDNN).

    Idempotent; the model's outputs are unchanged up to float rounding, and :func:`forward` feeds it matching
    channels-last inputs.
    """
    if getattr(model, "_simx_prepared", False):
        return model
    if model.device.type == "cpu":
        model.net.to(memory_format=torch.channels_last)
    model._simx_prepared = True  # type: ignore[attr-defined]
    return model


def decode(path: str, preprocessing: Preprocessing) -> tuple[torch.Tensor | None, str | None]:
    """One file -> ``(input tensor (3, S, S), None)``, or ``(None, reason)`` when the file cannot be used.

    Never raises for a bad file: every failure becomes a one-line reason, so a build skips and reports it.
    """
    try:
        img = load_image(path)
    except ImageLoadError as exc:
        return None, exc.reason
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not abort a whole build
        return None, f"unexpected decoding error ({type(exc).__name__}: {exc})"
    try:
        return preprocessing.to_tensor(img), None
    except Exception as exc:  # noqa: BLE001
        return None, f"preprocessing failed ({type(exc).__name__}: {exc})"


@torch.inference_mode()
def forward(model: SimModel, x: torch.Tensor) -> np.ndarray:
    """A batch of input tensors (B, 3, S, S) -> index-ready float32 vectors (B, D)."""
    x = x.to(model.device, non_blocking=True)
    if getattr(model, "_simx_prepared", False) and model.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    with model.autocast():
        e = model.embed(x)
    return np.ascontiguousarray(model.normalise_embeddings(e).cpu().numpy(), dtype=np.float32)


def embed_batch(model_spec: str, paths: list[str], model_kwargs: dict[str, Any]) -> tuple[np.ndarray, list[str | None]]:
    """Embed one batch of files with the model ``load_model(model_spec, **model_kwargs)`` (cached per process).

    Returns ``(vectors, reasons)``: ``vectors`` is float32 (len(paths), D) with row i the embedding of
    ``paths[i]``; ``reasons[i]`` is None for an embedded file, else why it was skipped (its row is zero). Pure
    in the sense that matters for distribution: no state beyond the model cache, arguments are plain data.
    """
    model = prepare_model(load_model(model_spec, **model_kwargs))
    decoded = [decode(p, model.preprocessing) for p in paths]
    reasons = [r for _, r in decoded]
    out = np.zeros((len(paths), model.dim), dtype=np.float32)
    good = [i for i, (t, _) in enumerate(decoded) if t is not None]
    if good:
        out[good] = forward(model, torch.stack([decoded[i][0] for i in good]))  # type: ignore[misc]
    return out, reasons


class _Files(Dataset):
    """Decodes file ``i`` into ``(i, tensor or None, reason or None)`` (runs inside DataLoader workers)."""

    def __init__(self, paths: Sequence[str], preprocessing: Preprocessing):
        self.paths = list(paths)
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        tensor, reason = decode(self.paths[i], self.preprocessing)
        return i, tensor, reason


def _collate(batch: list[tuple[int, torch.Tensor | None, str | None]]):
    """Keep positions and reasons of every file; stack only the decoded tensors."""
    idx = [i for i, _, _ in batch]
    reasons = [r for _, _, r in batch]
    tensors = [t for _, t, _ in batch if t is not None]
    return idx, (torch.stack(tensors) if tensors else None), reasons


def _worker_init(_worker_id: int) -> None:
    # One thread per decoding process: the cores belong to the model.
    torch.set_num_threads(1)


def embed_paths(model: SimModel, paths: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE,
                workers: int | None = None,
                progress: Callable[[int], Any] | None = None) -> tuple[np.ndarray, list[str | None]]:
    """Embed many files with a DataLoader (``workers`` decoding processes, 0 = decode in this process).

    Same contract as :func:`embed_batch`: float32 (len(paths), D), zero rows for skipped files, and the reasons.
    ``progress(n)`` is called after each batch with the number of files it covered.
    """
    model = prepare_model(model)
    n_workers = default_workers() if workers is None else max(0, int(workers))
    out = np.zeros((len(paths), model.dim), dtype=np.float32)
    reasons: list[str | None] = [None] * len(paths)
    if not paths:
        return out, reasons
    for idx, x, batch_reasons in _batches(paths, model.preprocessing, batch_size, n_workers,
                                          pin=model.device.type == "cuda"):
        good = [i for i, r in zip(idx, batch_reasons) if r is None]
        for i, r in zip(idx, batch_reasons):
            reasons[i] = r
        if x is not None:
            out[good] = forward(model, x)
        if progress is not None:
            progress(len(idx))
    return out, reasons


def _batches(paths: Sequence[str], preprocessing: Preprocessing, batch_size: int, workers: int,
             pin: bool) -> Iterator[tuple[list[int], torch.Tensor | None, list[str | None]]]:
    loader = DataLoader(
        _Files(paths, preprocessing),
        batch_size=max(1, int(batch_size)),
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=pin,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
    )
    yield from loader
