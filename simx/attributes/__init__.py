"""SANE's attributes (methods.md 4): vocabularies, the attribute predictor and where an index keeps it.

>>> from simx.attributes import vocabulary_from_manifest, load_predictor, index_attributes
>>> from simx.index import open_index
>>> index = open_index("scenes")
>>> index_attributes(index).params                  # {"predictor": "INDEX/attributes/predictor"} once trained
>>> from simx.explain import explain
>>> exp = explain(index.model, q, [nb], method="sane", **index_attributes(index).params)
>>> exp.extras["query_best"], exp.extras["query_ranking"][0][:3]

Training a predictor (with saliency maps from :mod:`simx.explain`) is :mod:`simx.attribute_training`; this package
does not import the explanation engine, which uses it (the ``sane`` method), so the two never import each other.
Without a trained predictor the default model's ImageNet classifier serves as the vocabulary
(:class:`ImageNetAttributes`, class activation maps). :func:`index_attributes` says which one SANE should use for
an index (the dashboard asks it).
"""

from __future__ import annotations

from .predictor import (PREDICTOR_FORMAT, AttributeHead, AttributePredictor, ImageNetAttributes, load_predictor,
                        match_scores, model_record, spatial_softmax)
from .store import HEAT_DIR, NO_HEAT_DIR, IndexAttributes, attributes_dir, index_attributes, predictor_dir
from .vocab import (VOCAB_FORMAT, AttributeSyntaxError, AttributeVocabularyError, EmptyVocabularyError,
                    PredictorError, Vocabulary, expand_attribute, imagenet_vocabulary, item_attributes,
                    validate_attribute, vocabulary_from_folder, vocabulary_from_items, vocabulary_from_manifest)

__all__ = [
    "AttributeHead", "AttributePredictor", "AttributeSyntaxError", "AttributeVocabularyError", "EmptyVocabularyError",
    "HEAT_DIR", "ImageNetAttributes", "IndexAttributes", "NO_HEAT_DIR", "PREDICTOR_FORMAT", "PredictorError",
    "VOCAB_FORMAT", "Vocabulary", "attributes_dir", "expand_attribute", "imagenet_vocabulary", "index_attributes",
    "item_attributes", "load_predictor", "match_scores", "model_record", "predictor_dir", "spatial_softmax",
    "validate_attribute", "vocabulary_from_folder", "vocabulary_from_items", "vocabulary_from_manifest",
]
