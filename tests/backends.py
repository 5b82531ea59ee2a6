"""Backend factories every backend-level test runs against (the conformance suite, analog
layers, programming, update schemes): each entry builds a fresh backend and says how to
SET and RESET its devices and how noisy its reads are. A new backend (the hardware
backend over the mock lab, a real bench) registers here and must pass the same tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from memhil.backends.base import Backend
from memhil.backends.sim import SimBackend


@dataclass(frozen=True)
class BackendUnderTest:
    name: str
    make: Callable[[], Backend]
    set_pulse: tuple[float, float]  # (amplitude V, width s) that raises G
    reset_pulse: tuple[float, float]  # (amplitude V, width s) that lowers G
    v_read: float  # a safe read amplitude (V) for MVM checks
    # |I - V@G| <= mvm_rtol * (|V| @ G) + mvm_atol_a, with G from one read_conductance:
    # covers two independent read-noise draws (the read and the MVM) and ADC rounding.
    mvm_rtol: float
    mvm_atol_a: float


def _sim(device, **extra) -> Callable[[], Backend]:
    def make() -> Backend:
        return SimBackend({"tiles": 2, "rows": 12, "cols": 7, "device": device, "seed": 1234, **extra})
    return make


BACKENDS: list[BackendUnderTest] = [
    # Gradual bipolar device with 1 % read noise, 8-bit DAC and 10-bit ADC.
    BackendUnderTest(
        name="sim-neurosim",
        make=_sim({"model": "neurosim"}, read={"read_noise_rel": 0.01, "dac_bits": 8,
                                              "dac_range_v": 0.2, "adc_bits": 10}),
        set_pulse=(2.0, 80e-9), reset_pulse=(-2.0, 80e-9), v_read=0.2,
        mvm_rtol=0.08, mvm_atol_a=2e-7),
    # PCM: SET-only gradual steps, abrupt RESET, drift and its own read noise.
    BackendUnderTest(
        name="sim-pcm",
        make=_sim("pcm"),
        set_pulse=(1.0, 100e-9), reset_pulse=(-2.5, 50e-9), v_read=0.2,
        mvm_rtol=0.25, mvm_atol_a=3e-7),
]
