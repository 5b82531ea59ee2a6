"""Offline datasets and task generators: data shipped by installed packages, or generated.

Nothing here downloads. Each loader returns a :class:`ClassificationData` with seeded splits
(the e-prop pattern task returns a :class:`SpikePatternTask`, the vessel generator images
and masks).
"""

from memhil.datasets.containers import ClassificationData, Split, standardize
from memhil.datasets.digits import digit_images, digits, sequential_digits
from memhil.datasets.mnist1d import mnist1d
from memhil.datasets.retention_tasks import copy_first_input, delayed_recall, flip_flop
from memhil.datasets.spike_tasks import (
    SpikePatternTask,
    pattern_generation,
    spike_digits,
)
from memhil.datasets.tabular import iris
from memhil.datasets.ucr import (
    BUNDLED,
    acsf1,
    classification_sets,
    japanese_vowels,
    load_ucr,
    plaid,
)
from memhil.datasets.vessels import vessels

__all__ = [
    "BUNDLED",
    "ClassificationData",
    "SpikePatternTask",
    "Split",
    "acsf1",
    "classification_sets",
    "copy_first_input",
    "delayed_recall",
    "digit_images",
    "digits",
    "flip_flop",
    "iris",
    "japanese_vowels",
    "load_ucr",
    "mnist1d",
    "pattern_generation",
    "plaid",
    "sequential_digits",
    "spike_digits",
    "standardize",
    "vessels",
]
