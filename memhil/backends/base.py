"""The Backend contract: the only operations algorithms and protocols may use.

A backend owns ``tiles`` crossbar arrays of ``rows x cols`` cells. Every quantity at
this interface is SI: volts in, amperes out, siemens for conductance, seconds for
widths and time. ``Backend`` is a template: the public methods normalize arguments and
check the safety ``Limits`` *before* anything changes (no state, no instrument command),
then call the ``_``-prefixed hooks that each implementation provides.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from memhil.core.errors import LimitError
from memhil.core.limits import Limits, worst_case_energy_j
from memhil.core.types import PulseSpec, as_pulse


@runtime_checkable
class Clock(Protocol):
    """Time source of a backend: virtual (sim, mock lab) or wall time (bench)."""

    virtual: bool

    def now(self) -> float: ...

    def advance(self, seconds: float) -> float: ...

    def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; algorithms pick strategies from this, never from the class."""

    tiles: int
    rows: int
    cols: int
    read_strategy: str  # "parallel" (whole array per op), "line" (per row/col), "cell"
    transpose_read: bool
    per_cell_amplitude: bool
    per_cell_width: bool
    min_pulse_width_s: float
    virtual_clock: bool
    device_model: str
    bipolar: bool  # negative pulses depress gradually (False: SET-only + abrupt RESET, as PCM)
    conductance_range_s: tuple[float, float]  # nominal usable (g_min, g_max) for weights
    buffer_depth: int | None = None
    # nominal programming pulses (amplitude V, width s) for the devices, when known
    set_pulse: PulseSpec | None = None
    reset_pulse: PulseSpec | None = None

    def __post_init__(self) -> None:
        # (amplitude, width) pairs from device presets become the one pulse type
        for key in ("set_pulse", "reset_pulse"):
            object.__setattr__(self, key, as_pulse(getattr(self, key)))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


CellSelection = Tensor | Sequence[tuple[int, int, int]] | None


@dataclass(frozen=True)
class Reading:
    """One read of the selected cells: the voltage applied (V), the current measured (A)
    and the conductance (S), each ``(tiles, rows, cols)`` or 1-D for a selection, and
    ``floor_a``: a current below it is what an open circuit reads on this instrument."""

    v_v: Tensor
    i_a: Tensor
    g_s: Tensor
    floor_a: float = 0.0

    @property
    def at_floor(self) -> Tensor:
        """Per cell: the read is indistinguishable from an open circuit (no contact)."""
        return self.i_a.abs() < self.floor_a


@dataclass(frozen=True)
class PulseCounts:
    """Programming pulses a backend has applied since it was opened: device-pulses of
    positive (SET) and negative (RESET) polarity summed over the selected cells, ``pulse``
    calls, and the worst-case energy ``energy_j`` (J) they could deliver, |V| * I_cc *
    width * count summed over the selected cells (half-selected cells not counted)."""

    set_pulses: int = 0
    reset_pulses: int = 0
    calls: int = 0
    energy_j: float = 0.0

    @property
    def total(self) -> int:
        return self.set_pulses + self.reset_pulses


@runtime_checkable
class Site(Protocol):
    """Where a backend with a wafer prober touches down. Such a backend moves to its
    configured die/subsite and confirms contact (the prober's contact status) before its
    first pulse or read, and again after recovery or a chuck move; plans that step across
    a wafer (``Move``/``Contact``/``Separate``) go through this."""

    def load_map(self, dies: Sequence[tuple[int, int]], subsites: int = 1) -> None: ...

    def move(self, die: tuple[int, int], subsite: int = 0) -> None:
        """Separate if in contact, then step to the die/subsite (the new site)."""

    def contact(self) -> None:
        """Touch down at the site and confirm contact by the prober's status query."""

    def separate(self) -> None: ...


