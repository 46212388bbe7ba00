"""Attribute vocabularies: which named concepts a SANE attribute predictor knows (methods.md 4.3, 4.4).

Two sources:

* **The gallery** (:func:`vocabulary_from_items`, :func:`vocabulary_from_manifest`, :func:`vocabulary_from_folder`):
  the manifest's ``attributes`` column and the label hierarchy. Every level of a category path is an attribute
  (the label ``animals/birds`` gives ``animals`` and ``animals/birds``); ``key:value`` attributes expand the same
  way inside their key (``colour:red/dark`` gives ``colour:red`` and ``colour:red/dark``).
* **The default model's ImageNet classifier** (:func:`imagenet_vocabulary`), for zero-configuration use with any
  gallery: the 1000 classes grouped into broader concepts (``animals``, ``animals/mammals``,
  ``animals/mammals/dogs``, ``food/fruit and vegetables``, ``objects/vehicles``, ...). No WordNet hierarchy is
  available offline (nltk is not installed; timm's ``_info`` files hold synset ids, lemmas and glosses but no
  hypernym links), so the grouping is hand-written here: contiguous index ranges of the ImageNet-1k class order
  (which follows WordNet ids, so the animal groups are contiguous) for animals, food, nature, people, plants and
  fungi, and an ordered keyword map on the WordNet gloss for the artifact classes (398-920). The keyword rule
  picks the group whose keyword occurs *earliest* in the gloss, since a gloss starts with its head noun
  ("a car driven by ..." is a vehicle, "a mirror that the driver of a car can use" is not). Unmatched artifacts
  go to ``objects/other``.

Accepted attribute syntax (anything else is refused with :class:`AttributeSyntaxError`)::

    attribute := category | key ":" category
    category  := segment ("/" segment)*
    key       := [a-z][a-z0-9_]{0,31}
    segment   := 1-64 characters: letters, digits, "_", "-", ".", "+", "'", "&", "(", ")" and inner single spaces;
                 it starts with a letter, digit, "_" or "(" and is neither "." nor ".."

So ``animals/birds``, ``shape:star``, ``colour:red``, ``jack-o'-lantern`` are valid; an empty name, ``a//b``,
``/a``, ``a/``, ``a;b``, ``a,b``, ``"a"``, ``a:b:c``, ``Shape:x`` (upper-case key) or control characters are not.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..data import Item, open_gallery
from ..errors import GalleryError, SimxError

#: Version of the ``vocabulary.json`` format.
VOCAB_FORMAT = 1

_SEGMENT = r"(?:[^\W_]|[_(])[\w\-.+'&()]*(?: [\w\-.+'&()]+)*"
_SEGMENT_RE = re.compile(rf"^{_SEGMENT}$")
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_MAX_SEGMENT = 64


class AttributeVocabularyError(GalleryError):
    """An attribute vocabulary cannot be built or read."""


class AttributeSyntaxError(AttributeVocabularyError):
    """An attribute name breaks the accepted syntax (see the module docstring)."""


class EmptyVocabularyError(AttributeVocabularyError):
    """The gallery names no attribute (or none with enough examples)."""


class PredictorError(SimxError):
    """An attribute predictor is missing, unreadable or does not fit the model it is used with."""


def _check_segment(seg: str, name: str, where: str) -> None:
    if not seg:
        raise AttributeSyntaxError(f"{where}attribute {name!r}: empty path segment (use 'a/b', not 'a//b', '/a' or 'a/')")
    if len(seg) > _MAX_SEGMENT:
        raise AttributeSyntaxError(f"{where}attribute {name!r}: segment {seg[:20]!r}... longer than {_MAX_SEGMENT} characters")
    if seg in (".", ".."):
        raise AttributeSyntaxError(f"{where}attribute {name!r}: segment {seg!r} is not allowed")
    if not _SEGMENT_RE.match(seg):
        bad = sorted({c for c in seg if not (c.isalnum() or c in "_-.+'&() ")})
        why = (f"illegal character(s) {' '.join(repr(c) for c in bad)}" if bad else
               "must start with a letter, digit or '(' and use single inner spaces")
        raise AttributeSyntaxError(
            f"{where}attribute {name!r}: {why}; allowed: letters, digits, _ - . + ' & ( ) and single inner spaces, "
            "segments separated by '/', optional lower-case 'key:' prefix"
        )


def validate_attribute(name: Any, where: str = "") -> str:
    """Return ``name`` if it follows the accepted syntax (module docstring), else raise
    :class:`AttributeSyntaxError` naming the rule it breaks. ``where`` prefixes the message (e.g. the item id)."""
    if not isinstance(name, str):
        raise AttributeSyntaxError(f"{where}attribute {name!r} is a {type(name).__name__}, not a string")
    if name == "" or name.strip() == "":
        raise AttributeSyntaxError(f"{where}empty attribute name")
    if name != name.strip():
        raise AttributeSyntaxError(f"{where}attribute {name!r} has leading or trailing spaces")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise AttributeSyntaxError(f"{where}attribute {name!r} contains a control character")
    key, sep, value = name.partition(":")
    if sep:
        if ":" in value:
            raise AttributeSyntaxError(f"{where}attribute {name!r}: at most one ':' (key:value)")
        if not _KEY_RE.match(key):
            raise AttributeSyntaxError(
                f"{where}attribute {name!r}: key {key!r} must be lower-case letters, digits and '_', starting with a letter")
        path = value
    else:
        path = name
    for seg in path.split("/"):
        _check_segment(seg, name, where)
    return name


def expand_attribute(name: str) -> list[str]:
    """Every level of a (valid) attribute path, broadest first: ``animals/birds`` -> ``[animals, animals/birds]``,
    ``colour:red/dark`` -> ``[colour:red, colour:red/dark]``."""
    key, sep, value = name.partition(":")
    prefix, path = (key + ":", value) if sep else ("", name)
    parts = path.split("/")
    return [prefix + "/".join(parts[: i + 1]) for i in range(len(parts))]


def parent_of(name: str) -> str | None:
    """The next broader attribute, or None at the top (``animals/birds`` -> ``animals``)."""
    levels = expand_attribute(name)
    return levels[-2] if len(levels) > 1 else None


def item_attributes(item: Item, use_labels: bool = True, use_attributes: bool = True) -> set[str]:
    """The expanded, validated attribute set of one gallery item (manifest attributes + the hierarchy of every
    label it carries)."""
    out: set[str] = set()
    where = f"item {item.id!r}: "
    if use_attributes:
        for a in item.attributes:
            out.update(expand_attribute(validate_attribute(a, where)))
    if use_labels:
        for label in item.labels or ([item.label] if item.label else []):
            out.update(expand_attribute(validate_attribute(label, where + "label: ")))
    return out


@dataclass
class Vocabulary:
    """An ordered list of attribute names and what is known about them.

    ``counts[i]`` is the number of gallery items carrying attribute i (0 when unknown, e.g. ImageNet);
    ``source`` is ``"gallery"`` or ``"imagenet"``; for ImageNet, ``members[name]`` lists the classifier indices an
    attribute pools (one class for a leaf, all its classes for a group).
    """

    names: list[str]
    source: str = "gallery"
    counts: list[int] = field(default_factory=list)
    members: dict[str, list[int]] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if len(set(self.names)) != len(self.names):
            dup = [n for n, c in Counter(self.names).items() if c > 1]
            raise AttributeVocabularyError(f"duplicate attribute names in vocabulary: {', '.join(dup[:5])}")
        if not self.counts:
            self.counts = [0] * len(self.names)
        self._index = {n: i for i, n in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def index(self, name: str) -> int:
        """Position of ``name``; raises :class:`AttributeVocabularyError` for an unknown attribute."""
        if name not in self._index:
            raise AttributeVocabularyError(f"attribute {name!r} is not in the vocabulary ({len(self)} attributes)")
        return self._index[name]

    def parent(self, name: str) -> str | None:
        """The nearest broader attribute that is in this vocabulary."""
        p = parent_of(name)
        while p is not None and p not in self._index:
            p = parent_of(p)
        return p

    def targets(self, items: Sequence[Item], use_labels: bool = True) -> np.ndarray:
        """Multi-hot ground truth (N, A) uint8: item n carries attribute a (after hierarchy expansion)."""
        y = np.zeros((len(items), len(self)), dtype=np.uint8)
        for n, it in enumerate(items):
            for a in item_attributes(it, use_labels=use_labels):
                j = self._index.get(a)
                if j is not None:
                    y[n, j] = 1
        return y

    def to_dict(self) -> dict[str, Any]:
        return {"format": VOCAB_FORMAT, "source": self.source, "description": self.description,
                "names": list(self.names), "counts": [int(c) for c in self.counts],
                "members": {k: [int(i) for i in v] for k, v in self.members.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Vocabulary":
        if not isinstance(d, dict) or "names" not in d:
            raise AttributeVocabularyError("vocabulary JSON must be an object with a 'names' list")
        fmt = d.get("format")
        if fmt != VOCAB_FORMAT:
            raise AttributeVocabularyError(f"vocabulary format {fmt!r} is not supported (expected {VOCAB_FORMAT})")
        names = [validate_attribute(n, "vocabulary: ") for n in d["names"]]
        if not names:
            raise EmptyVocabularyError("the vocabulary file lists no attribute")
        return cls(names=names, source=str(d.get("source", "gallery")), counts=list(d.get("counts") or []),
                   members={k: list(v) for k, v in (d.get("members") or {}).items()},
                   description=str(d.get("description", "")))

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AttributeVocabularyError(f"vocabulary file not found: {p}") from None
        except json.JSONDecodeError as exc:
            raise AttributeVocabularyError(f"{p} is not valid JSON ({exc.msg})") from None
        return cls.from_dict(data)


def vocabulary_from_items(items: Iterable[Item], min_count: int = 1, use_labels: bool = True,
                          use_attributes: bool = True, max_fraction: float = 1.0) -> Vocabulary:
    """Vocabulary of a gallery: every attribute (all levels) carried by at least ``min_count`` items and by at
    most ``max_fraction`` of them (an attribute every item has explains nothing). Sorted by name.

    Raises :class:`AttributeSyntaxError` for a malformed attribute (naming the item) and
    :class:`EmptyVocabularyError` when nothing is left.
    """
    items = list(items)
    counts: Counter[str] = Counter()
    for it in items:
        counts.update(item_attributes(it, use_labels=use_labels, use_attributes=use_attributes))
    n = max(len(items), 1)
    kept = sorted(a for a, c in counts.items() if c >= min_count and c / n <= max_fraction)
    if not kept:
        what = []
        if use_attributes:
            what.append("an 'attributes' column")
        if use_labels:
            what.append("labels (sub-folders)")
        reason = ("no item carries any attribute" if not counts else
                  f"{len(counts)} attribute(s) found but none carried by at least {min_count} item(s)"
                  + (f" and at most {max_fraction:.0%} of them" if max_fraction < 1 else ""))
        raise EmptyVocabularyError(
            f"empty attribute vocabulary: {reason} among {len(items)} item(s); give the gallery "
            f"{' or '.join(what)}, or use the default model's ImageNet vocabulary")
    return Vocabulary(names=kept, source="gallery", counts=[counts[a] for a in kept],
                      description=f"{len(kept)} gallery attributes from {len(items)} items")


def vocabulary_from_manifest(path: str | os.PathLike, min_count: int = 1, use_labels: bool = True) -> Vocabulary:
    """Vocabulary of a CSV/Parquet manifest (its ``attributes`` column and ``label`` hierarchy)."""
    return vocabulary_from_items(open_gallery(path), min_count=min_count, use_labels=use_labels)


def vocabulary_from_folder(path: str | os.PathLike, min_count: int = 1) -> Vocabulary:
    """Vocabulary of a folder gallery: its sub-folder hierarchy (every level of every label path)."""
    return vocabulary_from_items(open_gallery(path), min_count=min_count, use_labels=True, use_attributes=False)


# --------------------------------------------------------------------------------------------- ImageNet

#: Hand-written groups of the ImageNet-1k class indices (inclusive ranges, in timm's class order).
IMAGENET_RANGES: dict[str, list[tuple[int, int]]] = {
    "animals/fish": [(0, 6), (389, 397)],
    "animals/birds": [(7, 24), (80, 100), (127, 146)],
    "animals/amphibians": [(25, 32)],
    "animals/reptiles": [(33, 68)],
    "animals/invertebrates/arachnids": [(70, 78)],
    "animals/invertebrates/molluscs": [(112, 117)],
    "animals/invertebrates/crustaceans": [(118, 126)],
    "animals/invertebrates/insects": [(300, 326)],
    "animals/invertebrates/other invertebrates": [(69, 69), (79, 79), (107, 111), (327, 329)],
    "animals/mammals/marsupials and monotremes": [(101, 106)],
    "animals/mammals/marine mammals": [(147, 150)],
    "animals/mammals/dogs": [(151, 268)],
    "animals/mammals/wolves and foxes": [(269, 280)],
    "animals/mammals/cats": [(281, 293)],
    "animals/mammals/bears": [(294, 297)],
    "animals/mammals/small carnivores": [(298, 299), (356, 362)],
    "animals/mammals/rodents and rabbits": [(330, 338)],
    "animals/mammals/hoofed mammals": [(339, 355)],
    "animals/mammals/other mammals": [(363, 364), (385, 388)],
    "animals/mammals/primates": [(365, 384)],
    "objects/communication": [(916, 920)],
    "food/dishes and drinks": [(922, 935), (958, 969)],
    "food/fruit and vegetables": [(936, 957)],
    "nature/landscapes": [(970, 980)],
    "people": [(981, 983)],
    "plants": [(984, 990), (998, 998)],
    "fungi": [(991, 997)],
    "objects/household": [(921, 921), (999, 999)],
}

#: Artifact groups (classes 398-915) and gloss keywords; the group whose keyword occurs earliest in the gloss wins.
OBJECT_KEYWORDS: list[tuple[str, tuple[str, ...]]] = [
    ("objects/vehicles", ("vehicle", "car", "truck", "bus", "van", "boat", "ship", "sailboat", "motorboat",
                          "warship", "sailing vessel", "aircraft", "airplane", "airliner", "spacecraft",
                          "locomotive", "railcar", "railway car", "train", "bicycle", "motorbike", "sled",
                          "cart", "wagon", "tractor", "trolley", "canoe", "automobile", "carriage")),
    ("objects/musical instruments", ("musical", "stringed instrument", "percussion instrument", "wind instrument",
                                     "woodwind", "brass instrument", "reed instrument", "free-reed instrument",
                                     "double-reed instrument", "single-reed", "chordophone", "guitar", "piano",
                                     "membranophone", "drum")),
    ("objects/clothing and accessories", ("garment", "clothing", "clothes", "worn", "hat", "cap", "shoe", "footwear", "boot",
                          "dress", "coat", "jacket", "shirt", "skirt", "trousers", "tie", "necktie", "scarf",
                          "robe", "gown", "suit", "swimsuit", "bathing suit", "undergarment", "nightclothes",
                          "hosiery", "glove", "helmet", "jewelry", "hairpiece", "uniform", "tights", "cloak",
                          "pullover", "vest", "mask", "spectacles", "stocking")),
    ("objects/personal care", ("cosmetic", "toiletry", "makeup", "cream", "lotion", "soap", "bandage")),
    ("objects/weapons and armour", ("weapon", "gun", "rifle", "firearm", "pistol", "armor", "armour", "cannon",
                                    "warhead", "sword", "projectile", "missile")),
    ("objects/buildings and structures", ("building", "structure", "shop", "store", "house", "dwelling",
                                          "residence", "shelter", "shed", "bridge", "tower", "fence", "wall",
                                          "roof", "barrier", "place of worship", "theater", "workplace",
                                          "marketplace", "institution", "monument", "memorial", "archway",
                                          "shrine", "platform", "landing", "mill", "facility", "area", "ceiling",
                                          "pillar", "reservoir", "support", "place for", "door", "gate",
                                          "railing", "tent")),
    ("objects/furniture and furnishings", ("furniture", "chair", "table", "bed", "couch", "bench", "cabinet",
                                           "desk", "chest", "shelves", "bedding", "cushion", "rug", "mat",
                                           "curtain", "blind", "towel", "lamp", "screen", "crib", "rack", "cloth",
                                           "fabric", "seat", "candle", "light", "canopy")),
    ("objects/kitchenware and containers", ("container", "vessel", "bottle", "jar", "jug", "pot", "pan", "bowl",
                                            "cup", "mug", "drinking glass", "glass for", "dish", "tray", "basket",
                                            "box", "bin", "barrel", "can", "bag", "case", "receptacle", "kitchen",
                                            "cooker", "oven", "utensil", "spoon", "shaker", "strongbox",
                                            "package", "bucket", "basin", "filter", "stick")),
    ("objects/electronics and appliances", ("electronic", "electric", "electrical", "computer", "telephone",
                                            "radiotelephone", "appliance", "machine", "equipment", "camera",
                                            "television", "telecommunication", "radio", "printer", "keyboard",
                                            "clock", "watch", "timepiece", "meter", "device", "mechanism",
                                            "optical instrument", "measuring instrument", "telescope",
                                            "copier", "transducer", "heater", "apparatus", "dispenser", "pump",
                                            "disk", "brake")),
    ("objects/tools", ("tool", "implement", "knife", "saw", "ax", "hammer", "screwdriver", "shovel", "brush",
                       "drill", "fastener", "lock", "opener", "trap", "pen", "pencil", "nail", "screw",
                       "instrument")),
    ("objects/sports and toys", ("ball", "game", "sport", "sports", "gymnastic", "exercising", "plaything", "toy",
                                 "puzzle", "racket", "runners", "playing", "weight")),
]


def _imagenet_names() -> tuple[list[str], list[str]]:
    """(short class names, WordNet glosses) for the 1000 ImageNet classes, from timm's bundled files."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    names = [info.index_to_description(i).split(",")[0].strip() for i in range(1000)]
    glosses = [info.index_to_description(i, detailed=True).partition(": ")[2] for i in range(1000)]
    return names, glosses


