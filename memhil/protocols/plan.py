"""Plans: a protocol is a generator of small, frozen operation messages.

A plan yields messages and receives each reply through ``generator.send``: ``Read`` gets
a ``Reading`` of its cells (applied voltage, measured current, conductance; 1-D, in the
order of ``cells``), ``MVM`` the
column currents, ``Now`` the backend clock (s), ``Checkpoint``/``IsDone`` whether that key
is already journaled (True: skip the unit), everything else None. Because a plan never
touches a backend, the same plan is dry-run for the pre-flight check, executed by the
``Runner`` on a simulator or a bench, and unit-tested by feeding it replies.

Resumable work is wrapped in units::

    done = yield Checkpoint(key)      # opens the unit; True: already done, skip it
    if not done:
        ...pulses, reads, Records...
        yield Commit(key)             # records of the unit are flushed, key journaled

``keys`` on Pulse/Read/MVM map a request field ("amplitude", "width", "count",
"compliance", "v_read") to the protocol parameter that set it, so the pre-flight names
the parameter (``iv_sweep.v_max``) when a limit is exceeded.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memhil.core.types import CellList

Cells = CellList | None
Plan = Generator[Any, Any, Any]


def keys(**kw: str) -> tuple[tuple[str, str], ...]:
    """``keys(amplitude="v_max")`` -> the (field, parameter) pairs of a message."""
    return tuple(sorted(kw.items()))


@dataclass(frozen=True)
class Pulse:
    cells: Cells
    amplitude_v: float
    width_s: float
    count: int = 1
    compliance_a: float | None = None
    keys: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Read:
    cells: Cells
    tag: str = ""
    v_read: float | None = None  # the read voltage applied (V; None: the backend's own)
    keys: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class MVM:
    v_rows: Any
    tag: str = ""
    tile: int | None = None
    keys: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Program:
    """Program-and-verify ``cells`` to ``targets_s`` (S, one per cell, in the order of
    ``cells``) with ``memhil.analog.program.program_and_verify``; reply: its
    ``ProgramReport`` (per-cell achieved conductance, pulses, within tolerance)."""

    cells: CellList
    targets_s: tuple[float, ...]
    tolerance_s: float
    set_pulse: tuple[float, float]  # (amplitude V, width s)
    reset_pulse: tuple[float, float]
    max_iterations: int = 50
    n_reads: int = 1
    compliance_a: float | None = None
    keys: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class EnergyCheck:
    """Refuse (LimitError) a bias of ``|amplitude_v|`` held ``duration_s`` at
    ``compliance_a`` whose worst-case energy per cell exceeds ``Limits.energy_max_j``:
    the energy limit applied to a whole hold made of several requests. Reply: None."""

    amplitude_v: float
    duration_s: float
    compliance_a: float
    keys: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Wait:
    seconds: float


@dataclass(frozen=True)
class Now:
    """Reply: the backend clock (s)."""


@dataclass(frozen=True)
class Checkpoint:
    """Open the resumable unit ``key``; reply True if it is already journaled (skip it)."""

    key: tuple


@dataclass(frozen=True)
class Commit:
    """Unit ``key`` completed: its buffered records go to the sink, then the journal."""

    key: tuple


@dataclass(frozen=True)
class IsDone:
    """Reply True if ``key`` is journaled; opens nothing."""

    key: tuple


@dataclass(frozen=True)
class Record:
    key: Mapping[str, Any]
    values: Mapping[str, Any]


@dataclass(frozen=True)
class ProberMap:
    dies: tuple[tuple[int, int], ...]
    subsites: int = 1


@dataclass(frozen=True)
class Move:
    die: tuple[int, int]
    subsite: int = 0


@dataclass(frozen=True)
class Contact:
    pass


@dataclass(frozen=True)
class Separate:
    pass


def unit(key: tuple, body: Plan) -> Plan:
    """Run ``body`` as the resumable unit ``key`` (skipped when already journaled).
    Returns the body's return value, or None when skipped."""
    if (yield Checkpoint(key)):
        return None
    result = yield from body
    yield Commit(key)
    return result


def map_messages(plan: Plan, fn: Callable[[Any], Any]) -> Plan:
    """``plan`` with every message it yields replaced by ``fn(msg)``; replies and the
    return value pass through (Bluesky's ``msg_mutator``)."""
    reply = None
    while True:
        try:
            msg = plan.send(reply)
        except StopIteration as stop:
            return stop.value
        reply = yield fn(msg)


def prefixed(plan: Plan, key_prefix: tuple, record_key: Mapping[str, Any]) -> Plan:
    """``plan`` with ``key_prefix`` prepended to its unit keys and ``record_key`` merged into
    its records' keys (a protocol run inside another, e.g. per die of a wafer)."""

    def prefix(msg: Any) -> Any:
        if isinstance(msg, (Checkpoint, Commit, IsDone)):
            return type(msg)(tuple(key_prefix) + tuple(msg.key))
        if isinstance(msg, Record):
            return Record({**record_key, **msg.key}, msg.values)
        return msg

    return (yield from map_messages(plan, prefix))


def cell_records(
    protocol: str,
    cells: Sequence[tuple[int, int, int]],
    key: Mapping[str, Any],
    columns: Mapping[str, Iterable[Any]],
) -> Plan:
    """One Record per cell: key + (tile, row, col), values column-wise from ``columns``."""
    cols = {name: list(v) for name, v in columns.items()}
    for n, (t, r, c) in enumerate(cells):
        yield Record(
            {"protocol": protocol, **key, "tile": t, "row": r, "col": c},
            {name: _scalar(v[n]) for name, v in cols.items()},
        )
    return None


def _scalar(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


PlanFactory = Callable[..., Plan]
