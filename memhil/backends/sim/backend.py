"""SimBackend: the Backend contract on a batched torch crossbar simulator.

State is one tensor ``(tiles, rows, cols, k)`` plus per-device (D2D) parameter tensors of
shape ``(tiles, rows, cols)``; reads and pulses are tensor ops over all tiles and cells
(the only Python loops are over pulse index or solver iterations, inside device models).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from memhil.backends.base import (
    ABSMAX_FLOOR,
    Backend,
    Capabilities,
    InputEncoding,
    Limits,
    apply_output_affine,
    encode_inputs,
)
from memhil.backends.clock import VirtualClock
from memhil.backends.sim import ir_drop
from memhil.backends.sim.config import SimConfig
from memhil.backends.sim.read_path import quantize_symmetric, quantize_symmetric_
from memhil.core.types import as_pulse
from memhil.devices.base import DeviceModel, build_device_model

#: A cell whose G lies this many read-noise std above 0 S is never clipped (P < 1e-9).
CLIP_FREE_STDS = 6.0
#: No column bias (the compiled decoding's empty argument).
_EMPTY_F32 = np.empty(0, dtype=np.float32)
#: A single-input read takes the column shortcut while at most 1 / this of its cells are
#: near 0 S (each then needs its own draw).
NEAR_ZERO_MAX_FRACTION = 16


@dataclass
class _ReadState:
    """Cached read state: conductance (S) and read-noise std (S) at time ``t_s``; the
    column-noise terms (:meth:`column_noise_terms`) are derived on the first MVM that
    needs them, so writes followed by single-cell reads never pay for them."""

    version: int
    t_s: float
    g: Tensor
    std: Tensor | None
    _terms: tuple[Tensor, Tensor | None] | None = None
    _var: Tensor | None = None
    _var_bf16: dict[tuple[int | None, bool], Tensor] = field(default_factory=dict)

    def variance(self) -> Tensor:
        """std^2 (S^2) of every cell, computed once."""
        assert self.std is not None
        if self._var is None:
            self._var = self.std * self.std
        return self._var

    def variance_bf16(self, tile: int | None, transpose: bool) -> Tensor:
        """std^2 (S^2) of the tile and orientation read, rounded to bfloat16 and contiguous
        (the per-sample variance product's right operand), computed once per view."""
        key = (tile, transpose)
        if key not in self._var_bf16:
            var = self.variance()
            var = var if tile is None else var[tile : tile + 1]
            var = var.transpose(-1, -2) if transpose else var
            self._var_bf16[key] = var.to(torch.bfloat16).contiguous()
        return self._var_bf16[key]

    def few_near_zero(self) -> bool:
        """Whether at most 1/16 of the cells lie within 6 std of 0 S: each costs a gather,
        a draw and a scatter (~10x a dense draw per cell), so beyond that a single-input
        read is cheaper with the per-device draw."""
        cells = self.column_noise_terms()[1]
        return cells is None or cells.shape[0] * NEAR_ZERO_MAX_FRACTION <= self.g.numel()

    def column_noise_terms(self) -> tuple[Tensor, Tensor | None]:
        """(variance (S^2) of the cells whose clip at 0 S never binds, (n, 3) indices
        (tile, row, col) of the others or None). A read is G + std N(0, 1) clipped at 0 S;
        the clip binds with probability < 1e-9 where G lies 6 std above 0 S, so only the
        cells below need a draw of their own."""
        assert self.std is not None
        if self._terms is None:
            var = self.variance()
            low = self.g < CLIP_FREE_STDS * self.std
            cells = low.nonzero()
            if cells.shape[0]:
                self._terms = (var.masked_fill(low, 0.0), cells)
            else:
                self._terms = (var, None)
        return self._terms


@functools.cache
def bf16_dot_products() -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX): with
    them oneDNN's bfloat16 matrix product runs in ~0.45x the time of a float32 one (batch
    1024, 512x512, measured); without them it is emulated and slower than float32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def _grid(bits: int | None, full_scale: float) -> tuple[np.float32, np.float32, np.float32]:
    """(1 / lsb, levels, lsb) of :func:`quantize_symmetric_`'s grid as float32 (the
    compiled read path's arguments); levels 0 for an ideal converter."""
    if bits is None:
        return np.float32(0.0), np.float32(0.0), np.float32(0.0)
    levels = float(2 ** (bits - 1) - 1)
    lsb = full_scale / levels
    return np.float32(1.0 / lsb), np.float32(levels), np.float32(lsb)


def _decoding(
    back: Tensor | None, output_affine: tuple[Tensor, Tensor | None] | None
) -> tuple[Tensor, Tensor | None] | None:
    """The decoding of a pair read: the encoding's 1 / gain per input vector (``back``)
    folded into ``output_affine``'s scale (one product per output: i * (back * scale)
    + bias)."""
    if back is None:
        return output_affine
    if output_affine is None:
        return back, None
    scale, bias = output_affine
    return back * scale.to(back), bias


