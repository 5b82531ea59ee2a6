"""Weights on conductances: mapping, placement on tiles, AnalogLinear, program-and-verify,
pulse responses and online update schemes, all written on the Backend contract."""

from memhil.analog.linear import AnalogLinear, AnalogLinearConfig
from memhil.analog.mapping import Layout, WeightMapping
from memhil.analog.placement import Region, one_per_tile, pack_columns
from memhil.analog.program import (
    ProgramReport,
    calibrate_region,
    program_and_verify,
    program_open_loop,
    program_weights,
)
from memhil.analog.pulse_response import PulseResponse, measure_pulse_response, measure_set_response
from memhil.analog.updates.refresh import refresh_pairs
from memhil.analog.updates.schemes import (
    UpdateScheme,
    UpdateStep,
    available_update_schemes,
    build_update_scheme,
    register_update_scheme,
)
from memhil.analog.weights import AnalogWeights, InputScaling, PulseTally
from memhil.core.types import CellList, PulseSpec

__all__ = [
    "AnalogLinear",
    "AnalogLinearConfig",
    "AnalogWeights",
    "CellList",
    "InputScaling",
    "Layout",
    "ProgramReport",
    "PulseResponse",
    "PulseSpec",
    "PulseTally",
    "Region",
    "UpdateScheme",
    "UpdateStep",
    "WeightMapping",
    "available_update_schemes",
    "build_update_scheme",
    "calibrate_region",
    "measure_pulse_response",
    "measure_set_response",
    "one_per_tile",
    "pack_columns",
    "program_and_verify",
    "program_open_loop",
    "program_weights",
    "refresh_pairs",
    "register_update_scheme",
]
