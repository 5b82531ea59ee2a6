"""Offline datasets and task generators: data shipped by installed packages, or generated.

Nothing here downloads. Each loader returns a :class:`ClassificationData` with seeded splits.
"""

from memhil.datasets.containers import ClassificationData, Split, standardize
from memhil.datasets.digits import digit_images, digits, sequential_digits
from memhil.datasets.tabular import iris
from memhil.datasets.ucr import BUNDLED, acsf1, japanese_vowels, load_ucr

__all__ = [
    "BUNDLED",
    "ClassificationData",
    "Split",
    "acsf1",
    "digit_images",
    "digits",
    "iris",
    "japanese_vowels",
    "load_ucr",
    "sequential_digits",
    "standardize",
]
