"""Building (and incrementally updating) an index folder from a gallery.

:func:`build_index` reads a gallery, embeds it with a DataLoader (:func:`simx.index.embed.embed_paths`), builds the
FAISS index the factory string names, and publishes the folder atomically (:mod:`simx.index.layout`). Bad files
are skipped with their reason, never fatal. With ``update=True`` only new or changed files (by
:func:`simx.data.file_fingerprint`) are embedded; the stored vectors of the others are reused.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import __version__ as simx_version
from ..data import Item, file_fingerprint, gallery_source, items_to_records, open_gallery
from ..errors import GalleryError, ModelMismatchError, SimxError, SimxIndexError
from ..models import Preprocessing, SimModel, load_model
from .embed import DEFAULT_BATCH_SIZE, default_workers, embed_paths, prepare_model
from .layout import (EMBEDDINGS_FILE, FORMAT_VERSION, INDEX_FILE, MANIFEST_FILE, META_FILE, check_name, clean_stale,
                     index_dir, index_root, publish, recover, temp_dir, write_json_atomic)
from .shards import DEFAULT_SHARD_SIZE

#: Embedding engines of a build: this process (a DataLoader), or Ray Data (a local Ray or a cluster).
ENGINES = ("local", "ray")
#: FAISS factory used when none is given: exact search, no training.
DEFAULT_FACTORY = "Flat"
#: Candidates per wanted neighbour re-scored exactly for quantised indexes (see docs/benchmarks.md).
RERANK = 16
#: Indexes with a refine stage (``...,Refine(SQ8)``, ``...,RFlat``): the stage scores REFINE_K_FACTOR x the
#: candidates it returns with its finer codes, and simx re-scores REFINE_RERANK x k of them exactly. At 1M 1280-d
#: vectors, ``IVF2048_HNSW32,PQ160x4fs,Refine(SQ8)`` at nprobe 64 (320 SQ8-scored, 20 exact): recall@10 0.956 at
#: single-query p50 1.76 ms / p99 2.04 ms on an idle 2-core CPU, 0.933 with k_factor 8 (docs/benchmarks.md, issue 16).
REFINE_K_FACTOR = 16
REFINE_RERANK = 2
#: k-means wants this many training vectors per IVF list (FAISS warns below it); nlist is clamped to match.
MIN_POINTS_PER_LIST = 39
#: ``--factory auto``: the FAISS type is chosen from the number of vectors (:mod:`simx.index.auto`).
AUTO_FACTORY = "auto"
#: Most vectors a trained index (IVF, PQ, SQ) is trained on; larger galleries train on a seeded sample.
TRAIN_MAX = 200_000
#: Coarse k-means of IVF indexes: iterations and most training points per list (see :func:`_tune_training`).
KMEANS_ITERATIONS = 10
KMEANS_POINTS_PER_LIST = 64
#: Vectors added to FAISS per call (bounded memory with memory-mapped inputs).
ADD_CHUNK = 65_536


@dataclass
class BuildResult:
    """What a build did: where the index is, its ``meta.json`` content and the files it skipped."""

    path: Path
    meta: dict[str, Any]
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    def summary(self) -> str:
        """A few human lines: counts, time, FAISS notes and every skipped file with its reason."""
        c = self.meta["counts"]
        lines = [
            f"index {self.name!r}: {c['embedded']} of {c['images']} images indexed, {c['skipped']} skipped "
            f"({self.meta['model']['spec']}, {self.meta['model']['metric']}, {self.meta['faiss']['factory']}) "
            f"in {self.meta['elapsed_s']:.1f} s -> {self.path}"
        ]
        up = self.meta.get("update")
        if up:
            lines.append(f"update: {up['reused']} reused, {up['embedded']} embedded, {up['removed']} removed")
        sh = (self.meta.get("build") or {}).get("shards")
        if sh:
            ray = self.meta["build"].get("ray") or {}
            lines.append(f"ray: {sh['total']} shards of {sh['size']} files, {sh['embedded']} embedded now"
                         + (f" by {ray['actors']} actors" if ray else "") + f", {sh['resumed']} kept from an earlier "
                         f"run ({sh['folder']})")
        for note in self.meta["faiss"].get("notes", []):
            lines.append(f"note: {note}")
        if self.skipped:
            lines.append("skipped:")
            lines += [f"  {'[shard %d] ' % s['shard'] if 'shard' in s else ''}{s['path']}: {s['reason']}"
                      for s in self.skipped]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ FAISS


def faiss_metric(metric: str) -> int:
    """FAISS metric of a simx metric: inner product for ``cosine`` (on L2-normalised vectors) and ``ip``, L2 for
    ``l2`` (whose scores simx reports as minus the squared distance, so higher is always more similar)."""
    import faiss

    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def _faiss_error(exc: Exception) -> str:
    """The useful line of a FAISS C++ exception."""
    text = str(exc)
    m = re.search(r"Error: '([^']*)' failed(?:: (.*))?", text)
    if m:
        return m.group(2) or m.group(1)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def check_factory(factory: str, dim: int, metric: str) -> None:
    """Fail fast (before embedding anything) when FAISS cannot parse ``factory`` for ``dim``-d vectors.
    ``auto`` is resolved once the number of vectors is known (:func:`simx.index.auto.auto_factory`)."""
    import faiss

    if factory == AUTO_FACTORY:
        return
    try:
        faiss.index_factory(int(dim), factory, faiss_metric(metric))
    except Exception as exc:  # noqa: BLE001 - faiss raises RuntimeError with a C++ trace
        raise SimxIndexError(f"FAISS cannot build factory {factory!r} for {dim}-d vectors: {_faiss_error(exc)}") from None


def fit_factory(factory: str, n: int) -> tuple[str, list[str]]:
    """Adapt ``factory`` to ``n`` training vectors: clamp the IVF list count to ``n // 39`` (at least 1) and refuse
    product quantisers that cannot be trained on so few vectors. Returns the factory to use and notes."""
    notes: list[str] = []
    asked = factory
    m = re.search(r"IVF(\d+)", factory)
    if m:
        nlist = int(m.group(1))
        cap = max(1, n // MIN_POINTS_PER_LIST)
        if nlist > cap:
            factory = factory[: m.start(1)] + str(cap) + factory[m.end(1):]
            notes.append(f"IVF lists clamped from {nlist} to {cap}: k-means wants {MIN_POINTS_PER_LIST} training "
                         f"vectors per list and {n} were embedded")
    for pq in re.finditer(r"PQ(\d+)(?:x(\d+))?", factory):
        nbits = int(pq.group(2) or 8)
        if n < 2**nbits:
            raise SimxIndexError(
                f"FAISS factory {asked!r} needs at least {2**nbits} vectors to train its product quantiser "
                f"({pq.group(0)}: {2**nbits} centroids per sub-quantiser) but only {n} were embedded; "
                "use 'Flat' or 'HNSW32' for a gallery this small"
            )
    return factory, notes


def has_refine_stage(factory: str) -> bool:
    """Whether ``factory`` ends in a FAISS refine stage (``...,Refine(SQ8)``, ``...,RFlat``)."""
    return bool(re.search(r",(Refine\(.*\)|RFlat)$", factory))


def default_search_params(factory: str) -> str:
    """Search-time FAISS parameters stored in meta.json (``faiss.ParameterSpace`` syntax).

    IVF: ``nprobe`` = 1/8 of the lists, between 1 and 64 (for IVF-HNSW a quarter of the lists, at most 128 below
    2048 lists and at most 64 from 2048 up); HNSW: ``efSearch=128``; a refine stage: ``k_factor_rf``. Chosen from
    the recall/latency
    sweep in ``benchmarks/bench_index.py`` (docs/benchmarks.md).
    """
    params = []
    m = re.search(r"IVF(\d+)", factory)
    if m:
        nlist = int(m.group(1))
        nprobe = min(nlist, max(1, min(64, nlist // 8)))
        if re.search(r"IVF\d+_HNSW", factory):
            # IVF-HNSW (what --factory auto picks), clustered 1280-d vectors with exact re-scoring of 16 x k: at
            # 100k (512 lists) recall@10 0.88 at nprobe 64 and 0.97 at 128; at 1M (2048 lists) 0.971 at 64 (p50
            # 3.6 ms, 3.5 ms of CPU per query) against 0.989 at 128 (p50 6.7 ms), and 0.948 at 48
            # (docs/benchmarks.md, issue 16). So a quarter of the lists, at most 128 below 2048 lists and at most
            # 64 from 2048 up. The HNSW coarse quantiser must find those nprobe nearest lists.
            nprobe = max(1, min(nlist // 4, 128 if nlist < 2048 else 64))
            params.append(f"nprobe={nprobe}")
            params.append(f"quantizer_efSearch={max(64, 2 * nprobe)}")
        else:
            params.append(f"nprobe={nprobe}")
    elif "HNSW" in factory:
        params.append("efSearch=128")
    if has_refine_stage(factory):
        # A refine stage re-ranks k_factor x (the candidates simx asks for) by its finer codes before simx's exact
        # re-scoring; FAISS's default (1) would make it a no-op.
        params.append(f"k_factor_rf={REFINE_K_FACTOR}")
    return ",".join(params)


def _tune_training(index, n: int) -> None:
    """Training settings: no polysemous training, and a per-centroid training minimum lowered for small galleries
    (instead of FAISS printing "please provide at least ..." from C++: :func:`fit_factory` already clamped what
    matters, and a small gallery simply trains on what it has)."""
    import faiss

    try:
        ivf = faiss.extract_index_ivf(index)
    except Exception:  # noqa: BLE001 - not an IVF index
        ivf = None
    quantisers = []
    if ivf is not None:
        quantisers.append((ivf.cp, ivf.nlist))
        ivf = faiss.downcast_index(ivf)
    for holder in (ivf, faiss.downcast_index(index)):
        # Polysemous training only serves Hamming pre-filtering (polysemous_ht), which simx never enables, and it
        # costs several times the product quantiser's own k-means: skip it.
        if hasattr(holder, "do_polysemous_training"):
            holder.do_polysemous_training = False
        pq = getattr(holder, "pq", None)
        if pq is not None:
            quantisers.append((pq.cp, pq.ksub))
    for cp, centroids in quantisers:
        if n < cp.min_points_per_centroid * centroids:
            cp.min_points_per_centroid = max(1, n // max(1, centroids))
    if ivf is not None:
        # The coarse k-means is the slow part of a large build (one iteration over 160k 1280-d vectors into 4096
        # lists took 67 s on the 2-core benchmark machine): 10 iterations on at most 64 points per list keep a
        # 1M build within 15 minutes (docs/benchmarks.md, issue 16); exact re-scoring absorbs coarser lists.
        ivf.cp.niter = min(ivf.cp.niter, KMEANS_ITERATIONS)
        ivf.cp.max_points_per_centroid = min(ivf.cp.max_points_per_centroid, KMEANS_POINTS_PER_LIST)


def training_sample(vectors: np.ndarray) -> np.ndarray:
    """The vectors a trained index learns from: all of them up to :data:`TRAIN_MAX`, else a seeded sample of
    that many rows (sorted, so a memory-mapped input is read in order). FAISS's own k-means keeps at most 256
    points per centroid, so for up to ~800 lists the sample loses nothing."""
    n = vectors.shape[0]
    if n <= TRAIN_MAX:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(0).choice(n, TRAIN_MAX, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def make_faiss_index(vectors: np.ndarray, factory: str, metric: str):
    """Build, train (when the index type needs it) and fill a FAISS index. Returns ``(index, meta["faiss"])``.

    ``vectors`` may be a memory map (the Ray engine's assembled shards): training reads :func:`training_sample`,
    adding reads :data:`ADD_CHUNK` rows at a time. ``factory`` ``auto`` picks the type by size."""
    import faiss

    n, dim = vectors.shape
    notes: list[str] = []
    if factory == AUTO_FACTORY:
        from .auto import auto_factory

        chosen, why = auto_factory(n, dim)
        notes.append(f"factory auto: {chosen} ({why})")
    else:
        chosen = factory
    used, fit_notes = fit_factory(chosen, n)
    notes += fit_notes
    try:
        index = faiss.index_factory(int(dim), used, faiss_metric(metric))
    except Exception as exc:  # noqa: BLE001
        raise SimxIndexError(f"FAISS cannot build factory {used!r} for {dim}-d vectors: {_faiss_error(exc)}") from None
    _tune_training(index, min(n, TRAIN_MAX))
    t0 = time.perf_counter()
    if not index.is_trained:
        sample = training_sample(vectors)
        try:
            index.train(sample)
        except Exception as exc:  # noqa: BLE001
            raise SimxIndexError(f"FAISS could not train {used!r} on {len(sample)} vectors: {_faiss_error(exc)}") from None
        if len(sample) < n:
            notes.append(f"trained on a seeded sample of {len(sample)} of the {n} vectors")
        del sample
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for start in range(0, n, ADD_CHUNK):  # chunks: a memory-mapped input is never loaded whole
        index.add(np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32))
    add_s = time.perf_counter() - t0
    params = default_search_params(used)
    # Quantised codes give approximate scores: fetch RERANK x k candidates and re-score them exactly from the
    # stored embeddings (simx.index.search.exact_rescore); graph and IVF-Flat indexes already score exactly.
    # Projections (PCA, OPQ, random rotations) score in the reduced space: re-score them too.
    rerank = RERANK if re.search(r"PQ|SQ|LSH|RQ|LSQ|PCA|OPQ|ITQ|RR\d", used) else 1
    if has_refine_stage(used):  # the refine stage already ranked by finer codes: re-score only its best
        rerank = REFINE_RERANK
    if params:
        faiss.ParameterSpace().set_index_parameters(index, params)
    info = {
        "factory": factory,
        "factory_used": used,
        "metric_type": "l2" if metric == "l2" else "inner_product",
        "ntotal": int(index.ntotal),
        "search_params": params,
        "rerank": rerank,
        "train_s": round(train_s, 3),
        "add_s": round(add_s, 3),
        "notes": notes,
    }
    return index, info


# ------------------------------------------------------------------------------------------------ build


def software_versions() -> dict[str, str]:
    """Versions of what produced the vectors (recorded in meta.json for reproducibility)."""
    import faiss
    import timm
    import torch

    return {"simx": simx_version, "torch": torch.__version__, "timm": timm.__version__,
            "faiss": faiss.__version__, "numpy": np.__version__, "python": platform.python_version()}


def _resolve_model(spec: str, layer: str | None, metric: str, device: str | None, fit: str | None,
                   preprocessing: Preprocessing | None, size: int | None = None) -> SimModel:
    if device is not None and str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SimxError(f"--device {device} was asked for but torch sees no CUDA device; use --device cpu")
    model = load_model(spec, layer=layer, metric=metric, device=device, preprocessing=preprocessing)
    if (fit and model.preprocessing.fit != fit) or (size and model.preprocessing.size != size):
        # another input size: transformers rebuild their position embeddings for it (see simx.models.tokens)
        pre = dataclasses.replace(model.preprocessing, fit=fit or model.preprocessing.fit,
                                  size=int(size or model.preprocessing.size))
        model = load_model(spec, layer=layer, metric=metric, device=device, preprocessing=pre)
    return model


def _progress_bar(total: int, progress: bool | None, desc: str):
    from tqdm.auto import tqdm

    enabled = sys.stderr.isatty() if progress is None else bool(progress)
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not enabled, dynamic_ncols=True)


@dataclass
class _Plan:
    """Everything decided before embedding starts: what to reuse, what to embed, with which model."""

    name: str
    source: Path
    items: list[Item]
    fingerprints: list[str | None]
    model: SimModel
    factory: str
    previous: Any = None  # the Index being updated, if any
    reuse: dict[int, int] = field(default_factory=dict)  # gallery position -> row of the previous embeddings

    @property
    def todo(self) -> list[int]:
        """Gallery positions to embed now."""
        return [pos for pos in range(len(self.items)) if pos not in self.reuse]


def build_index(
    source: str | os.PathLike,
    name: str,
    model: str | None = None,
    layer: str | None = None,
    metric: str | None = None,
    factory: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    device: str | None = None,
    fit: str | None = None,
    update: bool = False,
    root: str | os.PathLike | None = None,
    size: int | None = None,
    progress: bool | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    num_gpus_per_worker: float = 0.0,
    actors: int | None = None,
    resume: bool = True,
    shard_size: int | None = None,
    on_shard: Callable[[Any], Any] | None = None,
) -> BuildResult:
    """Embed the gallery ``source`` (folder or manifest) and publish the index ``ROOT/name``.

    ``model``/``layer``/``metric``/``fit`` default to ``default``/the model's layer/``cosine``/the model's fit for
    a new index, and to the previous index's values with ``update=True``; ``size`` overrides the model's input
    size in pixels for a new index (a transformer rebuilds its position embeddings for it); an update whose explicit values differ
    from the stored ones raises :class:`ModelMismatchError` (its vectors would not be comparable). ``factory`` is
    a ``faiss.index_factory`` string (``Flat`` by default). ``workers`` decoding processes (default: one per
    core, at most 4; 0 decodes in this process). ``progress``: a tqdm bar on stderr (None: only on a terminal).
    Bad files are skipped and listed in ``meta.json``; a killed build leaves any previous index untouched.

    ``engine="ray"`` embeds on Ray Data instead (:mod:`simx.index.ray_engine`): a local Ray, or the cluster at
    ``ray_address``; ``actors`` model actors (default: one per CPU, or one per ``num_gpus_per_worker`` GPUs).
    Its vectors are written as shards of ``shard_size`` files beside the index (:mod:`simx.index.shards`) as
    they complete; with ``resume`` (the default) a re-run embeds only the shards a killed or failed job did not
    finish. ``on_shard(shard)`` is called after each shard is written. The index is the local engine's.
    """
    if engine not in ENGINES:
        raise SimxError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    t_start = time.perf_counter()
    check_name(name)
    index_root(root).mkdir(parents=True, exist_ok=True)
    recover(name, root)
    clean_stale(root)
    final = index_dir(name, root)
    plan = _plan(source, name, model, layer, metric, factory, device, fit, update, root, size)

    # The hidden temp folder exists for the whole embedding and writing phase: a killed build leaves only it
    # (ignored by listings, removed by the next build), never a half folder under ``name``.
    tmp = temp_dir(name, root)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        if engine == "ray":
            ray_opts = {"address": ray_address, "num_gpus_per_worker": num_gpus_per_worker, "actors": actors,
                        "resume": resume, "shard_size": shard_size or DEFAULT_SHARD_SIZE, "on_shard": on_shard,
                        "root": root}
            meta, skipped = _embed_and_write_ray(tmp, plan, batch_size, progress, t_start, ray_opts)
        else:
            meta, skipped = _embed_and_write(tmp, plan, batch_size, workers, progress, t_start)
        publish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildResult(path=final, meta=meta, skipped=skipped)


def _plan(source, name, model, layer, metric, factory, device, fit, update, root, size=None) -> _Plan:
    """Read the gallery, settle the model (from the arguments or, for an update, the previous index) and decide
    which files need embedding."""
    src = gallery_source(source)
    items = open_gallery(src)
    previous = None
    if update and index_dir(name, root).exists():
        from .search import open_index

        previous = open_index(name, root=root)
    if previous is not None:
        from .search import model_differences

        pm = previous.meta["model"]
        pre = Preprocessing.from_dict(pm["preprocessing"])
        if fit:
            pre = dataclasses.replace(pre, fit=fit)
        sim = _resolve_model(model or pm["spec"], layer or pm["layer"], metric or pm["metric"], device, None, pre)
        diffs = model_differences(previous.meta, sim)
        if diffs:
            raise ModelMismatchError(
                f"cannot --update index {name!r}: " + "; ".join(diffs)
                + ". Its stored vectors would not be comparable; rebuild it without --update."
            )
        factory = factory or previous.meta["faiss"]["factory"]
    else:
        sim = _resolve_model(model or "default", layer, metric or "cosine", device, fit, None, size)
        factory = factory or DEFAULT_FACTORY
    prepare_model(sim)
    check_factory(factory, sim.dim, sim.metric)

    # Fingerprints before embedding: a file changed while it is embedded is then seen as changed next time.
    fingerprints: list[str | None] = []
    for it in items:
        try:
            fingerprints.append(file_fingerprint(it.path))
        except OSError:
            fingerprints.append(None)  # decode() reports the precise reason
    plan = _Plan(name=name, source=src, items=items, fingerprints=fingerprints, model=sim, factory=factory,
                 previous=previous)
    if previous is not None:
        old = {it.id: (row, it.path, fp) for row, (it, fp) in enumerate(zip(previous.items, previous.fingerprints))}
        for pos, (it, fp) in enumerate(zip(items, fingerprints)):
            hit = old.get(it.id)
            if hit is not None and fp is not None and hit[1] == it.path and hit[2] == fp:
                plan.reuse[pos] = hit[0]
    return plan


def _embed_and_write(tmp: Path, plan: _Plan, batch_size: int, workers: int | None, progress: bool | None,
                     t_start: float) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Embed what needs embedding, assemble the vectors in gallery order, build FAISS and write ``tmp``."""
    items, todo, sim = plan.items, plan.todo, plan.model
    t_embed = time.perf_counter()
    n_workers = default_workers() if workers is None else max(0, int(workers))
    with _progress_bar(len(todo), progress, f"embedding {plan.name}") as bar:
        new_vecs, reasons = embed_paths(sim, [items[p].path for p in todo], batch_size=batch_size,
                                        workers=n_workers, progress=bar.update)
    embed_s = time.perf_counter() - t_embed

    keep: list[int] = []
    rows: list[np.ndarray] = []
    skipped: list[dict[str, str]] = []
    new_at = {pos: j for j, pos in enumerate(todo)}
    for pos, it in enumerate(items):
        if pos in plan.reuse:
            keep.append(pos)
            rows.append(np.asarray(plan.previous.embeddings[plan.reuse[pos]], dtype=np.float32))
            continue
        j = new_at[pos]
        if reasons[j] is None:
            keep.append(pos)
            rows.append(new_vecs[j])
        else:
            skipped.append({"id": it.id, "path": it.path, "reason": str(reasons[j])})
    _check_any_kept(plan, keep, skipped)
    vectors = np.stack(rows).astype(np.float32, copy=False)
    np.save(tmp / EMBEDDINGS_FILE, vectors)
    build = {"engine": "local", "batch_size": int(batch_size), "workers": n_workers, "device": str(sim.device)}
    n_new = sum(1 for r in reasons if r is None)
    return _index_and_meta(tmp, plan, vectors, keep, skipped, n_new, build, embed_s, t_start), skipped


def _check_any_kept(plan: _Plan, keep: list[int], skipped: list[dict[str, Any]]) -> None:
    if not keep:
        first = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:3])
        raise GalleryError(f"no image of {plan.source} could be embedded ({len(skipped)} skipped; first: {first})")


