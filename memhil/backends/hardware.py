"""HardwareBackend: the Backend contract over a Station of instruments.

The same algorithm code that runs on ``SimBackend`` runs here. Two strategies, the
fastest the bench supports (``capabilities.read_strategy`` says which was chosen):

``parallel`` (an ``ArrayIO`` board): an MVM input vector is one line-parallel read (rows
  driven, columns at virtual ground, every line driven so no sneak paths); a full
  conductance map is ``rows`` one-hot reads; pulses use the board's V/2 scheme, one
  command per group of cells sharing amplitude, width and count.
``cell`` (two SMU channels + a switch matrix with a ground port): a cell is read with
  the drive channel on its row at ``v_read``, the sense channel holding its column at
  0 V and measuring, every other line grounded (exact: no sneak path carries current
  into the sense column); an MVM is computed on the host from a cell-wise conductance
  map (no analog parallelism on such a bench); a pulse routes drive -> row, sense (0 V)
  -> column and, with a third ``bias`` channel, every other line to V/2 (the V/2 scheme:
  half-selected cells see V/2); without one the other lines float, and sneak paths can
  then disturb unselected cells of a passive array.

Reads apply the requested read voltage (``read(cells, v_read_v=...)``; default ``v_read``)
and return the current the instrument measured. With a prober the backend touches down
at its site (``die``/``subsite``, default where the chuck stands) and confirms contact by
the prober's status query before its first pulse or read, and again after a recovery or
any chuck move (a safe state separates the needles).

Recovery: idempotent reads are retried a bounded number of times after resynchronizing
every instrument (clear, drain stale replies, verify, reconnect if needed); a pulse is
never retried blindly: on any failure the station goes to its safe state and the error
is raised, and the caller (program-and-verify) reads back before deciding what to do.
The safe state is confirmed by queries (``SafeStateReport``); when it cannot be, the
backend latches a fault: nothing more is sent (``FaultLatchedError``) until ``recover()``
has resynchronized every instrument and confirmed the safe state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torch import Tensor

from memhil.backends.base import Backend, Capabilities, Clock, Reading
from memhil.backends.clock import WallClock
from memhil.core.errors import LimitError
from memhil.core.limits import Limits, row_column_blocks, v_half_energy_j, worst_case_energy_j
from memhil.core.types import as_pulse

log = logging.getLogger(__name__)
T = TypeVar("T")

Strategy = Literal["auto", "parallel", "cell"]


class HardwareError(RuntimeError):
    """An instrument operation failed (after bounded retries for reads). ``safe_state``:
    the station's safe-state report (``confirmed`` or not) taken before this was raised;
    ``cause``: the failure of the operation itself (the first cause)."""

    def __init__(
        self,
        message: str,
        *,
        cause: BaseException | None = None,
        safe_state: Any = None,
        summary: str | None = None,
    ):
        super().__init__(message)
        self.cause = cause
        self.safe_state = safe_state
        #: the operation that failed and why, without the safe state that followed
        self.summary = summary if summary is not None else message


class FaultLatchedError(HardwareError):
    """Refused without sending anything: an earlier safe state was not confirmed, so the
    bench state is unknown until ``HardwareBackend.recover()`` succeeds."""


# Failures that a resync can cure: timeouts, broken/dropped connections, garbled replies.
# A LimitError (a guard refusal) is never one: nothing was sent, and retrying cannot help.
def _transient(exc: BaseException) -> bool:
    if isinstance(exc, LimitError):
        return False
    from pyvisa.errors import VisaIOError

    try:
        from serial import SerialException
    except ImportError:  # pragma: no cover - pyserial is a dependency
        SerialException = OSError  # fallback, isinstance only
    return isinstance(exc, (VisaIOError, SerialException, OSError, ValueError, TimeoutError))


class HardwareBackend(Backend):
    """The Backend contract over ``station`` (a ``memhil.instruments.station.Station``).

    ``clock``: the mock lab's virtual clock, or wall time on a bench (default).
    ``strategy``: "auto" picks ``parallel`` with an array board, else ``cell``.
    ``drive``/``sense``: SMU channel keys for the cell strategy (default: the first two
    entries of ``wiring.smu_ports``). ``nplc`` sets the SMUs' integration time.
    ``die``/``subsite``: where a station with a prober touches down (default: where the
    chuck stands). ``read_floor_a``: reads below this current (A) are what an open circuit
    reads on this bench (flagged by protocols that expect conduction); the default sits
    above SMU and ADC open-circuit noise and far below any formed cell at a read bias.
    ``on_close``: called once by ``close`` after the safe state, to release what was opened
    for this backend (its station's connections, a mock lab); the backend is then closed
    for good and a further ``close`` does nothing.
    """

    _outputs_on: bool | None  # cell strategy: SMU outputs as last switched (None: unknown)

    def __init__(
        self,
        station: Any,
        *,
        clock: Clock | None = None,
        strategy: Strategy = "auto",
        v_read: float | None = None,
        drive: str | None = None,
        sense: str | None = None,
        bias: str | None = None,
        nplc: float = 0.01,
        retries: int = 2,
        die: tuple[int, int] | None = None,
        subsite: int = 0,
        read_floor_a: float = 1e-10,
        on_close: Callable[[], None] | None = None,
    ):
        self.station = station
        self._on_close = on_close
        self._closed = False
        cfg = station.config
        self._shape = (1, cfg.chip.rows, cfg.chip.cols)
        self._clock = clock if clock is not None else WallClock()
        self._retries = int(retries)
        if strategy == "auto":
            strategy = "parallel" if station.array is not None else "cell"
        self.strategy = strategy
        self._limits: Limits = station.limits  # raised below to a slower pulse path's floor
        self.v_read = float(v_read) if v_read is not None else 0.5 * station.limits.v_read_max_v
        self.limits.check_read(torch.tensor([self.v_read]))
        self._read_floor_a = float(read_floor_a)
        if not self._read_floor_a >= 0:
            raise ValueError(f"read_floor_a must be >= 0 A, got {read_floor_a!r}")
        self._site = (
            None
            if station.prober is None
            else _ProberSite(
                self, None if die is None else (int(die[0]), int(die[1])), int(subsite)
            )
        )
        self._g_range, self._set_pulse, self._reset_pulse = _device_description(cfg.chip)
        self.transactions = 0  # instrument operations issued (for reports and benchmarks)
        self.fault: str | None = None  # latched: why the safe state was not confirmed
        self.last_safe_state: Any = None  # the last SafeStateReport (or SafeStateError)
        if strategy == "parallel":
            if station.array is None:
                raise ValueError("strategy 'parallel' needs an array board (role 'array')")
            self._array = station.array
        elif strategy == "cell":
            self._setup_cell_strategy(drive, sense, bias, nplc)
            from memhil.instruments.station import pulse_width_floor

            self._limits, self._set_pulse, self._reset_pulse = cell_path_limits(
                self._limits,
                pulse_width_floor(cfg, self._drive_key),
                self._set_pulse,
                self._reset_pulse,
            )
        else:
            raise ValueError(f"unknown strategy {strategy!r} (auto, parallel, cell)")
        _check_nominal_pulses(self._set_pulse, self._reset_pulse, self._limits, cfg.source)

    # -- contract properties ------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def read_voltage_v(self) -> float:
        return self.v_read

    @property
    def read_floor_a(self) -> float:
        return self._read_floor_a

    @property
    def site(self) -> _ProberSite | None:
        return self._site

    def _ensure_contact(self) -> None:
        if self._site is not None:
            self._site.ensure()

    @property
    def capabilities(self) -> Capabilities:
        _, r, c = self._shape
        return Capabilities(
            tiles=1,
            rows=r,
            cols=c,
            read_strategy=self.strategy,
            transpose_read=True,
            per_cell_amplitude=True,
            per_cell_width=True,
            min_pulse_width_s=self.limits.width_min_s,
            virtual_clock=bool(self._clock.virtual),
            device_model=str(self.station.config.chip.device or "unknown"),
            bipolar=self._bipolar(),
            conductance_range_s=self._g_range,
            set_pulse=as_pulse(self._set_pulse),
            reset_pulse=as_pulse(self._reset_pulse),
        )

    def device_model(self) -> Any:
        """The simulator model the station's ``chip.device`` names (its nominal physics,
        e.g. for an algorithm's inverse); None when the chip names no known model."""
        if self.station.config.chip.device is None:
            return None
        from memhil.devices import build_device_model

        return build_device_model(self.station.config.chip.device)

    def _bipolar(self) -> bool:
        return _device_bipolar(self.station.config.chip.device, self.station.config.source)

    def describe(self) -> dict[str, Any]:
        """The station's snapshot and configuration, the chip's device description and the
        device file it names (``chip.device``, relative to the station file)."""
        cfg = self.station.config
        try:
            snapshot = self.station.snapshot()
        except Exception as exc:  # noqa: BLE001 - a snapshot must not stop a run
            snapshot = {"error": repr(exc)}
        files = {}
        if _is_device_file(cfg.chip.device):
            files["chip.device"] = str(_relative_to(cfg.source, cfg.chip.device))
        return {
            "device_model": cfg.chip.device,
            "calibration_files": files,
            "station": snapshot,
            "station_config": cfg.to_dict(),
        }

    def safe_state(self) -> Any:
        """Leave the station safe (outputs off, relays open, prober separated) and keep it
        open: returns the confirmed ``SafeStateReport`` or raises ``SafeStateError``
        (fault latched)."""
        return self._safe_state()

    def close(self) -> Any:
        """Leave the station safe (``safe_state``), then release what ``on_close``
        releases; the safe state's error, if any, is the one raised."""
        if self._closed:
            return self.last_safe_state
        try:
            report = self._safe_state()
        except BaseException:
            self._release(quiet=True)
            raise
        self._release(quiet=False)
        return report

    def _release(self, quiet: bool) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is None:
            return
        self._closed = True
        try:
            on_close()
        except Exception:
            if not quiet:
                raise
            log.exception("releasing the station after a failed safe state")

    # -- recovery ---------------------------------------------------------------------------
    def _safe_state(self) -> Any:
        """The station's safe state, confirmed by queries; an unconfirmed one latches the
        fault (and the ``SafeStateError`` is raised)."""
        from memhil.instruments.guard import SafeStateError

        try:
            report = self.station.safe_state()
        except SafeStateError as exc:
            self.last_safe_state = exc.report
            self.fault = f"safe state not confirmed: {exc.report}"
            raise
        self.last_safe_state = report
        return report

    def recover(self) -> Any:
        """Clear a latched fault: resynchronize every instrument (re-opening lost
        connections) and confirm the safe state; returns the ``SafeStateReport``. Raises
        (the fault stays latched) if any instrument cannot be resynced or confirmed."""
        self._resync_all(strict=True)
        report = self._safe_state()
        if self.strategy == "cell":
            self._outputs_on = None  # unknown to the cache: the next switch is sent
        self.fault = None
        return report

    def _check_fault(self, what: str) -> None:
        if self.fault is not None:
            raise FaultLatchedError(
                f"{what} refused, nothing sent: {self.fault}; call "
                f"recover() once the bench is reachable"
            )

    def _resync_all(self, strict: bool = False) -> None:
        """Resync every instrument (the prober too); every one is attempted. The first
        failure is raised after all were tried (a dead instrument fails fast: see
        ``session.PROBE_TIMEOUT_S``)."""
        if self._site is not None:
            self._site.confirmed = None  # re-confirm contact before the next operation
        st = self.station
        first: BaseException | None = None
        for inst in [*st.smus.values(), st.matrix, st.array, st.prober]:
            if inst is not None and hasattr(inst, "resync"):
                try:
                    inst.resync()
                except NotImplementedError:
                    if strict:
                        raise
                except Exception as exc:  # noqa: BLE001 - the others are still attempted
                    log.error("resync of %s failed: %s", getattr(inst, "name", inst), exc)
                    first = first or exc
        if first is not None:
            raise first

    def _read_op(self, what: str, fn: Callable[[], T]) -> T:
        """Run an idempotent read; on a transient failure resync and retry (bounded)."""
        self._check_fault(what)
        for attempt in range(self._retries + 1):
            try:
                return fn()
            except LimitError:
                raise  # a refusal, not a communication fault: no resync, no retry
            except Exception as exc:  # noqa: BLE001 - classified below, never swallowed
                if not _transient(exc) or attempt == self._retries:
                    self._fail(f"{what} failed after {attempt + 1} attempt(s)", exc)
                log.warning(
                    "%s: %s; resynchronizing and retrying (%d/%d)",
                    what,
                    exc,
                    attempt + 1,
                    self._retries,
                )
                try:
                    self._resync_all()
                except Exception as resync_exc:  # noqa: BLE001 - reported with the first error
                    self._fail(
                        f"{what} failed, and the resync failed ({type(resync_exc).__name__}: "
                        f"{resync_exc})",
                        exc,
                    )
        raise AssertionError("unreachable")

    def _write_op(self, what: str, fn: Callable[[], T]) -> T:
        """Run a state-changing operation once; any failure ends in the safe state."""
        self._check_fault(what)
        try:
            return fn()
        except LimitError:
            # a refusal part-way may leave a source on: make the station safe, keep the refusal
            self.station.safe_state()
            raise
        except Exception as exc:  # noqa: BLE001 - any failure ends in the safe state
            self._fail(f"{what} failed (not retried: read back before pulsing again)", exc)
        raise AssertionError("unreachable")

    def _fail(self, message: str, exc: BaseException) -> None:
        """Resync, enter the safe state (confirmed by queries, else the fault latches) and
        raise ``HardwareError`` naming the first cause and the safe state."""
        from memhil.instruments.guard import SafeStateError

        first = exc.cause if isinstance(exc, HardwareError) and exc.cause is not None else exc
        try:
            self._resync_all()
        except Exception:  # logged; the original error is what the user needs
            log.warning("resync before the safe state failed", exc_info=True)
        cause = f"{message}: {type(first).__name__}: {first}"
        try:
            report = self._safe_state()
        except SafeStateError as safe_exc:
            raise HardwareError(
                f"{cause}; {safe_exc}", cause=first, summary=cause, safe_state=safe_exc.report
            ) from exc
        except Exception as safe_exc:  # noqa: BLE001 - e.g. a KeyboardInterrupt is not caught
            self.fault = f"safe state failed: {safe_exc!r}"
            raise HardwareError(
                f"{cause}; and the safe state failed: {safe_exc!r}", cause=first, summary=cause
            ) from exc
        raise HardwareError(
            f"{cause} (safe state confirmed: {report})",
            cause=first,
            summary=cause,
            safe_state=report,
        ) from exc

    # -- parallel strategy (array board) --------------------------------------------------
    def _board_read(self, v: np.ndarray, transpose: bool) -> np.ndarray:
        self._ensure_contact()
        self.transactions += 1
        fn = self._array.read_rows if transpose else self._array.read_columns
        return np.asarray(fn([float(x) for x in v]), dtype=np.float64)

    # -- cell strategy (SMUs + matrix) -----------------------------------------------------
    def _setup_cell_strategy(
        self, drive: str | None, sense: str | None, bias: str | None, nplc: float
    ) -> None:
        st = self.station
        if st.matrix is None:
            raise ValueError("strategy 'cell' needs a switch matrix (role 'matrix')")
        w = st.config.wiring
        ports = list(w.smu_ports)
        if len(ports) < 2 and (drive is None or sense is None):
            raise ValueError(
                "strategy 'cell' needs two SMU channels in wiring.smu_ports "
                f"(drive and sense), got {ports}"
            )
        if not w.ground_ports:
            raise ValueError("strategy 'cell' needs a matrix ground port (wiring.ground_ports)")
        self._drive_key, self._sense_key = drive or ports[0], sense or ports[1]
        self._drive, self._sense = st.smus[self._drive_key], st.smus[self._sense_key]
        self._drive_port = w.smu_ports[self._drive_key]
        self._sense_port = w.smu_ports[self._sense_key]
        if bias is None and len(ports) >= 3:
            bias = ports[2]
        self._bias = st.smus[bias] if bias is not None else None
        self._bias_port = w.smu_ports[bias] if bias is not None else None
        self._ground = w.ground_ports[0]
        self._row_lines, self._col_lines = list(w.rows), list(w.cols)
        self._nplc = nplc

        def setup() -> None:
            for smu in (self._drive, self._sense, self._bias):
                if smu is None:
                    continue
                smu.set_source_mode("voltage")
                smu.set_compliance(self.limits.compliance_default_a)
                smu.set_nplc(nplc)
                smu.set_level(0.0)
            self.transactions += 8

        self._write_op("SMU setup", setup)
        self._outputs_on = False

    def _route_read(self, i: int, j: int) -> None:
        pairs = [(self._drive_port, self._row_lines[i]), (self._sense_port, self._col_lines[j])]
        pairs += [(self._ground, line) for k, line in enumerate(self._row_lines) if k != i]
        pairs += [(self._ground, line) for k, line in enumerate(self._col_lines) if k != j]
        self.station.matrix.open_all()
        self.station.matrix.connect_many(pairs)
        self.transactions += 2

    def _outputs(self, on: bool) -> None:
        if self._outputs_on != on:
            for smu in (self._drive, self._sense):
                smu.output(on)
            self._outputs_on = on
            self.transactions += 2

    def _confirm_outputs_off(self) -> None:
        """Query (a round trip, so every earlier write has been executed) that the SMUs
        really are off at the end of an operation."""
        for smu in (self._drive, self._sense):
            if smu.output_is_on():
                raise HardwareError(f"{smu.name} output still on after switching it off")
        self.transactions += 2

    def _cell_map(self, mask: Tensor | None, v_read_v: float | None = None) -> np.ndarray:
        """Cell-wise conductances (rows, cols); NaN where not measured."""
        v, i = self._cell_read(mask, self.v_read if v_read_v is None else v_read_v)
        return i / v

    def _cell_read(self, mask: Tensor | None, v_read_v: float) -> tuple[np.ndarray, np.ndarray]:
        """Cell-wise reads at ``v_read_v``: the drive level applied and the current measured
        (rows, cols); NaN where not measured."""
        _, rows, cols = self._shape
        g = np.full((rows, cols), np.nan)  # measured current (A)
        cells = [
            (i, j) for i in range(rows) for j in range(cols) if mask is None or bool(mask[0, i, j])
        ]

        def read_cells() -> None:
            self._ensure_contact()
            self._drive.set_level(0.0)
            self._outputs(True)
            for i, j in cells:
                if not np.isnan(g[i, j]):
                    continue  # measured before a retry
                self._drive.set_level(0.0)  # cold switching: no bias while relays move
                self._route_read(i, j)
                self._drive.set_level(v_read_v)
                g[i, j] = -self._sense.measure().current_a
                self.transactions += 3
            self._drive.set_level(0.0)
            self._outputs(False)
            self.station.matrix.open_all()
            self._confirm_outputs_off()
            self.transactions += 2

        def attempt() -> None:
            try:
                read_cells()
            except Exception:
                self._outputs_on = None  # unknown after a failure: force the next switch
                raise

        self._read_op("cell-wise conductance read", attempt)
        return np.where(np.isnan(g), np.nan, v_read_v), g

    # -- contract hooks -------------------------------------------------------------------------
    def _mvm(self, v: Tensor, *, transpose: bool, tile: int | None) -> Tensor:
        v_np = v[0].detach().cpu().double().numpy()
        if self.strategy == "parallel":
            out = np.stack(
                [
                    self._read_op("array-board read", partial(self._board_read, x, transpose))
                    for x in v_np
                ]
            )
        else:
            g = self._cell_map(None)
            out = v_np @ (g.T if transpose else g)
        return torch.as_tensor(out, dtype=self.dtype, device=self.torch_device).unsqueeze(0)

    def _read_conductance(self, mask: Tensor | None, v_read_v: float | None = None) -> Tensor:
        return self._read(mask, v_read_v).g_s

    def _read(self, mask: Tensor | None, v_read_v: float | None) -> Reading:
        """Reads at ``v_read_v`` on the wire: the row's level (board) or the drive level
        (cell) applied, and the current the board or the sense SMU measured."""
        _, rows, cols = self._shape
        v_read = self.v_read if v_read_v is None else float(v_read_v)
        if self.strategy == "parallel":
            v_app, i_meas = np.full((rows, cols), np.nan), np.full((rows, cols), np.nan)
            need = (
                range(rows) if mask is None else [i for i in range(rows) if bool(mask[0, i].any())]
            )
            for i in need:
                v = np.zeros(rows)
                v[i] = v_read
                i_meas[i] = self._read_op("array-board read", partial(self._board_read, v, False))
                v_app[i] = v_read
        else:
            v_app, i_meas = self._cell_read(mask, v_read)

        def out(x: np.ndarray) -> Tensor:
            t = torch.as_tensor(x, dtype=self.dtype, device=self.torch_device).unsqueeze(0)
            return t if mask is None else t[mask]

        return Reading(out(v_app), out(i_meas), out(i_meas / v_app), self._read_floor_a)

    def _pulse(
        self,
        selected: Tensor | None,
        v: Tensor,
        width_s: Tensor,
        count: Tensor,
        compliance_a: Tensor,
    ) -> None:
        plan = self._pulse_plan(selected, v, width_s, count, compliance_a)
        # Every cell is charged the worst case of every pulse it sees in this request,
        # selected or half-selected, before anything is sent (per-cell limits alone let a
        # request split into several pulses re-stress the same cells).
        energy = np.zeros(self._shape[1:])
        for mask, amp, width, n, comp in plan:
            energy += self._pulse_energy_j(mask, amp, width, n, comp)
        self.limits.check_energy(
            torch.from_numpy(energy),
            quantity="worst-case energy per cell of the whole pulse request "
            "(selected and half-selected)",
        )
        for mask, amp, width, n, comp in plan:
            if self.strategy == "parallel":
                self.transactions += 1
                self._write_op(
                    "array-board pulse",
                    partial(self._array.pulse_cells, mask, amp, width, n, compliance_a=comp),
                )
            else:
                (i,), (j,) = np.nonzero(mask)
                self._write_op(
                    "SMU pulse", partial(self._cell_pulse, int(i), int(j), amp, width, n, comp)
                )

    def _pulse_plan(
        self,
        selected: Tensor | None,
        v: Tensor,
        width_s: Tensor,
        count: Tensor,
        compliance_a: Tensor,
    ) -> list[tuple[np.ndarray, float, float, int, float]]:
        """The (cell mask, amplitude, width, count, compliance) pulses a request is sent
        as: one per group of cells sharing the four on the array board, one per cell (one
        routed cell at a time: physically serial) on the SMUs."""
        shape = self._shape
        self._write_op("prober contact before pulsing", self._ensure_contact)
        sel = torch.ones(shape, dtype=torch.bool) if selected is None else selected.cpu()
        fields = torch.stack(
            [
                t.expand(shape).to(torch.float64).cpu()[sel]
                for t in (v, width_s, count, compliance_a)
            ],
            1,
        )
        cells = sel[0].nonzero()
        groups, inverse = torch.unique(fields, dim=0, return_inverse=True)
        plan = []
        for k, (amp, width, n, comp) in enumerate(groups.tolist()):
            if amp == 0 or n == 0:
                continue
            members = cells[inverse == k].numpy()
            masks = []
            if self.strategy == "parallel":
                masks.append(np.zeros(shape[1:], dtype=bool))
                masks[0][members[:, 0], members[:, 1]] = True
            else:
                for i, j in members:
                    masks.append(np.zeros(shape[1:], dtype=bool))
                    masks[-1][i, j] = True
            plan += [(m, amp, width, int(n), comp) for m in masks]
        return plan

    def _pulse_energy_j(
        self, mask: np.ndarray, amp: float, width: float, n: int, comp: float
    ) -> np.ndarray:
        """Worst-case energy per cell of one planned pulse. Board: the driver's row x
        column blocks, every cell limited to ``comp``. SMUs with a bias channel: the V/2
        scheme on one cell, half-selected cells limited by the larger of the drive and
        bias compliances; without one the other lines float, and any cell may carry the
        drive's whole current at up to |V|."""
        shape = mask.shape
        if self.strategy == "parallel":
            return v_half_energy_j(shape, row_column_blocks(mask), abs(amp), comp, width, n)
        if self._bias is not None:
            bias_a = self._bias.compliance or self.limits.compliance_max_a
            return v_half_energy_j(
                shape,
                row_column_blocks(mask),
                abs(amp),
                comp,
                width,
                n,
                half_current_a=max(comp, bias_a),
            )
        return np.full(shape, worst_case_energy_j(abs(amp), comp, width, n))

    def _cell_pulse(self, i: int, j: int, amp: float, width: float, n: int, comp: float) -> None:
        """Drive -> row i, sense (0 V) -> column j, every other line to the bias channel at
        V/2 when there is one (else floating); fire the drive channel's pulse."""
        self._drive.set_level(0.0)
        self.station.matrix.open_all()
        pairs = [(self._drive_port, self._row_lines[i]), (self._sense_port, self._col_lines[j])]
        if self._bias is not None:
            pairs += [(self._bias_port, line) for k, line in enumerate(self._row_lines) if k != i]
            pairs += [(self._bias_port, line) for k, line in enumerate(self._col_lines) if k != j]
        self.station.matrix.connect_many(pairs)
        self._drive.set_compliance(comp)
        self._outputs(True)
        if self._bias is not None:
            self._bias.set_level(amp / 2)
            self._bias.output(True)
        # queries (round trips) to the matrix and the bias SMU: their writes were executed
        # before the drive pulses (separate connections give no ordering between them)
        missing = set(pairs) - set(self.station.matrix.connections())
        if missing:
            raise HardwareError(f"relays {sorted(missing)} not closed before the pulse")
        if self._bias is not None and not self._bias.output_is_on():
            raise HardwareError(f"{self._bias.name}: bias output not on before the pulse")
        self._drive.pulse(amp, width, n)
        if self._bias is not None:
            self._bias.set_level(0.0)
            self._bias.output(False)
        self._drive.set_compliance(self.limits.compliance_default_a)
        self._outputs(False)
        self.station.matrix.open_all()
        self._confirm_outputs_off()
        self.transactions += 8 if self._bias is None else 12


class _ProberSite:
    """The ``Site`` of a HardwareBackend whose station has a prober: touch down at the
    site, confirmed by the prober's contact status query, before the first pulse or read
    and again whenever the chuck moved (a safe state separates) or a recovery ran."""

    def __init__(self, backend: HardwareBackend, die: tuple[int, int] | None, subsite: int):
        self.backend = backend
        self.prober = backend.station.prober
        self.die, self.subsite = die, subsite
        self.positioned = die is None  # None: touch down where the chuck stands
        self.confirmed: int | None = None  # the prober's move count when contact was confirmed

    def load_map(self, dies, subsites: int = 1) -> None:
        self.prober.load_map(dies, subsites)

    def move(self, die: tuple[int, int], subsite: int = 0) -> None:
        if self.prober.in_contact():
            self.prober.separate()
        self.prober.step_to(die, subsite)
        self.die, self.subsite, self.positioned = (int(die[0]), int(die[1])), int(subsite), True

    def contact(self) -> None:
        self.confirmed = None
        self.ensure()

    def separate(self) -> None:
        self.prober.separate()

    def ensure(self) -> None:
        """Contact at the site, unless confirmed and the chuck has not moved since."""
        p = self.prober
        if self.confirmed is not None and self.confirmed == p.moves:
            return
        if not self.positioned:
            if p.position() != (self.die, self.subsite):
                if p.in_contact():
                    p.separate()
                p.step_to(self.die, self.subsite)
            self.positioned = True
        p.contact()
        if not p.contact_ok():
            where = (
                f"die {self.die} subsite {self.subsite}"
                if self.die is not None
                else "the current die"
            )
            raise HardwareError(
                f"{p.name}: no contact at {where} after touchdown (the "
                f"prober's contact status query reports none): nothing "
                f"was read or pulsed"
            )
        self.confirmed = p.moves


def _is_device_file(device: Any) -> bool:
    return isinstance(device, (str, Path)) and str(device).endswith((".yaml", ".yml"))


def _relative_to(source: str | None, device: str | Path) -> Path:
    """A device file named in a station file, resolved against that file's folder."""
    p = Path(device).expanduser()
    if not p.is_absolute() and source:
        p = Path(source).parent / p
    return p.resolve()


def _device_bipolar(device: Any, source: str | None = None) -> bool:
    """Whether the chip's device model depresses gradually (``DeviceModel.bipolar``),
    from its description (a model name, mapping or fitted file); True when it names no
    model that can be built (the contract's default)."""
    if device is None:
        return True
    from memhil.devices import build_device_model

    if _is_device_file(device):
        device = _relative_to(source, device)
    try:
        return bool(build_device_model(device).bipolar)
    except (ValueError, OSError):  # ConfigError is a ValueError
        return True


def cell_path_limits(
    limits: Limits, floor: tuple[float, str] | None, set_pulse: Any, reset_pulse: Any
) -> tuple[Limits, Any, Any]:
    """Limits and nominal pulses of the cell strategy, whose pulses come from the drive
    SMU: no shorter pulse than it makes (``floor``: width, what makes it), whatever the
    station's ``limits.width_min_s`` allows its array board; a nominal SET/RESET shorter
    than that is not advertised (this path cannot make it)."""
    if floor is None or floor[0] <= limits.width_min_s:
        return limits, set_pulse, reset_pulse
    width_s, by = floor
    pulses = []
    for name, pulse in (("set_pulse", set_pulse), ("reset_pulse", reset_pulse)):
        if pulse is not None and float(pulse[1]) < width_s:
            log.warning(
                "chip.%s %s is shorter than the %g s pulses of %s, which pulses for the cell "
                "strategy: not advertised as a nominal pulse on this path",
                name,
                tuple(pulse),
                width_s,
                by,
            )
            pulse = None
        pulses.append(pulse)
    return limits.with_pulse_floor(width_s, by), *pulses


def _check_nominal_pulses(
    set_pulse: Any, reset_pulse: Any, limits: Limits, source: str | None
) -> None:
    """The nominal pulses the backend advertises must be pulses it accepts: a device
    model's 10 ns SET on a bench whose ``limits.width_min_s`` is 1 us would make every
    caller of ``capabilities.set_pulse`` fail at its first pulse (docs/bench-bringup.md)."""
    from memhil.core.errors import ConfigError

    for key, pulse in (("set_pulse", set_pulse), ("reset_pulse", reset_pulse)):
        if pulse is not None and float(pulse[1]) < limits.width_min_s:
            raise ConfigError(
                f"chip.{key}",
                f"the nominal pulse ({float(pulse[0]):g} V, {float(pulse[1]):g} s) is "
                f"shorter than limits.width_min_s = {limits.width_min_s:g} s, the shortest "
                f"pulse this bench makes: give chip.{key} as [amplitude_v, width_s] with a "
                f"width it can make",
                source,
            )


def _device_description(
    chip: Any,
) -> tuple[tuple[float, float], tuple[float, float] | None, tuple[float, float] | None]:
    """Conductance window and nominal pulses from the station's chip section, falling back
    to the simulator model of the same name (a description only: no physics is used)."""
    g = tuple(chip.conductance_range_s) if chip.conductance_range_s else None
    sp = tuple(chip.set_pulse) if chip.set_pulse else None
    rp = tuple(chip.reset_pulse) if chip.reset_pulse else None
    if g is None or sp is None or rp is None:
        from memhil.devices import build_device_model

        if chip.device is None:
            raise ValueError(
                "chip.conductance_range_s, set_pulse and reset_pulse are needed "
                "when chip.device names no known device model"
            )
        model = build_device_model(chip.device)
        g = g or model.conductance_range()
        sp = sp or model.nominal_set_pulse
        rp = rp or model.nominal_reset_pulse
    return (float(g[0]), float(g[1])), sp, rp
