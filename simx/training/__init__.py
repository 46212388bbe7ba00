"""Fine-tuning an index's model from its labelled matches (``simx train``).

>>> from simx.training import train_index, TrainConfig
>>> result = train_index("shortcut", "models/shortcut-ft", TrainConfig(epochs=10))
>>> result.spec          # 'default@/abs/models/shortcut-ft/weights.safetensors' for simx index build --model
>>> result.record        # the training record, also in models/shortcut-ft/training.json

See :mod:`simx.training.train` for the pipeline, :mod:`simx.training.losses` for the choice of loss and L_sm,
:mod:`simx.training.split` for which weights train.
"""

from .pairs import HOW_TO_LABEL, collect_triplets, split_triplets
from .split import TrainingError, parameter_groups
from .train import RECORD_FILE, SPEC_FILE, WEIGHTS_FILE, TrainConfig, TrainResult, rebuild_command, train_index, weights_spec

__all__ = ["train_index", "TrainConfig", "TrainResult", "TrainingError", "weights_spec", "rebuild_command",
           "collect_triplets", "split_triplets", "parameter_groups", "HOW_TO_LABEL", "WEIGHTS_FILE", "SPEC_FILE",
           "RECORD_FILE"]