def _embed_and_write_ray(tmp: Path, plan: _Plan, batch_size: int, progress: bool | None, t_start: float,
                         opts: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The Ray engine: embed the missing shards on Ray, then assemble every shard memory-mapped into the index's
    ``embeddings.npy`` (a memory map too) and build FAISS from it."""
    from . import ray_engine
    from .embed import model_kwargs
    from .shards import ShardStore, copy_into, plan_shards, reasons_by_position, shard_dir

    items, todo, sim = plan.items, plan.todo, plan.model
    store = ShardStore(shard_dir(plan.name, opts["root"]))
    if not opts["resume"]:
        store.reset()
    record = dataclasses.asdict(sim.info())
    shards = plan_shards(todo, [items[p].id for p in todo], [items[p].path for p in todo],
                         [plan.fingerprints[p] for p in todo], record, opts["shard_size"])
    missing = [s for s in shards if not store.is_complete(s)]
    t_embed = time.perf_counter()
    rplan = None
    if missing:
        started = ray_engine.connect(opts["address"])
        try:
            rplan = ray_engine.plan_resources(batch_size, opts["num_gpus_per_worker"], opts["address"], opts["actors"])
            with _progress_bar(sum(len(s) for s in missing), progress, f"embedding {plan.name} on Ray") as bar:
                ray_engine.embed_shards(missing, store, sim.spec, model_kwargs(sim), sim.dim, rplan,
                                        on_shard=opts["on_shard"], on_images=bar.update)
        finally:
            if started:
                import ray

                ray.shutdown()
    embed_s = time.perf_counter() - t_embed

    status = reasons_by_position(store, shards)
    keep = [pos for pos in range(len(items)) if pos in plan.reuse or status[pos][1] is None]
    skipped = [{"id": items[pos].id, "path": items[pos].path, "reason": str(reason), "shard": number}
               for pos, (number, reason) in sorted(status.items()) if reason is not None]
    _check_any_kept(plan, keep, skipped)
    dest = {pos: row for row, pos in enumerate(keep)}
    out = np.lib.format.open_memmap(tmp / EMBEDDINGS_FILE, mode="w+", dtype=np.float32, shape=(len(keep), sim.dim))
    for pos, old_row in plan.reuse.items():
        out[dest[pos]] = plan.previous.embeddings[old_row]
    copy_into(out, dest, store, shards)
    out.flush()
    del out
    vectors = np.load(tmp / EMBEDDINGS_FILE, mmap_mode="r")
    build = {"engine": "ray", "batch_size": int(batch_size), "device": "cuda" if opts["num_gpus_per_worker"] else "cpu",
             "ray": None if rplan is None else rplan.to_dict(),
             "shards": {"folder": str(store.folder), "size": int(opts["shard_size"]), "total": len(shards),
                        "embedded": len(missing), "resumed": len(shards) - len(missing)}}
    n_new = sum(1 for s in missing for pos in s.positions if status[pos][1] is None)
    meta = _index_and_meta(tmp, plan, vectors, keep, skipped, n_new, build, embed_s, t_start)
    del vectors
    store.prune(shards)
    return meta, skipped


def _index_and_meta(tmp: Path, plan: _Plan, vectors: np.ndarray, keep: list[int], skipped: list[dict[str, Any]],
                    n_new: int, build: dict[str, Any], embed_s: float, t_start: float) -> dict[str, Any]:
    """Build FAISS over ``vectors`` (already saved as ``tmp/embeddings.npy``), write the rest of ``tmp`` and
    return its ``meta.json`` content."""
    items, todo, sim = plan.items, plan.todo, plan.model
    t_faiss = time.perf_counter()
    index, faiss_info = make_faiss_index(vectors, plan.factory, sim.metric)
    faiss_s = time.perf_counter() - t_faiss
    _write_folder(tmp, index, [items[p] for p in keep], [plan.fingerprints[p] for p in keep])

    prev = plan.previous
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": plan.name,
        "source": str(plan.source),
        "model": dataclasses.asdict(sim.info()),
        "faiss": faiss_info,
        "counts": {"images": len(items), "embedded": len(keep), "skipped": len(skipped)},
        "skipped": skipped,
        "update": None if prev is None else {
            "reused": len(plan.reuse),
            "embedded": n_new,
            "removed": len(set(prev.ids) - {it.id for it in items}),
            "previous_built_at": prev.meta.get("built_at"),
        },
        "build": build,
        "versions": software_versions(),
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "timing": {"embed_s": round(embed_s, 3), "faiss_s": round(faiss_s, 3),
                   "embedded_per_s": round(len(todo) / embed_s, 2) if embed_s > 0 and todo else 0.0},
        "elapsed_s": round(time.perf_counter() - t_start, 3),
    }
    write_json_atomic(tmp / META_FILE, meta)  # last: a folder with meta.json has all its files
    return meta


def _write_folder(folder: Path, index, items: list[Item], fingerprints: list[str | None]) -> None:
    """Write the FAISS index and the manifest beside the saved embeddings (row i = FAISS id i everywhere)."""
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    faiss.write_index(index, str(folder / INDEX_FILE))
    records = items_to_records(items)
    for rec, fp in zip(records, fingerprints):
        rec["fingerprint"] = fp
    schema = pa.schema([("id", pa.string()), ("path", pa.string()), ("label", pa.string()),
                        ("labels", pa.list_(pa.string()))]
                       + [(c, pa.string()) for c in ("attributes", "boxes", "metadata", "fingerprint")])
    pq.write_table(pa.Table.from_pylist(records, schema=schema), folder / MANIFEST_FILE)
