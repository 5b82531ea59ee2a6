"""Runner: pre-flight a plan on a DryBackend, then execute it on the real backend with
progress, incremental records, checkpoints/resume and a guaranteed safe state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from memhil.backends.base import Backend, Reading
from memhil.core.errors import LimitError
from memhil.protocols.dry import DryBackend
from memhil.protocols.plan import (MVM, Checkpoint, Commit, Contact, IsDone, Move, Now,
                                   Pulse, Read, Record, Separate, ProberMap, Wait)


class ProtocolError(RuntimeError):
    """A plan cannot run on this backend (e.g. it needs a prober and there is none)."""


class ProtocolLimitError(LimitError):
    """A LimitError raised by the pre-flight, naming the protocol parameter."""

    def __init__(self, param: str, exc: LimitError):
        self.param = param
        super().__init__(f"{param} ({exc.quantity})", exc.value, exc.limit, exc.unit)


# LimitError.quantity prefix -> the message field whose parameter caused it
_QUANTITY_FIELD = (("pulse amplitude", "amplitude"), ("pulse width", "width"),
                   ("pulse count", "count"), ("compliance", "compliance"),
                   ("worst-case pulse energy", "energy"), ("read voltage", "v_read"))


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


def default_safe_state(backend: Backend) -> Callable[[], None]:
    """``backend.station.safe_state`` for a HardwareBackend; nothing for a simulator."""
    station = getattr(backend, "station", None)
    fn = getattr(station, "safe_state", None)
    return fn if callable(fn) else (lambda: None)


class Runner:
    def __init__(self, backend: Backend, *, sink: Any = None, journal: Any = None,
                 progress: bool = True, safe_state: Callable[[], None] | None = None,
                 max_preflight_ops: int = 5_000_000):
        self.backend = backend
        self.sink = sink
        self.journal = journal
        self.progress = progress
        self.safe_state = safe_state or default_safe_state(backend)
        self.max_preflight_ops = max_preflight_ops

    # -- pre-flight -------------------------------------------------------------------
    def preflight(self, plan_factory: Callable[..., Any]) -> Summary:
        """Dry-run the plan; raise ProtocolLimitError (naming ``protocol.parameter``) or
        ProtocolError before anything reaches the backend."""
        name = getattr(plan_factory, "name", "plan")
        dry = DryBackend(self.backend)
        summary = Summary()
        plan = plan_factory(self.backend.capabilities)
        reply: Any = None
        try:
            while True:
                try:
                    msg = plan.send(reply)
                except StopIteration:
                    break
                summary.ops += 1
                if summary.ops > self.max_preflight_ops:
                    raise ProtocolError(f"{name}: more than {self.max_preflight_ops} operations "
                                        f"in the pre-flight (endless plan?)")
                try:
                    reply = self._execute(dry, msg, summary, dry=True)
                except LimitError as exc:
                    raise ProtocolLimitError(_param(name, msg, exc), exc) from None
        finally:
            plan.close()
        summary.duration_s = dry.clock.now()
        return summary

    # -- execution --------------------------------------------------------------------
    def run(self, plan_factory: Callable[..., Any], *, preflight: bool = True) -> Summary:
        """Pre-flight (unless told not to), then execute on the backend. Records go to the
        sink as units commit; journaled units are skipped; the safe state is entered on
        success, error and KeyboardInterrupt (re-raised)."""
        total = self.preflight(plan_factory).ops if preflight else None
        name = getattr(plan_factory, "name", "plan")
        summary = Summary()
        self._stack: list[tuple[tuple, list, bool]] = []  # (key, buffered records, skipped)
        plan = plan_factory(self.backend.capabilities)
        bar = tqdm(total=total, desc=name, disable=not self.progress, leave=False)
        try:
            reply: Any = None
            while True:
                try:
                    msg = plan.send(reply)
                except StopIteration:
                    break
                summary.ops += 1
                bar.update(1)
                reply = self._execute(self.backend, msg, summary, dry=False)
            if self._stack:
                raise ProtocolError(f"{name}: unit {self._stack[-1][0]!r} never committed")
        finally:
            try:
                plan.close()
                bar.close()
            finally:
                self.safe_state()
        summary.duration_s = self.backend.clock.now()
        return summary

    def _execute(self, be: Backend, msg: Any, s: Summary, *, dry: bool) -> Any:
        s.counts[type(msg).__name__] = s.counts.get(type(msg).__name__, 0) + 1
        if isinstance(msg, Pulse):
            s.pulses += 1
            s.v_max = max(s.v_max, abs(msg.amplitude_v))
            cells = None if msg.cells is None else list(msg.cells)
            if cells is not None and not cells:
                return None
            be.pulse(cells, msg.amplitude_v, msg.width_s, msg.count, compliance_a=msg.compliance_a)
            return None
        if isinstance(msg, Read):
            s.reads += 1
            if msg.cells is not None and not msg.cells:
                if msg.v_read is not None:
                    be.limits.check_read(torch.tensor([float(msg.v_read)]))
                empty = torch.zeros(0)
                return Reading(empty, empty, empty, be.read_floor_a)
            r = be.read(None if msg.cells is None else list(msg.cells), v_read_v=msg.v_read)
            return Reading(r.v_v.reshape(-1), r.i_a.reshape(-1), r.g_s.reshape(-1), r.floor_a)
        if isinstance(msg, MVM):
            s.mvms += 1
            return be.mvm(torch.as_tensor(msg.v_rows), tile=msg.tile)
        if isinstance(msg, Wait):
            be.wait(msg.seconds)
            return None
        if isinstance(msg, Now):
            return be.clock.now()
        if isinstance(msg, Record):
            s.records += 1
            if not dry:
                self._record(dict(msg.key), dict(msg.values))
            return None
        if isinstance(msg, IsDone):
            return (not dry) and self.journal is not None and self.journal.done(msg.key)
        if isinstance(msg, Checkpoint):
            s.units += 1
            if dry:
                return False
            done = self.journal is not None and self.journal.done(msg.key)
            if not done:  # a done unit is skipped by the plan: nothing to open or commit
                if self.journal is not None:  # durably "started" before its first operation
                    self.journal.start(tuple(msg.key))
                self._stack.append((tuple(msg.key), [], False))
            return done
        if isinstance(msg, Commit):
            if dry:
                return None
            if not self._stack or self._stack[-1][0] != tuple(msg.key):
                raise ProtocolError(f"Commit({msg.key!r}) does not close the open unit "
                                    f"{self._stack[-1][0] if self._stack else None!r}")
            key, buffered, skipped = self._stack.pop()
            if not skipped:
                for point in buffered:
                    self._emit(point)
                if self.journal is not None:  # points stored and unit journaled as one
                    self.journal.commit(key, self._flush)
                else:
                    self._flush()
            return None
        if isinstance(msg, (ProberMap, Move, Contact, Separate)):
            return self._prober_op(be, msg, dry)
        raise ProtocolError(f"unknown plan message {msg!r}")

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

    def _prober_op(self, be: Backend, msg: Any, dry: bool) -> None:
        site = be.site
        if site is None:
            raise ProtocolError(f"{type(msg).__name__}: this plan needs a prober, and the "
                                f"backend has none (a HardwareBackend whose station has a "
                                f"prober instrument)")
        if dry:
            return None
        if isinstance(msg, ProberMap):
            site.load_map([tuple(d) for d in msg.dies], msg.subsites)
        elif isinstance(msg, Move):
            site.move(tuple(msg.die), msg.subsite)
        elif isinstance(msg, Contact):
            site.contact()
        else:
            site.separate()
        return None


def _param(name: str, msg: Any, exc: LimitError) -> str:
    fields = dict(getattr(msg, "keys", ()) or ())
    for prefix, fld in _QUANTITY_FIELD:
        if exc.quantity.startswith(prefix):
            if fld == "energy":
                params = [fields[f] for f in ("amplitude", "width", "count", "compliance") if f in fields]
                if params:
                    return " / ".join(f"{name}.{p}" for p in params)
            elif fld in fields:
                return f"{name}.{fields[fld]}"
    return f"{name}.<{type(msg).__name__.lower()}>"
