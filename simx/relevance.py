"""What makes a neighbour a correct match: relevance by shared labels, one definition for all of simx.

An item carries one or several labels (:attr:`simx.data.Item.labels`: a folder gallery's sub-folder, a manifest's
``label`` and ``labels`` columns). A neighbour is *relevant* to a query when the two share at least one label,
so a scene labelled ``animals|food`` correctly retrieves one labelled ``food|vehicles``. For galleries with one
label per item this is exactly "same label". An item without a label is never a query and never relevant.

``level="top"`` keeps only the first path component of each label (``animals/birds`` -> ``animals``).
Evaluation (:mod:`simx.index.evaluation`), the dashboard's correctness badges, the Failures page, "Next
failure" and the review queue all ask this module, so they cannot disagree.
"""

from __future__ import annotations

from typing import Any, Iterable

from .errors import SimxError

LEVELS = ("full", "top")


def check_level(level: str) -> str:
    """``level`` if it is one of :data:`LEVELS`, else a :class:`SimxError` naming the choices."""
    if level not in LEVELS:
        raise SimxError(f"unknown label level {level!r}; choose one of {', '.join(LEVELS)}")
    return level


def at_level(label: str, level: str = "full") -> str:
    """``label`` at ``level``: itself, or its first path component for ``"top"``."""
    return label.split("/")[0] if level == "top" else label


def label_set(labels: Iterable[str] | str | None, level: str = "full") -> frozenset[str]:
    """The labels at ``level`` as a set (a single string counts as one label; empty strings are dropped)."""
    if labels is None:
        return frozenset()
    if isinstance(labels, str):
        labels = [labels]
    return frozenset(at_level(str(lab), level) for lab in labels if lab is not None and str(lab) != "")


def item_labels(item: Any, level: str = "full", primary_only: bool = False) -> frozenset[str]:
    """Every label of ``item`` (an :class:`~simx.data.Item`) at ``level``; with ``primary_only`` just its
    primary ``label`` (the single-label definition, kept to compare against)."""
    if primary_only:
        return label_set(getattr(item, "label", None), level)
    labels = getattr(item, "labels", None) or getattr(item, "label", None)
    return label_set(labels, level)


def shares_label(query: Any, neighbour: Any, level: str = "full") -> bool | None:
    """Whether ``neighbour`` is a correct match for ``query``: True when they share a label, False when both are
    labelled and share none, None when either has no label (correctness is then unknown)."""
    a, b = item_labels(query, level), item_labels(neighbour, level)
    if not a or not b:
        return None
    return not a.isdisjoint(b)


def is_multi_label(items: Iterable[Any]) -> bool:
    """True when some item carries more than one label."""
    return any(len(getattr(it, "labels", None) or ()) > 1 for it in items)


__all__ = ["LEVELS", "at_level", "check_level", "is_multi_label", "item_labels", "label_set", "shares_label"]