def _compiled_operand(x: Tensor) -> bool:
    """Whether the compiled read kernels take ``x``: float32 on the CPU, outside autograd
    (:mod:`memhil.backends.sim.read_kernels`, the same rounding as the torch ops)."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad


def _tile_matmul(v: Tensor, g: Tensor, out: Tensor | None = None) -> Tensor:
    """(tiles, batch, rows) @ (tiles, rows, cols), into ``out`` if given; one tile as a
    plain matrix product (no batched-GEMM setup)."""
    if v.shape[0] == 1 and g.shape[0] == 1:
        if out is not None:
            torch.matmul(v[0], g[0], out=out[0])
            return out
        return torch.matmul(v[0], g[0]).unsqueeze(0)
    return torch.matmul(v, g) if out is None else torch.matmul(v, g, out=out)


class SimBackend(Backend):
    """Simulated crossbar tiles with a device model, read path, faults and a virtual clock.

    Three seeded random streams keep experiments reproducible and independent: one for
    fabrication (D2D spread, faults), one for programming (C2C noise), one for reads.
    Reads are linear in the applied voltage with chord conductances taken at
    ``read.v_read`` and never disturb the state. Compliance is applied per pulse: a
    source in compliance lowers the pulse voltage to ``I_cc / G`` with G the conductance
    at the start of that pulse (within-pulse limiting of an abrupt switch is not modelled).
    """

    def __init__(
        self,
        config: SimConfig | Mapping[str, Any] | str | Path | None = None,
        *,
        clock: VirtualClock | None = None,
    ):
        self.config = cfg = SimConfig.load(config)
        self._device = torch.device(cfg.torch_device)
        self._dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        self.model: DeviceModel = build_device_model(
            cfg.device, source=str(config) if isinstance(config, (str, Path)) else None
        )
        self._clock = clock if clock is not None else VirtualClock()
        self._shape = (cfg.tiles, cfg.rows, cfg.cols)

        def generator(offset: int) -> torch.Generator:
            return torch.Generator(device=self._device).manual_seed(cfg.seed * 3 + offset)

        self._gen_build, self._gen_program, self._gen_read = (
            generator(0),
            generator(1),
            generator(2),
        )
        dd: dict[str, Any] = dict(device=self._device, dtype=self._dtype)
        self.d2d = self.model.sample_d2d(self._shape, self._gen_build, **dd)
        self.state = self.model.initial_state(self.d2d, self._shape, self._gen_build, **dd)
        self.stuck_on, self.stuck_off = self._draw_faults()
        g_min, g_max = self.model.conductance_range()
        self._g_stuck_on = cfg.faults.g_stuck_on_s if cfg.faults.g_stuck_on_s is not None else g_max
        self._g_stuck_off = (
            cfg.faults.g_stuck_off_s if cfg.faults.g_stuck_off_s is not None else g_min
        )
        self._version = 0
        self._t_last_write = self._clock.now()
        self._g_cache: _ReadState | None = None
        self._scratch: dict[tuple[str, tuple[int, ...], torch.dtype], Tensor] = {}
        self._drift_onset_s = self.model.drift_onset_s()
        self._any_stuck = bool(self.stuck_on.any() or self.stuck_off.any())
        ceiling = self.model.conductance_ceiling(self.d2d)  # + margin for float32 rounding
        self._g_ceiling = None if ceiling is None else ceiling * (1.0 + 1e-4)

    # -- contract properties ----------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    @property
    def limits(self) -> Limits:
        return self.config.limits

    @property
    def clock(self) -> VirtualClock:
        return self._clock

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def torch_device(self) -> torch.device:
        return self._device

    def device_model(self) -> DeviceModel:
        return self.model

    @property
    def capabilities(self) -> Capabilities:
        t, r, c = self._shape
        return Capabilities(
            tiles=t,
            rows=r,
            cols=c,
            read_strategy="parallel",
            transpose_read=True,
            per_cell_amplitude=True,
            per_cell_width=True,
            min_pulse_width_s=self.limits.width_min_s,
            virtual_clock=True,
            device_model=self.model.name,
            bipolar=self.model.bipolar,
            conductance_range_s=self.model.conductance_range(),
            set_pulse=as_pulse(self.model.nominal_set_pulse),
            reset_pulse=as_pulse(self.model.nominal_reset_pulse),
        )

    # -- simulation-only access (tests, diagnostics; not part of the contract) --------
    def true_conductance(self) -> Tensor:
        """Noise-free conductance (S) now, with drift and stuck-at faults applied."""
        return self._conductance_now().clone()

    def sample_conductance(self, v: float | Tensor | None = None) -> Tensor:
        """One noisy realization of every cell's chord conductance (S) at voltage ``v``
        (per cell allowed; default ``read.v_read``), without advancing the clock: what an
        instrument reading the array at that bias sees. For the mock lab's chip model."""
        if v is None:
            g, std = self._read_state()
            return self._noisy(g, std)
        g = self.model.conductance(self.state, self.d2d, v, self._clock.now())
        if self._any_stuck:
            g = torch.where(
                self.stuck_on, torch.as_tensor(self._g_stuck_on, dtype=g.dtype, device=g.device), g
            )
            g = torch.where(
                self.stuck_off,
                torch.as_tensor(self._g_stuck_off, dtype=g.dtype, device=g.device),
                g,
            )
        return self._noisy(g, self._noise_std(g))

    def inject_stuck(self, on: Tensor | None = None, off: Tensor | None = None) -> None:
        """Mark cells stuck at the high (``on``) or low (``off``) conductance."""
        if on is not None:
            self.stuck_on = self.stuck_on | self.cell_mask(on)
        if off is not None:
            self.stuck_off = (self.stuck_off | self.cell_mask(off)) & ~self.stuck_on
        self._any_stuck = bool(self.stuck_on.any() or self.stuck_off.any())
        self._version += 1

    def snapshot(self) -> dict[str, Any]:
        """The configuration that reproduces this chip (for run metadata)."""
        import dataclasses

        cfg = dataclasses.asdict(self.config)
        cfg["device"] = self.model.config()
        return {"backend": "sim", "config": cfg, "clock_s": self._clock.now()}

    def state_dict(self) -> dict[str, Any]:
        """The chip as it stands (device state, stuck cells, the programming and read
        random streams, the clock): a training checkpoint, so that ``load_state_dict`` on a
        simulator built from the same configuration continues exactly from here."""
        import copy

        return {
            "state": copy.deepcopy(self.state),
            "stuck_on": self.stuck_on.clone(),
            "stuck_off": self.stuck_off.clone(),
            "gen_program": self._gen_program.get_state(),
            "gen_read": self._gen_read.get_state(),
            "clock_s": self._clock.now(),
            "t_last_write_s": self._t_last_write,
        }

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        """Restore ``state_dict()`` (of a simulator with this configuration); the clock
        moves forward to the saved time (it never runs backwards)."""
        import copy

        self.state = copy.deepcopy(sd["state"])
        self.stuck_on, self.stuck_off = sd["stuck_on"].clone(), sd["stuck_off"].clone()
        self._any_stuck = bool(self.stuck_on.any() or self.stuck_off.any())
        self._gen_program.set_state(sd["gen_program"])
        self._gen_read.set_state(sd["gen_read"])
        self._clock.advance(max(0.0, float(sd["clock_s"]) - self._clock.now()))
        self._t_last_write = float(sd["t_last_write_s"])
        self._version += 1
        self._g_cache = None

    def describe(self) -> dict[str, Any]:
        """The device model as configured (a name, a mapping or a fitted file, which is
        then a calibration file in use)."""
        dev = self.config.device
        files = {}
        if isinstance(dev, (str, Path)) and str(dev).endswith((".yaml", ".yml")):
            files["sim.device"] = str(Path(dev).expanduser().resolve())
        return {"device_model": dev, "calibration_files": files}

    # -- internals --------------------------------------------------------------------
    def _draw_faults(self) -> tuple[Tensor, Tensor]:
        f = self.config.faults
        u = torch.rand(self._shape, generator=self._gen_build, device=self._device)
        on = u < f.stuck_on_fraction
        off = (u >= f.stuck_on_fraction) & (u < f.stuck_on_fraction + f.stuck_off_fraction)
        return on, off

    def _conductance_now(self) -> Tensor:
        """Conductance at ``v_read`` now (drift and faults applied)."""
        return self._read_state()[0]

    def _read_state(self) -> tuple[Tensor, Tensor | None]:
        """Conductance now and the std of its read noise (see :meth:`_read_cache`)."""
        cache = self._read_cache()
        return cache.g, cache.std

    def _read_cache(self) -> _ReadState:
        """Conductance now, the std and variance of its read noise, computed together and
        cached until the state changes or, for drifting devices, until the clock has moved
        by ``drift_refresh_rel`` of the time since the last write (counted from at least
        the model's drift onset: a power law of max(age, onset) changes by at most
        nu * drift_refresh_rel either way)."""
        t = self._clock.now()
        cache = self._g_cache
        if cache is not None and cache.version == self._version:
            age = max(cache.t_s - self._t_last_write, self._drift_onset_s)
            if not self.model.drifts or t - cache.t_s <= self.config.read.drift_refresh_rel * age:
                return cache
        g = self.model.conductance(self.state, self.d2d, self.config.read.v_read, t)
        if self._any_stuck:
            g = torch.where(
                self.stuck_on, torch.as_tensor(self._g_stuck_on, dtype=g.dtype, device=g.device), g
            )
            g = torch.where(
                self.stuck_off,
                torch.as_tensor(self._g_stuck_off, dtype=g.dtype, device=g.device),
                g,
            )
        self._g_cache = _ReadState(self._version, t, g, self._noise_std(g))
        return self._g_cache

    def _noise_std(self, g: Tensor) -> Tensor | None:
        rp = self.config.read
        std: Tensor | float | None
        std = self.model.read_noise_std(g, self.d2d)
        extra: Tensor | float | None = None
        if rp.read_noise_rel > 0:
            extra = g * rp.read_noise_rel
        if rp.read_noise_abs_s > 0:
            extra = rp.read_noise_abs_s if extra is None else extra + rp.read_noise_abs_s
        if extra is not None:
            std = extra if std is None else torch.sqrt(std * std + extra * extra)
        if std is not None and not isinstance(std, Tensor):
            std = torch.full_like(g, float(std))
        return std

    def _noisy(self, g: Tensor, std: Tensor | None) -> Tensor:
        """One read-noise realization of ``g`` (clipped at 0 S)."""
        if std is None:
            return g
        xi = torch.randn(g.shape, generator=self._gen_read, device=g.device, dtype=g.dtype)
        return torch.addcmul(g, std, xi).clamp_min_(0.0)

    def _adc_range(self, n_lines: int) -> float:
        rp = self.config.read
        if rp.adc_range_a is not None:
            return rp.adc_range_a
        return n_lines * self.model.conductance_range()[1] * rp.dac_range_v

    # -- contract hooks ---------------------------------------------------------------
    def _mvm(self, v: Tensor, *, transpose: bool, tile: int | None, convert: bool = True) -> Tensor:
        """Column currents with read noise, converters and IR drop (``convert`` False: the
        analog currents, before output noise and ADC).

        Read noise: ``per_sample`` adds to each output current the exact output-referred
        Gaussian of independent per-device noise, N(0, sum_j v_j^2 sigma_jk^2): one matmul
        of squares and a (batch, cols) draw instead of a rows x cols draw per input. A
        ``per_read`` call shares one conductance realization across its batch, so it keeps
        the per-device draw, except for a batch of one input per tile without IR drop and
        with at most 1/16 of the cells within 6 std of 0 S: there the column shortcut has
        exactly the per-device draw's distribution, those few cells (where the clip at 0 S
        can bind) drawn on their own. In float32 on a CPU the draws are compiled: a
        ``per_sample`` read runs fused (:meth:`_add_noise_adc_fused`; its precision is
        stated there), a per-device draw in one pass (:meth:`_noisy_fused`).
        """
        rp = self.config.read
        cache = self._read_cache()

        def view(x: Tensor | None) -> Tensor | None:  # the tile and orientation read
            if x is None:
                return None
            x = x if tile is None else x[tile : tile + 1]
            return x.transpose(-1, -2) if transpose else x

        g = cache.g if tile is None else cache.g[tile : tile + 1]
        g = g.transpose(-1, -2) if transpose else g
        std = view(cache.std)
        fused_noise = std is not None and _compiled_operand(v) and _compiled_operand(g)
        fused = fused_noise and rp.noise_mode == "per_sample"
        v2_bf16 = None
        if fused and bf16_dot_products():
            v, v2_bf16 = self._dac_and_square(v)
        else:
            v = self._dac(v)
        column_noise = std is not None and (
            rp.noise_mode == "per_sample"
            or (v.shape[-2] == 1 and rp.ir_drop == "none" and cache.few_near_zero())
        )
        if column_noise:
            g_read = g
        elif fused_noise:  # per read on the CPU in float32: compiled, into a kept buffer
            g_read = self._noisy_fused(cache, tile)
            g_read = g_read.transpose(-1, -2) if transpose else g_read
        else:
            g_read = self._noisy(g, std)
        if rp.ir_drop == "exact":
            i = ir_drop.solve_exact(g_read, v, rp.r_wire_ohm).to(self._dtype)
        elif rp.ir_drop == "first_order":
            i = ir_drop.first_order(g_read, v, rp.r_wire_ohm, iterations=rp.ir_drop_iterations)
        else:
            i = _tile_matmul(v, g_read)
        if fused:  # the clip at 0 S is not modelled per sample
            var_sum = self._sample_variance(v, v2_bf16, cache, tile, transpose)
            i = self._add_noise_adc_fused(i.contiguous(), var_sum, g.shape[-2], convert=convert)
            self._clock.advance(v.shape[-2] * self.config.timing.t_read_s)
            return i
        if column_noise:
            assert std is not None
            var_free, low_cells = cache.column_noise_terms()
            if rp.noise_mode == "per_sample":  # the clip at 0 S is not modelled per sample
                var = view(cache.variance() if low_cells is not None else var_free)
            else:
                var = view(var_free)
            assert var is not None
            sigma = _tile_matmul(v * v, var).sqrt_()
            xi = torch.randn(i.shape, generator=self._gen_read, device=i.device, dtype=i.dtype)
            i.addcmul_(sigma, xi)
            if rp.noise_mode == "per_read" and low_cells is not None:
                self._add_clipped_cells(i, v, cache, low_cells, tile, transpose)
        if convert:
            self._convert_(i, g.shape[-2])
        self._clock.advance(v.shape[-2] * self.config.timing.t_read_s)
        return i

    def _convert_(
        self,
        i: Tensor,
        n_lines: int,
        affine: tuple[Tensor, Tensor | None] | None = None,
    ) -> Tensor:
        """In place on this read's own currents ``i``: the sense amplifier's output noise,
        then the ADC (full scale from ``n_lines`` driven lines), then the digital decoding
        ``affine`` (:meth:`Backend.mvm_pairs`'s ``output_affine``) in the ADC's pass where
        the compiled one runs."""
        rp = self.config.read
        if rp.output_noise_a > 0:
            i.add_(
                torch.randn(i.shape, generator=self._gen_read, device=i.device, dtype=i.dtype),
                alpha=rp.output_noise_a,
            )
        if rp.adc_bits is None and affine is None:
            return i
        if _compiled_operand(i) and i.is_contiguous():  # one pass instead of four (or six)
            from memhil.backends.sim import read_kernels

            grid = _grid(rp.adc_bits, self._adc_range(n_lines))
            if affine is None:
                read_kernels.quantize_in_place(i.view(-1).numpy(), *grid)
                return i
            scale, bias = affine
            rows = i.view(-1, i.shape[-1])
            row_scale = scale.detach().to(i).expand(*i.shape[:-1], 1).reshape(-1).contiguous()
            col_bias = (
                _EMPTY_F32 if bias is None else bias.detach().to(i).contiguous().view(-1).numpy()
            )
            read_kernels.quantize_affine_in_place(rows.numpy(), *grid, row_scale.numpy(), col_bias)
            return i
        if rp.adc_bits is not None:
            quantize_symmetric_(i, rp.adc_bits, self._adc_range(n_lines))
        return apply_output_affine(i, affine)

    def _dac(self, v: Tensor, *, check: bool = False) -> Tensor:
        """The read voltages ``v`` on the DAC grid, as a copy (``v`` itself for an ideal
        DAC); a float32 CPU ``v`` in one compiled pass into a buffer kept between reads.
        ``check``: the read-voltage limit checked first (raising before the grid is used),
        on the largest |V| that pass finds where it runs (no separate pass over ``v``)."""
        return self._encode_dac(v, None, check=check)[0]

    def _encode_dac(
        self, x: Tensor, encoding: InputEncoding | None, *, check: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """(:meth:`_dac` of the voltages ``x`` or, with an ``encoding``, of the inputs
        ``x`` times their gain; 1 / gain per input vector, (..., 1), or None): on a
        float32 CPU ``x`` the encoding runs in the DAC's compiled pass
        (:func:`~memhil.backends.sim.read_kernels.encode_quantize_rows`)."""
        rp = self.config.read
        if rp.dac_bits is None or not _compiled_operand(x):
            x, back = encode_inputs(x, encoding)
            if check:
                self.limits.check_read(x)
            if rp.dac_bits is None:
                return x, back
            return quantize_symmetric(x, rp.dac_bits, rp.dac_range_v), back
        from memhil.backends.sim import read_kernels

        x = x.contiguous()
        out = self._buffer("dac", tuple(x.shape), torch.float32)
        grid = _grid(rp.dac_bits, rp.dac_range_v)
        back = None
        if encoding is None:
            peak = read_kernels.quantize_into(x.view(-1).numpy(), *grid, out.view(-1).numpy())
        else:
            lines = x.shape[-1]
            back = torch.empty(*x.shape[:-1], 1, dtype=torch.float32)
            peak = read_kernels.encode_quantize_rows(
                x.view(-1, lines).numpy(),
                encoding.mode == "absmax",
                np.float32(encoding.x_max),
                np.float32(encoding.v_peak_v),
                np.float32(ABSMAX_FLOOR),
                *grid,
                out.view(-1, lines).numpy(),
                back.view(-1).numpy(),
            )
        if check and x.numel():
            self.limits.check_read_peak(float(peak))
        return out, back

    def mvm_pairs(
        self,
        v_rows: Tensor,
        plus_cols: slice,
        minus_cols: slice,
        *,
        tile: int | None = None,
        encoding: InputEncoding | None = None,
        output_affine: tuple[Tensor, Tensor | None] | None = None,
    ) -> Tensor:
        """Pair differences of column currents (:meth:`Backend.mvm_pairs`), sensed as
        ``read.pair_sensing`` says (:class:`~memhil.backends.sim.config.ReadPathConfig`).

        Without IR drop, where the difference is the same read, it is formed on the
        conductances, one product of half the columns: per read, the same per-device
        realization (G+ + std+ N) - (G- + std- N), each clipped at 0 S; per sample, the
        exact Gaussian of the two columns' independent noise, variance sum_j v_j^2 (std+^2
        + std-^2). ``differential`` sensing then adds one output-noise draw and one ADC per
        pair; ``per_column`` takes this route only with an ideal ADC and no output noise
        (otherwise each column is converted on its own and the full read subtracted). With
        IR drop the lines are solved together, then subtracted (and converted once, under
        ``differential``). On float32 CPU tensors the ``encoding`` runs in the DAC's pass
        and its 1 / gain, with ``output_affine``, in the ADC's."""
        rp = self.config.read
        differential = rp.pair_sensing == "differential"
        if not differential and (rp.adc_bits is not None or rp.output_noise_a > 0):
            return super().mvm_pairs(
                v_rows,
                plus_cols,
                minus_cols,
                tile=tile,
                encoding=encoding,
                output_affine=output_affine,
            )
        v = self._as_read_input(v_rows, self.shape[1], tile)
        plus, minus = plus_cols, minus_cols
        if rp.ir_drop != "none":
            v, back = encode_inputs(v, encoding)
            self.limits.check_read(v)
            i_lines = self._mvm(v, transpose=False, tile=tile, convert=False)
            i = self._convert_(i_lines[..., plus] - i_lines[..., minus], self.shape[1])
            i = apply_output_affine(i, _decoding(back, output_affine))
            return i[0] if tile is not None else i
        # the encoding and the limit check in the DAC's own pass
        v, back = self._encode_dac(v, encoding, check=True)
        output_affine = _decoding(back, output_affine)
        cache = self._read_cache()
        g = cache.g if tile is None else cache.g[tile : tile + 1]
        compiled = _compiled_operand(g) and not v.requires_grad
        # the pair kernel: a minus column per pair (not one shared reference column), step-1
        # slices, tiles read with a multiple of 4 rows (its draws' layout)
        lines = range(g.shape[-1])
        pair_kernel = (
            compiled
            and plus.step in (None, 1)
            and minus.step in (None, 1)
            and len(lines[plus]) == len(lines[minus])
            and (g.shape[0] * g.shape[1]) % 4 == 0
        )
        if cache.std is None or rp.noise_mode == "per_sample":
            i = _tile_matmul(v, g[..., plus] - g[..., minus])
        elif pair_kernel:
            i = _tile_matmul(v, self._noisy_pairs_fused(cache, tile, plus, minus))
        elif compiled:
            g_read = self._noisy_fused(cache, tile)
            i = _tile_matmul(v, g_read[..., plus] - g_read[..., minus])
        else:
            std = cache.std if tile is None else cache.std[tile : tile + 1]
            g_read = self._noisy(g, std)
            i = _tile_matmul(v, g_read[..., plus] - g_read[..., minus])
        if cache.std is not None and rp.noise_mode == "per_sample":
            var = cache.variance() if tile is None else cache.variance()[tile : tile + 1]
            var_sum = _tile_matmul(v * v, var[..., plus] + var[..., minus])
            if compiled:  # read noise, output noise and ADC in one pass
                i = self._add_noise_adc_fused(i, var_sum, self.shape[1])
            else:
                xi = torch.randn(i.shape, generator=self._gen_read, device=i.device, dtype=i.dtype)
                self._convert_(i.addcmul_(var_sum.sqrt_(), xi), self.shape[1])
            i = apply_output_affine(i, output_affine)
        else:
            self._convert_(i, self.shape[1], output_affine)
        self._clock.advance(v.shape[-2] * self.config.timing.t_read_s)
        return i[0] if tile is not None else i

    def _sample_variance(
        self,
        v: Tensor,
        v2_bf16: Tensor | None,
        cache: _ReadState,
        tile: int | None,
        transpose: bool,
    ) -> Tensor:
        """Each output's read-noise variance (S^2 V^2 = A^2), sum_j v_j^2 sigma_jk^2: from
        the bfloat16 squares ``v2_bf16`` (as int16 bits; precision in
        :meth:`_add_noise_adc_fused`) or, without them, in float32 from ``v``."""
        if v2_bf16 is not None:
            var_b = cache.variance_bf16(tile, transpose)
            out = self._buffer("var_sum", (*v.shape[:-1], var_b.shape[-1]), torch.bfloat16)
            return _tile_matmul(v2_bf16, var_b, out=out).view(torch.int16)
        var = cache.variance() if tile is None else cache.variance()[tile : tile + 1]
        return _tile_matmul(v * v, var.transpose(-1, -2) if transpose else var)

    def _dac_and_square(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """(v on the DAC grid, its squares rounded to bfloat16) in one compiled pass over a
        float32 CPU ``v`` (:func:`~memhil.backends.sim.read_kernels.dac_and_square`)."""
        from memhil.backends.sim import read_kernels

        rp = self.config.read
        v = v.contiguous()
        vq = self._buffer("dac", v.shape, torch.float32)
        v2 = self._buffer("dac_squares", v.shape, torch.int16)
        scale, levels, lsb = _grid(rp.dac_bits, rp.dac_range_v)
        read_kernels.dac_and_square(
            v.view(-1).numpy(), scale, levels, lsb, vq.view(-1).numpy(), v2.view(-1).numpy()
        )
        return vq, v2.view(torch.bfloat16)

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """A CPU scratch tensor of this shape kept between reads (a fresh 2 MiB tensor is
        a fresh mapping from the allocator, page-faulted on every call)."""
        key = (name, tuple(shape), dtype)
        buf = self._scratch.get(key)
        if buf is None:
            if len(self._scratch) >= 16:  # a few shapes in use at a time
                self._scratch.clear()
            buf = self._scratch[key] = torch.empty(shape, dtype=dtype)
        return buf

    def _philox_key(self) -> tuple[np.uint64, np.uint64]:
        """Key of one compiled draw: two 32-bit words from the read stream (so seeds and
        checkpoints reproduce it)."""
        k0, k1 = torch.randint(0, 2**32, (2,), generator=self._gen_read).tolist()
        return np.uint64(k0), np.uint64(k1)

    def _add_noise_adc_fused(
        self, i: Tensor, var_sum: Tensor, n_lines: int, *, convert: bool = True
    ) -> Tensor:
        """In place on float32 CPU currents ``i``: + N(0, var_sum + output_noise_a^2) per
        element (``var_sum`` float32, or bfloat16 as int16 bits), then the ADC, in one pass
        (:func:`~memhil.backends.sim.read_kernels.add_noise_adc`); ``convert`` False: the
        read noise alone (no output noise, no ADC).

        Precision against the exact per-sample draw: the normals are Philox4x32-10 +
        Box-Muller in float32 (|z| <= 5.77, a tail mass of 8e-9 missing, as torch's own
        float32 ``normal_``); where the CPU has bfloat16 dot products the variance product
        takes bfloat16 operands and result (float32 accumulation): each rounding is within
        2^-9 relative and all terms are positive, so the variance is within 0.6 % and the
        noise std within 0.3 % of exact.
        """
        from memhil.backends.sim import read_kernels

        rp = self.config.read
        adc_bits = rp.adc_bits if convert else None
        full_scale = self._adc_range(n_lines) if adc_bits is not None else 0.0
        scale, levels, lsb = _grid(adc_bits, full_scale)
        read_kernels.add_noise_adc(
            i.view(-1).numpy(),
            var_sum.contiguous().view(-1).numpy(),
            np.float32(rp.output_noise_a**2 if convert else 0.0),
            np.float32(-np.inf),
            scale,
            levels,
            lsb,
            *self._philox_key(),
        )
        return i

    def _noisy_fused(self, cache: _ReadState, tile: int | None) -> Tensor:
        """One per-device read-noise realization of the tile(s) read, G + std N(0, 1)
        clipped at 0 S, in one compiled pass on float32 CPU tensors into a kept buffer
        (the draws of :meth:`_add_noise_adc_fused`)."""
        from memhil.backends.sim import read_kernels

        assert cache.std is not None
        g = cache.g if tile is None else cache.g[tile : tile + 1]
        std = cache.std if tile is None else cache.std[tile : tile + 1]
        out = self._buffer("noisy_g", tuple(g.shape), torch.float32)
        read_kernels.noisy_cells(
            g.reshape(-1).numpy(),
            std.reshape(-1).numpy(),
            out.view(-1).numpy(),
            *self._philox_key(),
        )
        return out

    def _noisy_pairs_fused(
        self, cache: _ReadState, tile: int | None, plus: slice, minus: slice
    ) -> Tensor:
        """The pair differences of :meth:`_noisy_fused`'s realization, (G+ + std+ N) -
        (G- + std- N'), each cell clipped at 0 S, in one compiled pass on float32 CPU
        tensors into a kept buffer (:func:`~memhil.backends.sim.read_kernels.
        noisy_pair_difference`; the tiles read have a multiple of 4 rows): the same draws,
        without writing the full array's realization and subtracting it in a second pass."""
        from memhil.backends.sim import read_kernels

        assert cache.std is not None
        g = cache.g if tile is None else cache.g[tile : tile + 1]
        std = cache.std if tile is None else cache.std[tile : tile + 1]
        tiles, rows, cols = g.shape
        plus_cols, minus_cols = range(cols)[plus], range(cols)[minus]
        out = self._buffer("noisy_pairs", (tiles, rows, len(plus_cols)), torch.float32)
        read_kernels.noisy_pair_difference(
            g.contiguous().view(-1, cols).numpy(),
            std.contiguous().view(-1, cols).numpy(),
            plus_cols.start,
            minus_cols.start,
            out.view(-1, len(plus_cols)).numpy(),
            *self._philox_key(),
        )
        return out

    def _add_clipped_cells(
        self,
        i: Tensor,
        v: Tensor,
        cache: _ReadState,
        cells: Tensor,
        tile: int | None,
        transpose: bool,
    ) -> None:
        """Add to single-input currents ``i`` (tiles, 1, out) the read noise of the cells
        within 6 std of 0 S, each its own clipped draw: O(such cells), no array-sized op."""
        assert cache.std is not None
        t_i, r_i, c_i = cells.unbind(1)
        if tile is not None:
            keep = t_i == tile
            t_i, r_i, c_i = t_i[keep], r_i[keep], c_i[keep]
        if t_i.numel() == 0:
            return
        g_low = cache.g[t_i, r_i, c_i]
        dg = self._noisy(g_low, cache.std[t_i, r_i, c_i]) - g_low
        line_in, line_out = (c_i, r_i) if transpose else (r_i, c_i)
        t_out = torch.zeros_like(t_i) if tile is not None else t_i
        zero = torch.zeros_like(t_i)
        i.index_put_((t_out, zero, line_out), v[t_out, zero, line_in] * dg, accumulate=True)

    @property
    def read_voltage_v(self) -> float:
        return float(self.config.read.v_read)

    def _read_conductance(self, mask: Tensor | None, v_read_v: float | None = None) -> Tensor:
        if v_read_v is None or v_read_v == self.config.read.v_read:
            g = self._conductance_now()
            g = self._noisy(g, self._noise_std(g))
        else:  # the chord conductance at this bias (nonlinear I-V models differ)
            g = self.sample_conductance(v_read_v)
        rows_read = self._shape[0] * self._shape[1] if mask is None else int(mask.any(-1).sum())
        self._clock.advance(rows_read * self.config.timing.t_read_s)
        return g if mask is None else g[mask]

    def _pulse(
        self,
        selected: Tensor | None,
        v: Tensor,
        width_s: Tensor,
        count: Tensor,
        compliance_a: Tensor,
    ) -> None:
        shape = self._shape

        def cells(x: Tensor) -> Tensor:
            # Contiguous full-shape tensors: models reduce over them, and reductions over
            # stride-0 (expanded) views are an order of magnitude slower than a fill.
            return x if x.shape == shape and x.is_contiguous() else x.expand(shape).contiguous()

        v_req, w_req = v.to(self._dtype), width_s.to(self._dtype)
        n_req = count
        if selected is not None:  # the model leaves cells with v == 0 and count == 0 untouched
            v_req = torch.where(
                selected, v_req, torch.zeros((), dtype=v_req.dtype, device=v.device)
            )
            n_req = torch.where(
                selected, count, torch.zeros((), dtype=count.dtype, device=v.device)
            )
        gap = self.config.timing.pulse_gap_s
        if width_s.numel() == 1 and count.numel() == 1:
            duration = (float(width_s) + gap) * int(count)
        else:
            duration = float(((width_s + gap) * n_req).max())
        t_start = self._clock.now()
        # A source in compliance lowers its voltage so that |v| * G <= compliance. Skipped
        # when even the device's highest possible conductance cannot reach the compliance;
        # otherwise the train is applied pulse by pulse (a loop over pulse index only) with
        # the cap re-evaluated on the conductance each pulse starts from.
        ceiling = self._g_ceiling
        if ceiling is not None and self._any_stuck:
            ceiling = max(ceiling, self._g_stuck_on)
        if ceiling is not None and float(v.abs().max()) * ceiling <= float(compliance_a.min()):
            t_end = self._clock.advance(duration)  # the compliance cannot bind
            if self.model.uniform_requests and v_req.numel() == w_req.numel() == n_req.numel() == 1:
                self._step(v_req, w_req, n_req, None, t_end)  # one request for every cell
            else:
                self._step(cells(v_req), cells(w_req), cells(n_req), None, t_end)
            return
        c_req = compliance_a.to(self._dtype)
        if not self._any_stuck:  # G is the model's own: its fused train, where it has one
            new = self.model.compliance_train(
                self.state, self.d2d, v_req, w_req, n_req, c_req, self._gen_program
            )
            if new is not None:
                self.state = new
                self._version += 1
                self._t_last_write = self._clock.advance(duration)
                return
        v_cells, w_cells, n_cells, c_cells = cells(v_req), cells(w_req), cells(n_req), cells(c_req)
        n_max = int(n_cells.max())
        one = torch.ones((), dtype=n_cells.dtype, device=n_cells.device)
        zero = torch.zeros((), dtype=n_cells.dtype, device=n_cells.device)
        for k in range(n_max):
            g0 = self._conductance_now()
            v_cap = torch.where(
                v_cells.abs() * g0 > c_cells,
                v_cells.sign() * (c_cells / g0.clamp_min(1e-15)),
                v_cells,
            )
            t_k = t_start + duration * (k + 1) / n_max
            self._clock.advance(t_k - self._clock.now())
            self._step(v_cap, w_cells, torch.where(n_cells > k, one, zero), c_cells, t_k)

    def _step(
        self, v: Tensor, width_s: Tensor, count: Tensor, compliance_a: Tensor | None, t_end: float
    ) -> None:
        self.state = self.model.step(
            self.state,
            self.d2d,
            v,
            width_s,
            count,
            t_end,
            self._gen_program,
            compliance_a=compliance_a,
        )
        self._version += 1
        self._t_last_write = t_end
