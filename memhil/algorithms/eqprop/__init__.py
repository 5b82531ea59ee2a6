"""Equilibrium propagation on resistive networks, with conductances on a backend."""

from memhil.algorithms.eqprop.devices import (
    DeviceConductances,
    local_slope,
    memristor_store,
    place_layers,
)
from memhil.algorithms.eqprop.network import NetworkSpec, ResistiveNetwork
from memhil.algorithms.eqprop.training import EqPropConfig, EqPropTrainer, IdealConductances

__all__ = [
    "DeviceConductances",
    "EqPropConfig",
    "EqPropTrainer",
    "IdealConductances",
    "NetworkSpec",
    "ResistiveNetwork",
    "local_slope",
    "memristor_store",
    "place_layers",
]
