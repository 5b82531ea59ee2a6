"""Configuration of the crossbar simulator: array size, device model, read path, faults,
timing and safety limits, loadable from a mapping or a YAML file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from memhil.backends.base import Limits
from memhil.core.config import from_mapping, load_yaml, require


@dataclass(frozen=True)
class ReadPathConfig:
    """The analog read path of one MVM, in the order it is applied.

    ``v_read`` is the voltage at which chord conductances are evaluated (nonlinear I-V
    devices); reads are linear in the applied voltage around it. DAC/ADC bits of None
    mean ideal converters. Read noise (the device model's own plus ``read_noise_rel`` *
    G + ``read_noise_abs_s``) is drawn once per read call in ``per_read`` mode: read noise
    in RRAM and PCM is 1/f-like, so a batch of inputs applied within microseconds sees
    one realization; ``per_sample`` draws independent noise for every input vector
    (exact output-referred Gaussian, at the cost of a second matmul).

    ``pair_sensing`` is how a differential pair (a weight's G+ and G- columns, or a column
    and its reference; ``Backend.mvm_pairs``) is read. ``per_column``: every column has
    its own output noise and ADC and the pair's difference is taken digitally, as a bench
    that measures each column (and the mock lab) does. ``differential``: the pair's
    currents are subtracted in the analog domain and I+ - I- gets one output-noise draw
    and one ADC of the same full scale, as in macros that sum G+ and G- with opposite
    read polarities on one line before its converter (the HERMES PCM core, Le Gallo et
    al., Nat. Electron. 6, 680 (2023); NeuRRAM's differential rows, Wan et al., Nature
    608, 504 (2022)) and as aihwkit's tiles read a weight G+ - G- (one ``out_noise`` and
    one ``out_res`` per output). The transpose read forms the difference in the analog
    domain under either (its drive is +v on G+ and -v on G-).
    """

    v_read: float = 0.2
    dac_bits: int | None = None
    dac_range_v: float = 0.2
    adc_bits: int | None = None
    adc_range_a: float | None = None  # None: rows * g_max * dac_range_v (never clips)
    read_noise_rel: float = 0.0
    read_noise_abs_s: float = 0.0
    noise_mode: Literal["per_read", "per_sample"] = "per_read"
    output_noise_a: float = 0.0
    pair_sensing: Literal["per_column", "differential"] = "per_column"
    r_wire_ohm: float = 0.0
    ir_drop: Literal["none", "first_order", "exact"] = "none"
    ir_drop_iterations: int = 1
    # Drifting devices: conductances are recomputed once the clock has moved by more than
    # this fraction of the time since the last write (at least the model's drift onset,
    # PCM's T0); the relative error this allows is at most nu * drift_refresh_rel (4e-5
    # for PCM's nu = 0.04), far below read noise.
    drift_refresh_rel: float = 1e-3

    def __post_init__(self) -> None:
        require(self.v_read > 0, "v_read", f"must be > 0 V, got {self.v_read}")
        for name in ("dac_bits", "adc_bits"):
            bits = getattr(self, name)
            require(bits is None or 2 <= bits <= 24, name, f"must be 2..24 or null, got {bits}")
        require(self.dac_range_v > 0, "dac_range_v", f"must be > 0 V, got {self.dac_range_v}")
        require(
            self.adc_range_a is None or self.adc_range_a > 0,
            "adc_range_a",
            f"must be > 0 A or null, got {self.adc_range_a}",
        )
        for name in ("read_noise_rel", "read_noise_abs_s", "output_noise_a", "r_wire_ohm"):
            require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        require(
            self.ir_drop == "none" or self.r_wire_ohm > 0,
            "r_wire_ohm",
            f"ir_drop={self.ir_drop!r} needs r_wire_ohm > 0",
        )
        require(
            0 <= self.drift_refresh_rel <= 0.01,
            "drift_refresh_rel",
            f"must be in [0, 0.01], got {self.drift_refresh_rel}",
        )
        require(
            self.ir_drop_iterations >= 1,
            "ir_drop_iterations",
            f"must be >= 1, got {self.ir_drop_iterations}",
        )


@dataclass(frozen=True)
class FaultConfig:
    """Stuck-at faults drawn once per array (seeded): fractions of cells stuck at a high
    (``g_stuck_on_s``, default the model's g_max) or low conductance (default g_min)."""

    stuck_on_fraction: float = 0.0
    stuck_off_fraction: float = 0.0
    g_stuck_on_s: float | None = None
    g_stuck_off_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("stuck_on_fraction", "stuck_off_fraction"):
            v = getattr(self, name)
            require(0.0 <= v <= 1.0, name, f"must be in [0, 1], got {v}")
        require(
            self.stuck_on_fraction + self.stuck_off_fraction <= 1.0,
            "stuck_on_fraction",
            "stuck_on_fraction + stuck_off_fraction must be <= 1",
        )


@dataclass(frozen=True)
class TimingConfig:
    """Virtual time charged per operation: each input vector of a read takes ``t_read_s``;
    each pulse takes its width plus ``pulse_gap_s``; cells of one call pulse in parallel."""

    t_read_s: float = 1e-6
    pulse_gap_s: float = 0.0

    def __post_init__(self) -> None:
        require(self.t_read_s >= 0, "t_read_s", f"must be >= 0, got {self.t_read_s}")
        require(self.pulse_gap_s >= 0, "pulse_gap_s", f"must be >= 0, got {self.pulse_gap_s}")


@dataclass(frozen=True)
class SimConfig:
    """Everything that defines a simulated chip; ``device`` is a model name, a mapping
    ``{model: name, **params}`` or the path of a (fitted) parameter YAML."""

    tiles: int = 1
    rows: int = 64
    cols: int = 64
    device: Any = "pcm"
    read: ReadPathConfig = field(default_factory=ReadPathConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    timing: TimingConfig = field(default_factory=TimingConfig)
    limits: Limits = field(default_factory=Limits)
    seed: int = 0
    torch_device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"

    def __post_init__(self) -> None:
        for name in ("tiles", "rows", "cols"):
            v = getattr(self, name)
            require(v >= 1, name, f"must be >= 1, got {v}")

    @classmethod
    def load(cls, source: str | Path | Mapping[str, Any] | SimConfig | None) -> SimConfig:
        """From a SimConfig, a mapping or a YAML file (errors name file and key)."""
        if isinstance(source, SimConfig):
            return source
        if isinstance(source, (str, Path)):
            return from_mapping(cls, load_yaml(source), source=str(source))
        return from_mapping(cls, source or {})
