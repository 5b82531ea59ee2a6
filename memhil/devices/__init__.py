"""Device-model plugins; importing this package registers every built-in model by name."""

from memhil.devices.base import (
    DeviceModel,
    build_device_model,
    device_model_names,
    register_alias,
    register_device,
)
from memhil.devices.empirical import EmpiricalDevice
from memhil.devices.forming import FormingRRAM
from memhil.devices.ion_drift import LinearIonDrift
from memhil.devices.neurosim import NeuroSimLTPLTD
from memhil.devices.pcm import PCMDevice
from memhil.devices.volatile import VolatileDevice
from memhil.devices.vteam import VTEAMDevice
from memhil.devices.yakopcic import YakopcicDevice

__all__ = [
    "DeviceModel",
    "EmpiricalDevice",
    "FormingRRAM",
    "LinearIonDrift",
    "NeuroSimLTPLTD",
    "PCMDevice",
    "VTEAMDevice",
    "VolatileDevice",
    "YakopcicDevice",
    "build_device_model",
    "device_model_names",
    "register_alias",
    "register_device",
]
