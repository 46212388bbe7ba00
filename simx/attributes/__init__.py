"""SANE's attributes (methods.md 4): vocabularies, the attribute predictor and its training.

>>> from simx.attributes import vocabulary_from_manifest, train_for_index, load_predictor
>>> from simx.index import open_index
>>> index = open_index("scenes")
>>> result = train_for_index(index)                 # INDEX/attributes/predictor/ (with L_heat, 4.3)
>>> from simx.explain import explain
>>> exp = explain(index.model, q, [nb], method="sane", predictor=result.path)
>>> exp.extras["query_best"], exp.extras["query_ranking"][0][:3]

Without a trained predictor the default model's ImageNet classifier serves as the vocabulary
(:class:`ImageNetAttributes`, class activation maps). :func:`index_attributes` says which one SANE should use for
an index (the dashboard asks it).
"""

from __future__ import annotations

from .predictor import (PREDICTOR_FORMAT, AttributeHead, AttributePredictor, ImageNetAttributes, load_predictor,
                        match_scores, model_record, spatial_softmax)
from .train import (IndexAttributes, TrainConfig, TrainResult, attributes_dir, compare_heat, compute_features,
                    compute_saliency, heat_loss, index_attributes, mean_average_precision, predictor_dir, split_items,
                    train_for_index, train_predictor)
from .vocab import (VOCAB_FORMAT, AttributeSyntaxError, AttributeVocabularyError, EmptyVocabularyError,
                    PredictorError, Vocabulary, expand_attribute, imagenet_vocabulary, item_attributes,
                    validate_attribute, vocabulary_from_folder, vocabulary_from_items, vocabulary_from_manifest)

__all__ = [
    "AttributeHead", "AttributePredictor", "AttributeSyntaxError", "AttributeVocabularyError", "EmptyVocabularyError",
    "ImageNetAttributes", "IndexAttributes", "index_attributes", "PREDICTOR_FORMAT", "PredictorError", "TrainConfig", "TrainResult", "VOCAB_FORMAT",
    "Vocabulary", "attributes_dir", "compare_heat", "compute_features", "compute_saliency", "expand_attribute",
    "heat_loss", "imagenet_vocabulary", "item_attributes", "load_predictor", "match_scores",
    "mean_average_precision", "model_record", "predictor_dir", "spatial_softmax", "split_items", "train_for_index",
    "train_predictor", "validate_attribute", "vocabulary_from_folder", "vocabulary_from_items",
    "vocabulary_from_manifest",
]