class Backend(ABC):
    """A set of crossbar tiles with read (``mvm``, ``mvm_t``, ``read_conductance``) and
    write (``pulse``) operations, a ``clock``, ``limits`` and ``capabilities``."""

    # -- properties every backend provides --------------------------------------------
    @property
    @abstractmethod
    def shape(self) -> tuple[int, int, int]:
        """(tiles, rows, cols)."""

    @property
    @abstractmethod
    def limits(self) -> Limits: ...

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @property
    @abstractmethod
    def clock(self) -> Clock: ...

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def torch_device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def read_voltage_v(self) -> float:
        """The read voltage (V) of a read that names none."""
        return 0.5 * float(self.limits.v_read_max_v)

    @property
    def read_floor_a(self) -> float:
        """Currents (A) below this are what an open circuit reads (0: none, an ideal
        ammeter or a model without contacts)."""
        return 0.0

    @property
    def site(self) -> Site | None:
        """The wafer site control of a bench with a prober; None without one."""
        return None

    @property
    def tally(self) -> PulseCounts:
        """Every pulse applied through ``pulse`` so far (counted here, once, for every
        backend): SET and RESET device-pulses, calls and worst-case energy."""
        sums, calls = getattr(self, "_pulse_sums", None), getattr(self, "_pulse_calls", 0)
        if sums is None:
            return PulseCounts()
        n_set, n_reset, energy_j = sums.tolist()
        return PulseCounts(int(n_set), int(n_reset), calls, float(energy_j))

    def describe(self) -> dict[str, Any]:
        """What a run records about this backend (run metadata, plain data):
        ``device_model`` and ``calibration_files`` (use -> absolute path of each file a
        device description was loaded from); a bench adds its ``station`` snapshot and
        ``station_config``."""
        return {"device_model": self.capabilities.device_model, "calibration_files": {}}

    def device_model(self) -> Any:
        """The nominal device model the cells follow (the ``DeviceModel`` interface of
        ``memhil.devices``: conductance, step, nominal pulses), so algorithms
        get device physics through the backend; None where the backend names none."""
        return None

    # -- reads ------------------------------------------------------------------------
    def mvm(
        self,
        v_rows: Tensor,
        *,
        tile: int | None = None,
        encoding: InputEncoding | None = None,
    ) -> Tensor:
        """Column currents (A) for read voltages ``v_rows`` (V) applied to the rows.

        ``v_rows`` is ``(batch, rows)`` or ``(tiles, batch, rows)``; the result is
        ``(tiles, batch, cols)``, or ``(batch, cols)`` when ``tile`` selects one tile.
        With an ``encoding`` (:class:`InputEncoding`) ``v_rows`` are inputs in any unit,
        driven as ``v_rows * gain`` per input vector, and the currents come back times
        1 / gain (A per unit of input).
        """
        v_rows, back = encode_inputs(v_rows, encoding)
        v = self._as_read_input(v_rows, self.shape[1], tile)
        self.limits.check_read(v)
        out = self._mvm(v, transpose=False, tile=tile)
        if back is not None:
            out = out.mul_(back.to(out))
        return out[0] if tile is not None else out

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
        """Differences of column currents (A), ``i[..., plus_cols] - i[..., minus_cols]``
        (column slices of equal length, or a one-column ``minus_cols`` shared by all), for
        read voltages ``v_rows`` (or inputs and their ``encoding``) as in :meth:`mvm`: what
        a differential-pair weight reads. ``output_affine`` = (scale, bias): the digital
        decoding after the converters, the result being ``i * scale + bias`` (scale
        broadcast over the pairs, e.g. ``(batch, 1)``; bias ``(pairs,)`` or None) in the
        caller's units. Here one ``mvm`` and a subtraction, every column through its own
        converter; a backend may form the difference before reading where that is exactly
        the same read (the simulator with an ideal ADC), and apply the encoding and the
        decoding in its converters' passes."""
        i = self.mvm(v_rows, tile=tile, encoding=encoding)
        return apply_output_affine(i[..., plus_cols] - i[..., minus_cols], output_affine)

    def mvm_t(self, v_cols: Tensor, *, tile: int | None = None) -> Tensor:
        """Row currents (A) for read voltages ``v_cols`` (V) on the columns (transpose read)."""
        v = self._as_read_input(v_cols, self.shape[2], tile)
        self.limits.check_read(v)
        out = self._mvm(v, transpose=True, tile=tile)
        return out[0] if tile is not None else out

    def read_conductance(
        self, cells: CellSelection = None, *, v_read_v: float | None = None
    ) -> Tensor:
        """Measured conductance (S) at the read voltage ``v_read_v`` (V; default
        ``read_voltage_v``), applied on the wire: ``(tiles, rows, cols)`` for all cells, or
        a 1-D tensor of the selected cells in row-major mask order."""
        mask = None if cells is None else self.cell_mask(cells)
        if v_read_v is None:
            return self._read_conductance(mask)
        return self._read_conductance(mask, v_read_v=self._checked_v_read(v_read_v))

    def read(self, cells: CellSelection = None, *, v_read_v: float | None = None) -> Reading:
        """Like ``read_conductance``, with the voltage applied and the current measured
        per cell (what a run stores)."""
        mask = None if cells is None else self.cell_mask(cells)
        return self._read(mask, None if v_read_v is None else self._checked_v_read(v_read_v))

    def _checked_v_read(self, v_read_v: float) -> float:
        v = float(v_read_v)
        self.limits.check_read(torch.tensor([v], dtype=torch.float64))
        if v == 0:  # a conductance is i / v
            raise ValueError("read voltage v_read_v must be non-zero, got 0 V")
        return v

    # -- writes -----------------------------------------------------------------------
    def pulse(
        self,
        cells: CellSelection,
        amplitude: float | Tensor,
        width_s: float | Tensor,
        count: int | Tensor = 1,
        *,
        compliance_a: float | Tensor | None = None,
    ) -> None:
        """Apply ``count`` programming pulses to the selected cells.

        ``amplitude`` (V; sign = polarity, positive SETs), ``width_s`` (s), ``count`` and
        ``compliance_a`` (A; default ``limits.compliance_default_a``) are scalars or
        per-cell tensors broadcastable to ``(tiles, rows, cols)``. ``cells`` is None (all),
        a boolean mask broadcastable to the array, or a list of (tile, row, col). Every
        limit is checked for every selected cell before any cell is touched; where one
        request is sent as several pulses, the energy each cell receives over all of them,
        half-selected cells included, is checked too.
        """
        mask = None if cells is None else self.cell_mask(cells)
        if mask is not None and not bool(mask.any()):
            return
        # requests stay float64 up to the hook: a float32-rounded amplitude or compliance
        # can land above a limit it was asked to equal, and widths set the clock
        v = self._as_cell_tensor(amplitude, torch.float64, "amplitude")
        w = self._as_cell_tensor(width_s, torch.float64, "width_s")
        n = self._as_cell_tensor(count, None, "count")
        if n.dtype == torch.bool or n.is_complex():
            raise ValueError(f"pulse count must be an integer, got {count!r}")
        if n.is_floating_point():
            sel = n if mask is None or n.numel() == 1 else n.expand(mask.shape)[mask]
            if not bool((sel == sel.round()).all()):  # NaN and inf too
                raise ValueError(f"pulse count must be an integer, got {count!r}")
            n_max = float(sel.max()) if sel.numel() else 0.0
            if n_max > self.limits.count_max:  # before the int64 cast can wrap it
                raise LimitError("pulse count", n_max, self.limits.count_max, field="count")
        n = n.to(torch.int64)
        if compliance_a is None:
            compliance_a = self.limits.compliance_default_a
        c = self._as_cell_tensor(compliance_a, torch.float64, "compliance_a")
        self.limits.check_pulse(v, w, n, c, mask)
        self._pulse(mask, v, w, n, c)
        self._count_pulses(mask, v, w, n, c)

    def _count_pulses(
        self, mask: Tensor | None, v: Tensor, w: Tensor, n: Tensor, c: Tensor
    ) -> None:
        """Add a request that was applied to ``tally`` (on the backend's torch device:
        no host synchronization per pulse)."""
        cells = math.prod(self.shape)

        def total(x: Tensor) -> Tensor:
            # broadcasting repeats every element of x cells / x.numel() times: summing x
            # and scaling is exact and never touches a full-array (stride-0) view
            return x.sum() * (cells // x.numel())

        n_sel = n.to(torch.float64) if mask is None else torch.where(mask, n, 0).to(torch.float64)
        sums = torch.stack(
            [
                total(n_sel * (v > 0)),
                total(n_sel * (v < 0)),
                total(worst_case_energy_j(v.abs(), c, w, n_sel)),
            ]
        )
        prev = getattr(self, "_pulse_sums", None)
        self._pulse_sums = sums if prev is None else prev + sums
        self._pulse_calls = getattr(self, "_pulse_calls", 0) + 1

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass (virtual time in sim and mock, real time on a bench)."""
        self.clock.sleep(seconds)

    def safe_state(self) -> Any:
        """Leave the hardware safe (outputs off, relays open, prober separated) and keep
        it open: the end of every run. A no-op where there is no hardware."""
        return None

    def close(self) -> None:
        """Leave the hardware in its safe state; a no-op where there is none."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- helpers shared by implementations --------------------------------------------
    def cell_mask(self, cells: CellSelection) -> Tensor:
        """A boolean ``(tiles, rows, cols)`` mask from a mask or a list of (tile,row,col).

        Indices must be integers (an integral float such as 2.0 is accepted); an empty
        list, a cell that is not a 3-tuple or a fractional index is refused."""
        shape = self.shape
        if isinstance(cells, Tensor) and cells.dtype == torch.bool:
            try:
                return torch.broadcast_to(cells.to(self.torch_device), shape)
            except RuntimeError:
                raise ValueError(
                    f"cell mask of shape {tuple(cells.shape)} does not broadcast "
                    f"to the array shape {shape}"
                ) from None
        try:
            raw = torch.as_tensor(cells)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(
                f"cells must be a boolean mask or a list of (tile, row, col) integer triples: {exc}"
            ) from None
        if raw.dtype == torch.int64 and raw.dim() == 2 and raw.shape[1] == 3 and raw.numel():
            # the everyday case (integer triples) in one bounds test instead of six: a
            # protocol names its cells once per pulse and per read
            out = (raw < 0) | (raw >= torch.tensor(shape, device=raw.device))
            if not bool(out.any()):
                mask = torch.zeros(shape, dtype=torch.bool, device=self.torch_device)
                raw = raw.to(self.torch_device)
                mask[raw[:, 0], raw[:, 1], raw[:, 2]] = True
                return mask
        if raw.numel() == 0:
            raise ValueError(
                "cells is an empty list: name at least one (tile, row, col), "
                "or pass None for every cell"
            )
        if raw.dim() == 1 and raw.numel() == 3:
            raw = raw.unsqueeze(0)  # one cell given as a bare (tile, row, col)
        if raw.dim() != 2 or raw.shape[1] != 3:
            raise ValueError(
                f"cells must be (tile, row, col) triples; got shape "
                f"{tuple(raw.shape)} (a (row, col) pair names no tile)"
            )
        if raw.dtype == torch.bool or raw.is_complex():
            raise ValueError(f"cell indices must be integers, got {raw.dtype}")
        if raw.is_floating_point():
            bad = ~(raw == raw.round()).all(1)
            if bool(bad.any()):
                k = int(bad.nonzero()[0])
                raise ValueError(
                    f"cell indices must be integers, got cell {tuple(raw[k].tolist())}"
                )
        for axis, (name, size) in enumerate(zip(("tile", "row", "col"), shape)):
            bad = (raw[:, axis] < 0) | (raw[:, axis] >= size)
            if bool(bad.any()):
                raise IndexError(
                    f"{name} index {raw[bad][0, axis].item()} out of range 0..{size - 1}"
                )
        idx = raw.to(torch.int64)
        mask = torch.zeros(shape, dtype=torch.bool, device=self.torch_device)
        mask[idx[:, 0], idx[:, 1], idx[:, 2]] = True
        return mask

    def _as_cell_tensor(self, x, dtype: torch.dtype | None, name: str) -> Tensor:
        try:
            t = torch.as_tensor(x, dtype=dtype, device=self.torch_device)
        except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
            raise ValueError(
                f"{name} must be a number or a tensor broadcastable to the "
                f"array shape {self.shape}, got {x!r}: {exc}"
            ) from None
        # the broadcast rule on the shapes as Python tuples: torch.broadcast_shapes is
        # ~30 us of Python per call, and a protocol sends one request per pulse
        if t.dim() > len(self.shape) or any(
            a != 1 and a != b for a, b in zip(reversed(t.shape), reversed(self.shape))
        ):
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} does not broadcast to the array "
                f"shape {self.shape}"
            )
        return t

    def _as_read_input(self, v: Tensor, n_lines: int, tile: int | None) -> Tensor:
        v = torch.as_tensor(v, dtype=self.dtype, device=self.torch_device)
        tiles = self.shape[0]
        if tile is not None and not 0 <= tile < tiles:
            raise IndexError(f"tile {tile} out of range 0..{tiles - 1}")
        if v.shape[-1] != n_lines:
            raise ValueError(f"read input has {v.shape[-1]} lines, the array has {n_lines}")
        if v.dim() == 1:
            v = v.unsqueeze(0)
        if v.dim() == 2:
            v = v.unsqueeze(0) if tile is not None else v.unsqueeze(0).expand(tiles, *v.shape)
        elif v.dim() == 3:
            want = 1 if tile is not None else tiles
            if v.shape[0] != want:
                raise ValueError(f"read input has {v.shape[0]} tiles, expected {want}")
        else:
            raise ValueError(f"read input must be 1-D, 2-D or 3-D, got shape {tuple(v.shape)}")
        if v.shape[1] == 0:
            raise ValueError(
                f"read input has an empty batch (shape {tuple(v.shape)}): give at "
                f"least one input vector"
            )
        return v

    # -- implementation hooks ---------------------------------------------------------
    @abstractmethod
    def _mvm(self, v: Tensor, *, transpose: bool, tile: int | None) -> Tensor:
        """``v`` is (tiles_or_1, batch, lines) and already within limits; return currents."""

    @abstractmethod
    def _read_conductance(self, mask: Tensor | None, v_read_v: float | None = None) -> Tensor:
        """Conductances at ``v_read_v`` (None: ``read_voltage_v``), already within limits."""

    def _read(self, mask: Tensor | None, v_read_v: float | None) -> Reading:
        """A backend whose instrument measures currents overrides this; the default is
        the conductance hook, with the current a conductance implies (i = g * v)."""
        g = (
            self._read_conductance(mask)
            if v_read_v is None
            else self._read_conductance(mask, v_read_v=v_read_v)
        )
        v = self.read_voltage_v if v_read_v is None else v_read_v
        return Reading(torch.full_like(g, v), g * v, g, self.read_floor_a)

    @abstractmethod
    def _pulse(
        self,
        selected: Tensor | None,
        v: Tensor,
        width_s: Tensor,
        count: Tensor,
        compliance_a: Tensor,
    ) -> None:
        """Pulse the ``selected`` cells (None: all); limits already checked.

        ``v``, ``width_s``, ``count`` (int64) and ``compliance_a`` broadcast to the array
        (often 0-dim); cells outside ``selected`` must not change.
        """


