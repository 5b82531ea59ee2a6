"""Runner: pre-flight a plan on a DryBackend, then execute it on the real backend with
progress, incremental records, checkpoints/resume and a guaranteed safe state.

Both passes are one loop over a command table (message type -> handler), as Bluesky's
``RunEngine`` (``register_command``): the pre-flight drives the plan with ``dry=True`` on
a ``DryBackend``, the run with ``dry=False`` on the backend. A caller that needs more from
either pass registers a handler (wrapping the one in ``commands`` if it keeps its work)
instead of subclassing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from memhil.analog.program import program_and_verify
from memhil.backends.base import Backend, Reading
from memhil.core.errors import LimitError
from memhil.core.limits import worst_case_energy_j
from memhil.protocols.dry import DryBackend
from memhil.protocols.plan import (
    MVM,
    Checkpoint,
    Commit,
    Contact,
    EnergyCheck,
    IsDone,
    Move,
    Now,
    ProberMap,
    Program,
    Pulse,
    Read,
    Record,
    Separate,
    Wait,
)


class ProtocolError(RuntimeError):
    """A plan cannot run on this backend (e.g. it needs a prober and there is none)."""


class StopRequested(KeyboardInterrupt):
    """A stop asked for from outside the process (the monitor's stop button): raised between
    units, so it takes the Ctrl-C path (unit in flight already committed, safe state
    entered, run left ``interrupted`` and resumable)."""


class ProtocolLimitError(LimitError):
    """A LimitError raised by the pre-flight, naming the protocol parameters that set the
    refused request: ``protocol`` and ``params`` (parameter names; ``<pulse>``-style when
    the message maps none), joined into ``param`` (``iv_sweep.v_max``)."""

    def __init__(
        self, exc: LimitError, protocol: str, params: tuple[str, ...], param: str | None = None
    ):
        self.protocol = protocol
        self.params = tuple(params)
        super().__init__(
            exc.quantity,
            exc.value,
            exc.limit,
            exc.unit,
            field=exc.field,
            param=param
            if param is not None
            else " / ".join(f"{protocol}.{p}" for p in self.params),
        )


# the request fields a worst-case energy is computed from
_ENERGY_FIELDS = ("amplitude", "width", "count", "compliance")


def offending_params(msg: Any, exc: LimitError) -> tuple[str, ...]:
    """The protocol parameters (from the message's ``keys``) that set the request field
    ``exc.field`` refused; ``(<message type>,)`` when the message names none."""
    keyed = dict(getattr(msg, "keys", ()) or ())
    fields = _ENERGY_FIELDS if exc.field == "energy" else (exc.field,)
    params = tuple(keyed[f] for f in fields if f in keyed)
    return params or (f"<{type(msg).__name__.lower()}>",)


@dataclass
class Summary:
    """What the pre-flight saw: operation counts, the largest requests, the time."""

    ops: int = 0
    pulses: int = 0
    reads: int = 0
    mvms: int = 0
    records: int = 0
    units: int = 0
    v_max: float = 0.0
    duration_s: float = 0.0
    counts: dict = field(default_factory=dict)


@dataclass
class Pass:
    """One drive of a plan, as its handlers see it: the backend the messages act on (a
    ``DryBackend`` in the pre-flight), whether this is the dry pass, and its Summary."""

    backend: Backend
    dry: bool
    summary: Summary


Handler = Callable[[Any, Pass], Any]
"""``handler(msg, pass_) -> reply``: what the plan receives for ``msg``."""


class Runner:
    def __init__(
        self,
        backend: Backend,
        *,
        sink: Any = None,
        journal: Any = None,
        progress: bool = True,
        safe_state: Callable[[], None] | None = None,
        max_preflight_ops: int = 5_000_000,
        stop_requested: Callable[[], bool] | None = None,
    ):
        self.backend = backend
        self.sink = sink
        self.journal = journal
        self.progress = progress
        self.safe_state = safe_state or backend.safe_state
        self.max_preflight_ops = max_preflight_ops
        self.stop_requested = stop_requested  # asked before each unit starts
        self._stack: list[tuple[tuple, list, bool]] = []  # (key, buffered records, skipped)
        self._commands: dict[type, Handler] = {}
        for msg_type, handler in (
            (Pulse, self._pulse),
            (Read, self._read),
            (MVM, self._mvm),
            (Wait, self._wait),
            (Program, self._program),
            (EnergyCheck, self._energy_check),
            (Now, self._now),
            (Record, self._record_msg),
            (IsDone, self._is_done),
            (Checkpoint, self._checkpoint),
            (Commit, self._commit),
            (ProberMap, self._prober_op),
            (Move, self._prober_op),
            (Contact, self._prober_op),
            (Separate, self._prober_op),
        ):
            self.register_command(msg_type, handler)

    # -- the command table ------------------------------------------------------------
    def register_command(self, message_type: type, handler: Handler) -> None:
        """Handle plan messages of ``message_type`` (and its subclasses without their own
        entry) with ``handler(msg, pass_)``, in the pre-flight and the run alike
        (``pass_.dry`` tells them apart); replaces the type's previous handler."""
        self._commands[message_type] = handler

    def unregister_command(self, message_type: type) -> None:
        del self._commands[message_type]

    @property
    def commands(self) -> dict[type, Handler]:
        """The command table (a copy): message type -> handler."""
        return dict(self._commands)

    def _handler(self, msg: Any) -> Handler:
        for t in type(msg).__mro__:
            handler = self._commands.get(t)
            if handler is not None:
                return handler
        raise ProtocolError(f"unknown plan message {msg!r}")

    def drive(
        self,
        plan_factory: Callable[..., Any],
        backend: Backend,
        *,
        dry: bool,
        on_op: Callable[[], None] | None = None,
    ) -> Summary:
        """Run a fresh plan of ``plan_factory`` through the command table against
        ``backend``: the one loop of the pre-flight and the run. A dry pass stops an
        endless plan after ``max_preflight_ops`` and names the protocol parameter of a
        refused request (ProtocolLimitError)."""
        name = getattr(plan_factory, "name", "plan")
        p = Pass(backend, dry, Summary())
        s = p.summary
        plan = plan_factory(self.backend.capabilities)
        reply: Any = None
        try:
            while True:
                try:
                    msg = plan.send(reply)
                except StopIteration:
                    break
                s.ops += 1
                if dry and s.ops > self.max_preflight_ops:
                    raise ProtocolError(
                        f"{name}: more than {self.max_preflight_ops} operations "
                        f"in the pre-flight (endless plan?)"
                    )
                if on_op is not None:
                    on_op()
                s.counts[type(msg).__name__] = s.counts.get(type(msg).__name__, 0) + 1
                handler = self._handler(msg)
                try:
                    reply = handler(msg, p)
                except LimitError as exc:
                    if not dry or isinstance(exc, ProtocolLimitError):
                        raise
                    raise ProtocolLimitError(exc, name, offending_params(msg, exc)) from None
        finally:
            plan.close()
        s.duration_s = backend.clock.now()
        return s

    # -- pre-flight -------------------------------------------------------------------
    def preflight(self, plan_factory: Callable[..., Any], *, g_s: float | None = None) -> Summary:
        """Dry-run the plan (reads answer ``g_s``, default the geometric mean of the
        conductance window); raise ProtocolLimitError (naming ``protocol.parameter``) or
        ProtocolError before anything reaches the backend."""
        return self.drive(plan_factory, DryBackend(self.backend, g_s=g_s), dry=True)

    # -- execution --------------------------------------------------------------------
    def run(self, plan_factory: Callable[..., Any], *, preflight: bool | Summary = True) -> Summary:
        """Pre-flight (unless told not to, or given the Summary of one already done), then
        execute on the backend. Records go to the sink as units commit; journaled units
        are skipped; the safe state is entered on success, error and KeyboardInterrupt
        (re-raised)."""
        if isinstance(preflight, Summary):
            total: int | None = preflight.ops
        else:
            total = self.preflight(plan_factory).ops if preflight else None
        name = getattr(plan_factory, "name", "plan")
        self._stack = []
        bar = tqdm(total=total, desc=name, disable=not self.progress, leave=False)
        try:
            summary = self.drive(plan_factory, self.backend, dry=False, on_op=lambda: bar.update(1))
            if self._stack:
                raise ProtocolError(f"{name}: unit {self._stack[-1][0]!r} never committed")
        finally:
            try:
                bar.close()
            finally:
                self.safe_state()
        return summary

    # -- the default handlers ---------------------------------------------------------
    def _pulse(self, msg: Pulse, p: Pass) -> None:
        p.summary.pulses += 1
        p.summary.v_max = max(p.summary.v_max, abs(msg.amplitude_v))
        cells = None if msg.cells is None else list(msg.cells)
        if cells is not None and not cells:
            return None
        p.backend.pulse(
            cells, msg.amplitude_v, msg.width_s, msg.count, compliance_a=msg.compliance_a
        )
        return None

    def _read(self, msg: Read, p: Pass) -> Reading:
        p.summary.reads += 1
        be = p.backend
        if msg.cells is not None and not msg.cells:
            if msg.v_read is not None:
                be.limits.check_read(torch.tensor([float(msg.v_read)]))
            empty = torch.zeros(0)
            return Reading(empty, empty, empty, be.read_floor_a)
        r = be.read(None if msg.cells is None else list(msg.cells), v_read_v=msg.v_read)
        return Reading(r.v_v.reshape(-1), r.i_a.reshape(-1), r.g_s.reshape(-1), r.floor_a)

    def _mvm(self, msg: MVM, p: Pass) -> Any:
        p.summary.mvms += 1
        return p.backend.mvm(torch.as_tensor(msg.v_rows), tile=msg.tile)

    def _program(self, msg: Program, p: Pass) -> Any:
        p.summary.v_max = max(p.summary.v_max, abs(msg.set_pulse[0]), abs(msg.reset_pulse[0]))
        iterations = msg.max_iterations
        if p.dry:
            # Dry reads never converge: check one pulse of each polarity (the loop caps
            # its counts by the limits itself) and run a single iteration for the reply.
            for amplitude_v, width_s in (msg.set_pulse, msg.reset_pulse):
                p.backend.pulse(
                    list(msg.cells), amplitude_v, width_s, 1, compliance_a=msg.compliance_a
                )
                p.summary.pulses += 1
            iterations = 1
        report = program_and_verify(
            p.backend,
            list(msg.cells),
            torch.tensor(msg.targets_s, dtype=torch.float64),
            set_pulse=msg.set_pulse,
            reset_pulse=msg.reset_pulse,
            tolerance_s=msg.tolerance_s,
            max_iterations=iterations,
            n_reads=msg.n_reads,
            compliance_a=msg.compliance_a,
        )
        p.summary.pulses += report.pulse_calls  # the pulse calls the loop made
        return report

    def _energy_check(self, msg: EnergyCheck, p: Pass) -> None:
        p.backend.limits.check_energy(
            torch.as_tensor(
                worst_case_energy_j(abs(msg.amplitude_v), msg.compliance_a, msg.duration_s, 1)
            ),
            quantity="worst-case energy of the whole hold per cell",
        )

    def _wait(self, msg: Wait, p: Pass) -> None:
        p.backend.wait(msg.seconds)

    def _now(self, msg: Now, p: Pass) -> float:
        return p.backend.clock.now()

    def _record_msg(self, msg: Record, p: Pass) -> None:
        p.summary.records += 1
        if not p.dry:
            self._record(dict(msg.key), dict(msg.values))

    def _is_done(self, msg: IsDone, p: Pass) -> bool:
        return (not p.dry) and self.journal is not None and self.journal.done(msg.key)

    def _checkpoint(self, msg: Checkpoint, p: Pass) -> bool:
        p.summary.units += 1
        if p.dry:
            return False
        done = self.journal is not None and self.journal.done(msg.key)
        if not done and self.stop_requested is not None and self.stop_requested():
            raise StopRequested(f"stop requested before unit {tuple(msg.key)!r}")
        if not done:  # a done unit is skipped by the plan: nothing to open or commit
            if self.journal is not None:  # durably "started" before its first operation
                self.journal.start(tuple(msg.key))
            self._stack.append((tuple(msg.key), [], False))
        return done

    def _commit(self, msg: Commit, p: Pass) -> None:
        if p.dry:
            return None
        if not self._stack or self._stack[-1][0] != tuple(msg.key):
            raise ProtocolError(
                f"Commit({msg.key!r}) does not close the open unit "
                f"{self._stack[-1][0] if self._stack else None!r}"
            )
        key, buffered, skipped = self._stack.pop()
        if not skipped:
            for point in buffered:
                self._emit(point)
            if self.journal is not None:  # points stored and unit journaled as one
                self.journal.commit(key, self._flush)
            else:
                self._flush()
        return None

    def _prober_op(self, msg: Any, p: Pass) -> None:
        site = p.backend.site
        if site is None:
            raise ProtocolError(
                f"{type(msg).__name__}: this plan needs a prober, and the "
                f"backend has none (a HardwareBackend whose station has a "
                f"prober instrument)"
            )
        if p.dry:
            return None
        if isinstance(msg, ProberMap):
            site.load_map([(int(d[0]), int(d[1])) for d in msg.dies], msg.subsites)
        elif isinstance(msg, Move):
            site.move((int(msg.die[0]), int(msg.die[1])), msg.subsite)
        elif isinstance(msg, Contact):
            site.contact()
        else:
            site.separate()
        return None

    # -- records ----------------------------------------------------------------------
    def _record(self, key: dict, values: dict) -> None:
        if self._stack:
            _, buffered, skipped = self._stack[-1]
            if not skipped:
                buffered.append({**key, **values})
        else:
            self._emit({**key, **values})
            self._flush()

    def _emit(self, point: dict) -> None:
        if self.sink is not None:
            self.sink.add(**point)

    def _flush(self) -> None:
        """A sink with ``flush`` (e.g. a batching store sink) writes what it holds."""
        flush = getattr(self.sink, "flush", None)
        if callable(flush):
            flush()
