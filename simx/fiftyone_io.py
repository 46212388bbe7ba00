"""FiftyOne interop: galleries from a FiftyOne dataset, verdicts back into it as sample tags.

Many users keep their images, classes and boxes in FiftyOne; simx reads them from there instead of asking for a
manifest, and writes what people decided in the dashboard back where the rest of their curation happens.

* ``simx index build fiftyone:DATASET`` (:func:`gallery_records`): one item per sample with its ``filepath``; the
  label is the sample's classification (the field ``ground_truth`` when it is a ``Classification``, else the first
  ``Classification`` field of the schema), the boxes are every ``Detections`` field's detections converted from
  FiftyOne's relative ``[x, y, w, h]`` to simx's pixel ``x0, y0, x1, y1`` (category = the detection's label), and
  the item id is the path relative to the folder all samples share, as for a folder gallery.
* ``simx labels export INDEX --to-fiftyone DATASET`` (:func:`export_verdicts`): every labelled neighbour gets the
  tag ``simx:bad`` or ``simx:good`` (and ``simx:reason:<reason>``), and the string list field ``simx_verdicts``
  says for which query, by whom and why. Samples are matched by file path. simx's previous tags and verdicts are
  replaced, so exporting twice gives the same dataset.

FiftyOne connects to its database as configured by the user (``FIFTYONE_DATABASE_URI`` for a running MongoDB).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from .errors import GalleryError, SimxError

PREFIX = "fiftyone:"
TAG_PREFIX = "simx:"
VERDICTS_FIELD = "simx_verdicts"


def is_fiftyone_source(source: Any) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)


def _fiftyone():
    try:
        import fiftyone as fo
    except ImportError:
        raise SimxError("FiftyOne is not installed: pip install 'simx[fiftyone]' (or pip install fiftyone)") from None
    return fo


def load_dataset(name: str):
    fo = _fiftyone()
    if name not in fo.list_datasets():
        known = ", ".join(fo.list_datasets()) or "none"
        raise GalleryError(f"no FiftyOne dataset named {name!r} (datasets: {known})")
    return fo.load_dataset(name)


def _label_field(schema: dict[str, Any], fo) -> str | None:
    classification = [k for k, f in schema.items()
                      if getattr(f, "document_type", None) is fo.Classification]
    if "ground_truth" in classification:
        return "ground_truth"
    return classification[0] if classification else None


def _size(sample) -> tuple[int, int] | None:
    meta = sample.metadata
    if meta is not None and getattr(meta, "width", None) and getattr(meta, "height", None):
        return int(meta.width), int(meta.height)
    try:
        from PIL import Image

        with Image.open(sample.filepath) as img:  # reads the header only
            return img.size
    except OSError:
        return None  # a missing or broken file: the build reports it when it tries to decode it


def gallery_records(source: str) -> list[dict[str, Any]]:
    """The items of ``fiftyone:DATASET`` as the keyword arguments of :class:`simx.data.Item` (see the module
    docstring); :func:`simx.data.open_gallery` makes the items, so this module needs nothing from simx.data."""
    fo = _fiftyone()
    dataset = load_dataset(source[len(PREFIX):])
    schema = dataset.get_field_schema()
    label_field = _label_field(schema, fo)
    box_fields = [k for k, f in schema.items() if getattr(f, "document_type", None) is fo.Detections]
    samples = list(dataset.iter_samples())
    if not samples:
        raise GalleryError(f"FiftyOne dataset {dataset.name!r} has no samples")
    paths = [os.path.abspath(s.filepath) for s in samples]
    common = Path(os.path.commonpath(paths)) if len(paths) > 1 else Path(paths[0]).parent
    if common.as_posix() in paths:  # one sample: its folder
        common = common.parent
    items = []
    for sample, path in zip(samples, paths):
        label = sample[label_field] if label_field else None
        boxes = []
        size = _size(sample) if box_fields else None
        for field in box_fields:
            dets = sample[field]
            for det in (dets.detections if dets is not None else []):
                if size is None:
                    continue
                x, y, w, h = det.bounding_box
                boxes.append({"x0": x * size[0], "y0": y * size[1], "x1": (x + w) * size[0], "y1": (y + h) * size[1],
                              "category": det.label, "field": field})
        items.append(dict(id=Path(path).relative_to(common).as_posix(), path=path,
                          label=getattr(label, "label", None), boxes=boxes,
                          metadata={"fiftyone_id": sample.id, "fiftyone_dataset": dataset.name}))
    return items


def export_verdicts(store, index, dataset_name: str, user: str | Sequence[str] | None = None) -> int:
    """Write the verdicts of ``index``'s labels into ``dataset_name`` as tags; returns how many were written."""
    dataset = load_dataset(dataset_name)
    fo = _fiftyone()
    by_path = {os.path.abspath(p): i for i, p in zip(dataset.values("id"), dataset.values("filepath"))}
    paths = {it.id: os.path.abspath(it.path) for it in index.items}
    labels = store.list(index=index.name, user=user or None)
    per_sample: dict[str, list] = {}
    missing = sorted({lab.neighbour_id for lab in labels if paths.get(lab.neighbour_id) not in by_path})
    if missing:
        raise SimxError(f"{len(missing)} labelled neighbour(s) of index {index.name!r} are not samples of FiftyOne "
                        f"dataset {dataset_name!r} (matched by file path), e.g. {missing[0]!r}")
    for lab in labels:
        per_sample.setdefault(by_path[paths[lab.neighbour_id]], []).append(lab)
    if VERDICTS_FIELD not in dataset.get_field_schema():
        dataset.add_sample_field(VERDICTS_FIELD, fo.ListField, subfield=fo.StringField)
    for sample in dataset.iter_samples(autosave=True):
        tags = [t for t in sample.tags if not t.startswith(TAG_PREFIX)]
        mine = per_sample.get(sample.id, [])
        for lab in mine:
            tags.append(f"{TAG_PREFIX}{lab.verdict}")
            if lab.reason:
                tags.append(f"{TAG_PREFIX}reason:{lab.reason}")
        sample.tags = list(dict.fromkeys(tags))
        sample[VERDICTS_FIELD] = [f"{lab.verdict} as a neighbour of {lab.query_id} (by {lab.user}"
                                  + (f", {lab.reason}" if lab.reason else "") + ")" for lab in mine] or None
    return len(labels)


__all__ = ["gallery_records", "export_verdicts", "is_fiftyone_source", "PREFIX"]
