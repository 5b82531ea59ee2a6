"""e-prop for LIF networks trained online on device weights."""

from memhil.algorithms.eprop.lif import LIFParams, run_lif
from memhil.algorithms.eprop.training import (
    VARIANTS,
    EpropConfig,
    EpropNetwork,
    place_matrices,
    required_shape,
)

__all__ = [
    "VARIANTS",
    "EpropConfig",
    "EpropNetwork",
    "LIFParams",
    "place_matrices",
    "required_shape",
    "run_lif",
]
