"""Backend factories every backend-level test runs against (the conformance suite, analog
layers, programming, update schemes): each entry builds a fresh backend and says how to
SET and RESET its devices and how noisy its reads are. A new backend (the hardware
backend over the mock lab, a real bench) registers here and must pass the same tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from memhil.backends.base import Backend
from memhil.backends.sim import SimBackend
from memhil.mock_hw.lab import MockLab


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
        return SimBackend(
            {"tiles": 2, "rows": 12, "cols": 7, "device": device, "seed": 1234, **extra}
        )

    return make


BACKENDS: list[BackendUnderTest] = [
    # Gradual bipolar device with 1 % read noise, 8-bit DAC and 10-bit ADC.
    BackendUnderTest(
        name="sim-neurosim",
        make=_sim(
            {"model": "neurosim"},
            read={"read_noise_rel": 0.01, "dac_bits": 8, "dac_range_v": 0.2, "adc_bits": 10},
        ),
        set_pulse=(2.0, 80e-9),
        reset_pulse=(-2.0, 80e-9),
        v_read=0.2,
        mvm_rtol=0.08,
        mvm_atol_a=2e-7,
    ),
    # PCM: SET-only gradual steps, abrupt RESET, drift and its own read noise.
    BackendUnderTest(
        name="sim-pcm",
        make=_sim("pcm"),
        set_pulse=(1.0, 100e-9),
        reset_pulse=(-2.5, 50e-9),
        v_read=0.2,
        mvm_rtol=0.25,
        mvm_atol_a=3e-7,
    ),
]


def _mock_station(strategy: str, rows: int, cols: int) -> dict:
    """A station over the mock lab: an array board (line-parallel strategy) or a 2636B
    (drive + sense), a 2450 (V/2 bias) and a B2201 with a ground port (cell-wise strategy),
    on NeuroSim devices with 1 % read
    noise and sneak paths on (both strategies drive every line, so none reach the reads)."""
    if strategy == "parallel":
        instruments = {
            "board": {"type": "memhil_array_board", "address": "memhilboard://conformance"}
        }
        wiring = {}
    else:
        instruments = {
            "smu": {"type": "keithley2636b", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
            "bias": {"type": "keithley2450", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
            "matrix": {"type": "keysight_b2201", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
        }
        wiring = {
            "smu_ports": {"smu.smua": 1, "smu.smub": 2, "bias": 3},
            "rows": list(range(1, rows + 1)),
            "cols": list(range(rows + 1, rows + cols + 1)),
            "ground_ports": [12],
        }
    return {
        "name": f"conformance-{strategy}",
        "chip": {"rows": rows, "cols": cols, "device": "neurosim"}
        | (
            {}
            if strategy == "parallel"
            else {"set_pulse": [2.0, 1e-4], "reset_pulse": [-2.0, 1e-4]}
        ),
        "limits": {
            "v_pulse_max_v": 3.0,
            "v_read_max_v": 0.5,
            # the 2636B pulses the cell strategy: its 100 us floor (the board's is 1 ns)
            "width_min_s": 1e-9 if strategy == "parallel" else 100e-6,
            "compliance_max_a": 1e-3,
            "compliance_default_a": 1e-3,
        },
        "instruments": instruments,
        "wiring": wiring,
        "mock": {"device": {"model": "neurosim"}, "read": {"read_noise_rel": 0.01}, "seed": 11},
    }


def _hardware(strategy: str, rows: int, cols: int) -> Callable[[], Backend]:
    def make() -> Backend:
        return MockLab.open_backend(_mock_station(strategy, rows, cols), strategy=strategy)

    return make


# The hardware backend over the mock lab, one entry per read strategy. NeuroSim pulses and
# tolerances as for the simulator (1 % read noise); no converter rounding, so a small
# absolute floor suffices.
BACKENDS += [
    BackendUnderTest(
        name="hw-mock-board",
        make=_hardware("parallel", 8, 8),
        set_pulse=(2.0, 80e-9),
        reset_pulse=(-2.0, 80e-9),
        v_read=0.2,
        mvm_rtol=0.08,
        mvm_atol_a=2e-8,
    ),
    BackendUnderTest(
        name="hw-mock-matrix",
        make=_hardware("cell", 4, 6),
        set_pulse=(2.0, 100e-6),  # the 2636B's shortest pulse; NeuroSim counts pulses
        reset_pulse=(-2.0, 100e-6),
        v_read=0.2,
        mvm_rtol=0.08,
        mvm_atol_a=2e-8,
    ),
]


def _b1500_station(rows: int, cols: int) -> dict:
    """A parameter-analyzer station over the mock lab: a B1500A's three SMUs (drive, sense,
    V/2 bias) through a B2201 with a ground port, cell-wise; SMU pulses are >= 500 us, so
    the station's pulse floor and the chip's nominal pulses say so."""
    station = _mock_station("cell", rows, cols)
    station["name"] = "conformance-b1500"
    station["instruments"] = {
        "spa": {"type": "keysight_b1500a", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
        "matrix": {"type": "keysight_b2201", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
    }
    station["wiring"]["smu_ports"] = {"spa.smu1": 1, "spa.smu2": 2, "spa.smu3": 3}
    station["limits"]["width_min_s"] = 500e-6
    station["chip"].update(set_pulse=[2.0, 1e-3], reset_pulse=[-2.0, 1e-3])
    return station


# The bench stations join the conformance suite only (tests/conformance): the backend-level
# algorithm tests run on BACKENDS. NeuroSim's pulse law counts pulses (no width
# dependence), so the B1500A's 1 ms SMU pulses act as the 80 ns ones above; tolerances as
# for the other mock stations (1 % read noise, no converter rounding). 2 x 3 cells: every
# contract check has two rows and two columns to tell apart, and a cell-wise pass costs
# wire round trips per cell (~15 per read on a B1500A: force, measure, outputs on and off).
B1500_BACKEND = BackendUnderTest(
    name="hw-mock-b1500",
    make=lambda: MockLab.open_backend(_b1500_station(2, 3), strategy="cell"),
    set_pulse=(2.0, 1e-3),
    reset_pulse=(-2.0, 1e-3),
    v_read=0.2,
    mvm_rtol=0.08,
    mvm_atol_a=2e-8,
)


def _arc2_station(rows: int, cols: int) -> dict:
    """An ArC TWO station over the mock lab (the emulation of ``pyarc2.Instrument`` on the
    mock chip): line-parallel reads and masked pulses, its 40 ns floor."""
    station = _mock_station("parallel", rows, cols)
    station["name"] = "conformance-arc2"
    station["limits"]["width_min_s"] = 4e-8
    station["instruments"] = {
        "arc": {"type": "arc2", "address": "arc2://0", "options": {"rows": rows, "cols": cols}}
    }
    return station


ARC2_BACKEND = BackendUnderTest(
    name="hw-mock-arc2",
    make=lambda: MockLab.open_backend(_arc2_station(8, 8)),
    set_pulse=(2.0, 80e-9),
    reset_pulse=(-2.0, 80e-9),
    v_read=0.2,
    mvm_rtol=0.08,
    mvm_atol_a=2e-8,
)


def _k4200_station(rows: int, cols: int) -> dict:
    """A 4200A-SCS station over the mock lab: three SMUs (drive, sense, V/2 bias) through a
    B2201, the drive SMU cabled through the 4225-RPM of PMU channel 1, which fires the
    pulses (KXCI ``:PMU:`` standard pulse, 40 ns floor), cell-wise."""
    station = _mock_station("cell", rows, cols)
    station["name"] = "conformance-k4200"
    station["instruments"] = {
        "spa": {
            "type": "keithley4200a",
            "address": "TCPIP0::127.0.0.1::0::SOCKET",
            "options": {"rpm": {"smu1": "PMU1-1"}},
        },
        "matrix": {"type": "keysight_b2201", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
    }
    station["wiring"]["smu_ports"] = {"spa.smu1": 1, "spa.smu2": 2, "spa.smu3": 3}
    station["limits"]["width_min_s"] = 4e-8
    return station


K4200_BACKEND = BackendUnderTest(
    name="hw-mock-k4200",
    make=lambda: MockLab.open_backend(_k4200_station(2, 3), strategy="cell"),
    set_pulse=(2.0, 80e-9),
    reset_pulse=(-2.0, 80e-9),
    v_read=0.2,
    mvm_rtol=0.08,
    mvm_atol_a=2e-8,
)

#: What tests/conformance runs on: every backend above and the bench stations.
CONFORMANCE_BACKENDS: list[BackendUnderTest] = [
    *BACKENDS,
    B1500_BACKEND,
    ARC2_BACKEND,
    K4200_BACKEND,
]