def _keyword_group(name: str, gloss: str) -> str:
    """The artifact group whose keyword occurs earliest in ``gloss`` (then in ``name``), else objects/other."""
    for text in (gloss.lower(), name.lower()):
        best: tuple[int, int, str] | None = None
        for order, (group, words) in enumerate(OBJECT_KEYWORDS):
            for w in words:
                m = re.search(rf"\b{re.escape(w)}s?\b", text)
                if m and (best is None or (m.start(), order) < best[:2]):
                    best = (m.start(), order, group)
        if best is not None:
            return best[2]
    return "objects/other"


def imagenet_group(index: int, name: str = "", gloss: str = "") -> str:
    """The broader concept (category path) of ImageNet class ``index``."""
    for group, ranges in IMAGENET_RANGES.items():
        if any(lo <= index <= hi for lo, hi in ranges):
            return group
    return _keyword_group(name, gloss)


def _safe_segment(name: str) -> str:
    """A class name made to fit the attribute syntax (characters outside it become spaces)."""
    s = re.sub(r"[^\w\-.+'&() ]", " ", name)
    s = re.sub(r"\s+", " ", s).strip()
    return s[:_MAX_SEGMENT] or "class"


def imagenet_vocabulary(class_names: Sequence[str] | None = None) -> Vocabulary:
    """The ImageNet classifier as an attribute vocabulary: one attribute per class
    (``animals/mammals/dogs/golden retriever``) and one per group level (``animals``, ``animals/mammals``,
    ``animals/mammals/dogs``); ``members`` maps each attribute to its class indices.

    ``class_names`` (the model's ``_class_names``) only supplies the short names; the glosses used for grouping
    artifacts come from timm's bundled WordNet definitions.
    """
    names, glosses = _imagenet_names()
    if class_names is not None:
        if len(class_names) != 1000:
            raise AttributeVocabularyError(f"the ImageNet vocabulary needs 1000 class names, got {len(class_names)}")
        names = [str(n).split(",")[0].strip() for n in class_names]
    members: dict[str, list[int]] = {}
    leaves: list[str] = []
    for i in range(1000):
        group = imagenet_group(i, names[i], glosses[i])
        leaf = f"{group}/{_safe_segment(names[i])}"
        if leaf in members:
            leaf = f"{leaf} ({i})"
        validate_attribute(leaf, "ImageNet vocabulary: ")
        members[leaf] = [i]
        leaves.append(leaf)
        for level in expand_attribute(group):
            members.setdefault(level, []).append(i)
    ordered = sorted(members)
    return Vocabulary(names=ordered, source="imagenet", counts=[len(members[n]) for n in ordered],
                      members={n: members[n] for n in ordered},
                      description="ImageNet-1k classes of the default model, grouped into broader concepts "
                                  "(hand-written map, simx/attributes/vocab.py)")