def apply_output_affine(i: Tensor, output_affine: tuple[Tensor, Tensor | None] | None) -> Tensor:
    """``i * scale + bias`` for ``output_affine`` = (scale, bias) (bias None: none), in
    place on this read's own currents ``i``: a product, then a sum."""
    if output_affine is None:
        return i
    scale, bias = output_affine
    i = i.mul_(scale.to(i))
    return i if bias is None else i.add_(bias.to(i))


#: The smallest largest-|x| an ``absmax`` encoding divides by: an all-zero input reads 0 V.
ABSMAX_FLOOR = 1e-12


@dataclass(frozen=True)
class InputEncoding:
    """The digital periphery before the DAC: each input vector x (any unit) is driven as
    the voltages x * gain, with gain = v_peak_v / max|x| (``absmax``: every input spans
    the DAC's range, aihwkit's noise management) or v_peak_v / x_max (``fixed``); the
    read's result is multiplied by 1 / gain, so it stays linear in x."""

    mode: Literal["absmax", "fixed"]
    v_peak_v: float
    x_max: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in ("absmax", "fixed"):
            raise ValueError(f"InputEncoding mode must be 'absmax' or 'fixed', got {self.mode!r}")
        for name in ("v_peak_v", "x_max"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"InputEncoding {name} must be finite and > 0, got {value}")

    def scales(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(gain, 1 / gain as max|x| / v_peak_v) of every input vector, each of shape
        ``x.shape[:-1] + (1,)``; max|x| as max(max x, -min x) (no |x| copy), at least
        ``ABSMAX_FLOOR``, a NaN input making its own NaN (then refused by the read-voltage
        check). No gradient flows through them."""
        if self.mode == "absmax":
            xd = x.detach()
            alpha = torch.maximum(xd.amax(-1, keepdim=True), xd.amin(-1, keepdim=True).neg_())
            alpha = alpha.clamp_min_(ABSMAX_FLOOR)
        else:
            alpha = torch.full_like(x[..., :1], self.x_max, requires_grad=False)
        return self.v_peak_v / alpha, alpha / self.v_peak_v


def encode_inputs(x: Tensor, encoding: InputEncoding | None) -> tuple[Tensor, Tensor | None]:
    """(the read voltages ``x * gain``, 1 / gain per input vector) of ``encoding``, or
    (``x``, None) without one."""
    if encoding is None:
        return x, None
    gain, back = encoding.scales(x)
    return x * gain, back
