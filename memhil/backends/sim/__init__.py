"""Batched torch crossbar simulator: device-model plugins, read path, IR drop, SimBackend."""

from memhil.backends.sim.backend import SimBackend
from memhil.backends.sim.config import FaultConfig, ReadPathConfig, SimConfig, TimingConfig

__all__ = ["FaultConfig", "ReadPathConfig", "SimBackend", "SimConfig", "TimingConfig"]
