"""A weight matrix stored on a backend: the object every algorithm holds.

``AnalogWeights`` ties a ``WeightMapping`` to a ``Backend`` and to the pulses that program
its devices. It reads the matrix back, multiplies with it in the array (forward through
``mvm``, backward through ``mvm_t``), and turns per-device pulse counts into one backend
call per polarity. Update schemes and programming routines act through it, so they run
unchanged on the simulator, the mock lab and a bench.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from memhil.analog.mapping import WeightMapping
from memhil.backends.base import Backend, InputEncoding
from memhil.core.types import PulseSpec


@dataclass
class PulseTally:
    """Pulses issued so far: per-device SET and RESET pulses and backend calls."""

    set_pulses: int = 0
    reset_pulses: int = 0
    calls: int = 0
    refreshes: int = 0

    @property
    def total(self) -> int:
        return self.set_pulses + self.reset_pulses


InputScaling = Literal["absmax", "fixed"]


@dataclass
class AnalogWeights:
    """A signed (out, in) matrix on a backend region, with its programming pulses.

    Inputs are encoded as read voltages: ``absmax`` scales each input vector so its
    largest entry reads at ``v_read`` (aihwkit's noise management), ``fixed`` maps
    ``x_max`` to ``v_read``; outputs are decoded back to ``x @ W.T`` units.
    """

    backend: Backend
    mapping: WeightMapping
    set_pulse: PulseSpec
    reset_pulse: PulseSpec
    v_read: float | None = None
    input_scaling: InputScaling = "absmax"
    x_max: float = 1.0
    tally: PulseTally = field(default_factory=PulseTally)

    def __post_init__(self) -> None:
        self.mapping.check_fits(self.backend.shape)
        if self.v_read is None:
            self.v_read = 0.8 * self.backend.limits.v_read_max_v
        self._mask = self.mapping.cell_mask(self.backend.shape).to(self.backend.torch_device)
        self._pairs = self.mapping.pair_columns()

    @property
    def encoding(self) -> InputEncoding:
        """How inputs become read voltages (``input_scaling`` to ``v_read``)."""
        assert self.v_read is not None  # set by __post_init__
        return InputEncoding(self.input_scaling, self.v_read, self.x_max)

    # -- reads --------------------------------------------------------------------------
    def region(self, full: Tensor) -> Tensor:
        """The mapping's region (in, n_cols) of a backend-shaped tensor."""
        m = self.mapping
        return full[m.tile, m.rows, m.cols]

    def read_conductance(self) -> Tensor:
        """Measured conductances of the region, (in_features, n_cols), in S."""
        g = self.backend.read_conductance(self._mask)
        return g.reshape(self.mapping.in_features, self.mapping.n_cols)

    def read_weights(self) -> Tensor:
        """The weight matrix (out, in) the devices encode now (one measurement), on the CPU."""
        return self.mapping.weights_from_conductance(self.read_conductance().cpu())

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Read voltages for ``x`` (batch, features) and the per-sample scale to undo."""
        gain, back = self.encoding.scales(x)
        return x * gain, back

    def _region_input(self, v: Tensor, n_lines: int, offset: int) -> Tensor:
        """``v`` on lines offset.. of ``n_lines``, 0 V elsewhere (``v`` itself when the
        region spans every line: no copy of the batch)."""
        if offset == 0 and v.shape[-1] == n_lines and v.dtype == self.backend.dtype:
            return v
        full = torch.zeros(
            *v.shape[:-1], n_lines, dtype=self.backend.dtype, device=self.backend.torch_device
        )
        full[..., offset : offset + v.shape[-1]] = v
        return full

    def matvec(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        """``x @ W.T`` (batch, out) computed in the array by one ``mvm``, plus a digital
        ``bias`` (out,) if given. The inputs go to the read with their ``encoding`` and
        the decoding (with the bias) as its ``output_affine``, so a backend with
        converters of its own applies both in their passes."""
        m = self.mapping
        _, rows, _ = self.backend.shape
        out_device = x.device
        x_rows = self._region_input(x.to(self.backend.torch_device), rows, m.row_offset)
        if self._pairs is not None:  # one device per sign: the pair difference, read as one
            i = self.backend.mvm_pairs(
                x_rows,
                *self._pairs,
                tile=m.tile,
                encoding=self.encoding,
                # 1 / scale in float64, rounded once to the backend's dtype
                output_affine=(torch.full((1, 1), 1.0 / m.scale, dtype=torch.float64), bias),
            )
            return i.to(out_device)
        i = self.backend.mvm(x_rows, tile=m.tile, encoding=self.encoding)
        y = m.combine(i[..., m.cols])
        return (y if bias is None else y.add_(bias.to(y))).to(out_device)

    def matvec_t(self, y: Tensor) -> Tensor:
        """``y @ W`` (batch, in) computed in the array by one transpose read: each output
        drives its + columns with +v and its - columns (or the reference) with -v."""
        m = self.mapping
        _, _, cols = self.backend.shape
        out_device = y.device
        v, back = self._encode(y.to(self.backend.torch_device))
        if m.layout == "reference":
            ref = -v.sum(-1, keepdim=True)
            v_cols = torch.cat([v, ref], -1)
        else:
            rep = v.repeat_interleave(m.n_devices, -1)
            v_cols = torch.cat([rep, -rep], -1)
        # Reference/differential drive can exceed v_read on the shared line: rescale.
        peak = v_cols.abs().amax(-1, keepdim=True).clamp_min(1e-12)
        assert self.v_read is not None  # set by __post_init__
        shrink = torch.clamp(self.v_read / peak, max=1.0)
        i = self.backend.mvm_t(self._region_input(v_cols * shrink, cols, m.col_offset), tile=m.tile)
        return (i[..., m.rows] / (m.n_devices * m.scale) * back / shrink).to(out_device)

    # -- writes -------------------------------------------------------------------------
    def pulse_region(self, counts: Tensor, pulse: PulseSpec) -> None:
        """Apply ``counts`` (in, n_cols; int, >= 0) pulses of ``pulse`` to the region's
        devices in one backend call; counts are tallied."""
        counts = counts.to(torch.int64)
        total = int(counts.sum())
        if total == 0:
            return
        full = torch.zeros(self.backend.shape, dtype=torch.int64)
        m = self.mapping
        full[m.tile, m.rows, m.cols] = counts.cpu()
        sel = full > 0
        self.backend.pulse(sel, pulse.amplitude_v, pulse.width_s, full)
        if pulse.amplitude_v > 0:
            self.tally.set_pulses += total
        else:
            self.tally.reset_pulses += total
        self.tally.calls += 1

    def set_region(self, counts: Tensor) -> None:
        """SET (potentiating) pulses per device of the region."""
        self.pulse_region(counts, self.set_pulse)

    def reset_region(self, counts: Tensor) -> None:
        """RESET (depressing) pulses per device of the region."""
        self.pulse_region(counts, self.reset_pulse)
