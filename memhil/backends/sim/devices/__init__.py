"""Device-model plugins; importing this package registers every built-in model by name."""

from memhil.backends.sim.devices.base import (
    DeviceModel,
    build_device_model,
    device_model_names,
    register_alias,
    register_device,
)
from memhil.backends.sim.devices.forming import FormingRRAM
from memhil.backends.sim.devices.ion_drift import LinearIonDrift
from memhil.backends.sim.devices.neurosim import NeuroSimLTPLTD
from memhil.backends.sim.devices.pcm import PCMDevice
from memhil.backends.sim.devices.vteam import VTEAMDevice
from memhil.backends.sim.devices.yakopcic import YakopcicDevice

__all__ = [
    "DeviceModel",
    "FormingRRAM",
    "LinearIonDrift",
    "NeuroSimLTPLTD",
    "PCMDevice",
    "VTEAMDevice",
    "YakopcicDevice",
    "build_device_model",
    "device_model_names",
    "register_alias",
    "register_device",
]
