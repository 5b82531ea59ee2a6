"""The sequencer: a procedure written as a YAML list of blocks, without Python (ArC ONE's
SuperMode). Blocks are one-key mappings::

    - pulse: {amplitude_v: 2.0, width_s: 1.0e-7, count: 1, compliance_a: 1.0e-3}
    - read:  {v_read_v: 0.2, record: {phase: ltp, pulse: $pulse, n: $pulses}}
    - read:  {suffix: hrs}                  # held for the next `record` block
    - record: {keys: {cycle: $cycle}, ratios: {window: [g_lrs, g_hrs]}}
    - wait:  {duration_s: 1.0}
    - ramp:  {v_start_v: 0.1, v_stop_v: 1.0, v_step_v: 0.1, width_s: 1.0e-6, read: true}
    - loop:  {times: 10, counter: cycle, start: 100, step: 100,
              until: {column: window, stat: median, below: 2.0}, do: [...blocks...]}

A read without ``suffix`` stores one record per cell at once (``g``, ``v_read_v``,
``i_read_a``, ``open_circuit``); reads with a ``suffix`` collect their columns
(``g_<suffix>`` ...) for the next ``record`` block, which adds ``ratios`` (a column the
quotient of two others). Record keys are literals or ``$name``: the counter of an
enclosing loop (``start + step * iteration``) or ramp (its step, from 1), or ``$pulses``
(pulses applied so far, ``count`` included). ``index_key`` (default ``step``) adds a key
counting the records' operations, so two reads never store the same key; null leaves the
keys exactly as written (then the counters must tell the records apart). A loop runs
``times`` iterations; with ``until`` it stops after the first iteration whose last record
meets the condition (the statistic over the cells of a column).

Everything is checked at load, naming the file and key (``params.blocks[2].loop.do[0]
.pulse.width_s``); pulses and reads pass the pre-flight like any plan's, their limit errors
naming their block. Resume: each top-level block, and each iteration of a top-level loop,
is a unit; an ``until`` loop's stop is journaled. So that the counters of skipped units are
known, ``until`` loops stand at the top level only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from memhil.core.config import from_mapping, require
from memhil.core.errors import ConfigError
from memhil.protocols.common import check_cells, positive, read_columns, resolve_cells
from memhil.protocols.plan import (
    Checkpoint,
    Commit,
    IsDone,
    Pulse,
    Read,
    Wait,
    cell_records,
    keys,
)


@dataclass(frozen=True)
class PulseBlock:
    amplitude_v: float
    width_s: float
    count: int = 1
    compliance_a: float | None = None  # None: the sequence's compliance_a

    def __post_init__(self) -> None:
        require(self.amplitude_v != 0, "amplitude_v", "must be non-zero (sign = polarity)")
        positive(self, "width_s", "count")
        require(
            self.compliance_a is None or self.compliance_a > 0,
            "compliance_a",
            f"must be > 0 A, got {self.compliance_a}",
        )


@dataclass(frozen=True)
class ReadBlock:
    v_read_v: float | None = None  # None: the sequence's v_read_v
    tag: str = ""
    suffix: str | None = None  # columns held for the next record block
    record: dict = field(default_factory=dict)  # record keys: literals or $counter

    def __post_init__(self) -> None:
        require(self.v_read_v is None or self.v_read_v != 0, "v_read_v", "must be non-zero")
        require(
            self.suffix is None or self.suffix.isidentifier(),
            "suffix",
            f"must be a name (letters, digits, _), got {self.suffix!r}",
        )
        require(
            self.suffix is None or not self.record,
            "record",
            "a read with a suffix stores nothing itself: give the keys to its record block",
        )


@dataclass(frozen=True)
class RecordBlock:
    keys: dict = field(default_factory=dict)
    ratios: dict = field(default_factory=dict)  # name: [numerator column, denominator]

    def __post_init__(self) -> None:
        for name, pair in self.ratios.items():
            require(
                isinstance(pair, (list, tuple)) and len(pair) == 2,
                f"ratios.{name}",
                f"must be [numerator column, denominator column], got {pair!r}",
            )


@dataclass(frozen=True)
class WaitBlock:
    duration_s: float

    def __post_init__(self) -> None:
        require(self.duration_s >= 0, "duration_s", f"must be >= 0 s, got {self.duration_s}")


@dataclass(frozen=True)
class RampBlock:
    v_start_v: float
    v_stop_v: float
    v_step_v: float
    width_s: float
    count: int = 1
    compliance_a: float | None = None
    read: bool = True
    counter: str = "ramp"
    record: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        positive(self, "width_s", "count")
        require(self.v_step_v != 0, "v_step_v", "must be non-zero")
        require(
            (self.v_stop_v - self.v_start_v) * self.v_step_v >= 0,
            "v_step_v",
            f"must step from v_start_v ({self.v_start_v} V) towards v_stop_v "
            f"({self.v_stop_v} V), got {self.v_step_v} V",
        )
        require(self.v_start_v != 0, "v_start_v", "must be non-zero")

    def amplitudes(self) -> list[float]:
        n = int(math.floor((self.v_stop_v - self.v_start_v) / self.v_step_v + 1e-9)) + 1
        return [self.v_start_v + k * self.v_step_v for k in range(n)]


@dataclass(frozen=True)
class Until:
    column: str = "g"
    stat: Literal["median", "mean", "min", "max"] = "median"
    below: float | None = None
    above: float | None = None

    def __post_init__(self) -> None:
        require(
            (self.below is None) != (self.above is None),
            "below",
            "give exactly one of below / above",
        )

    def met(self, columns: Mapping[str, Any]) -> bool:
        x = torch.as_tensor(columns[self.column], dtype=torch.float64).reshape(-1)
        value = float(getattr(torch, self.stat)(x)) if x.numel() else math.nan
        return value < self.below if self.below is not None else value > float(self.above or 0)


@dataclass(frozen=True)
class LoopBlock:
    do: tuple[Any, ...]
    times: int | None = None
    until: Until | None = None
    counter: str | None = None
    start: int = 1
    step: int = 1

    def __post_init__(self) -> None:
        require(
            self.times is not None,
            "times",
            "a loop needs times (with until: the most iterations, which the pre-flight runs)",
        )
        require((self.times or 0) >= 1, "times", f"must be >= 1, got {self.times}")
        require(len(self.do) > 0, "do", "must list at least one block")
        require(
            self.counter is None or self.counter.isidentifier(),
            "counter",
            f"must be a name, got {self.counter!r}",
        )


_KINDS: dict[str, type] = {
    "pulse": PulseBlock,
    "read": ReadBlock,
    "record": RecordBlock,
    "wait": WaitBlock,
    "ramp": RampBlock,
    "loop": LoopBlock,
}


@dataclass(frozen=True)
class Block:
    """A parsed block: its kind, its typed body, its key path (``blocks[2].loop``) and,
    for loops, its parsed body."""

    kind: str
    body: Any
    path: str
    children: tuple[Block, ...] = ()


def parse_blocks(raw: Any, path: str, top: bool) -> tuple[Block, ...]:
    """Typed blocks of the list ``raw`` at key ``path``; ConfigError names the block key."""
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ConfigError(path, f"must be a non-empty list of blocks, got {raw!r}")
    out = []
    for i, item in enumerate(raw):
        here = f"{path}[{i}]"
        if not isinstance(item, Mapping) or len(item) != 1:
            raise ConfigError(
                here, f"a block is a one-key mapping ({'/'.join(_KINDS)}: {{...}}), got {item!r}"
            )
        ((kind, body),) = item.items()
        if kind not in _KINDS:
            raise ConfigError(here, f"unknown block {kind!r} (known: {sorted(_KINDS)})")
        typed: Any = from_mapping(
            _KINDS[kind], body if body is not None else {}, prefix=f"{here}.{kind}"
        )
        children: tuple[Block, ...] = ()
        if kind == "loop":
            require(
                top or typed.until is None,
                f"{here}.loop.until",
                "an until loop must be a top-level block (its stop is journaled for resume)",
            )
            children = parse_blocks(typed.do, f"{here}.loop.do", False)
        out.append(Block(kind, typed, f"{here}.{kind}", children))
    return tuple(out)


def _emits(b: Block) -> bool:
    return (
        (b.kind == "read" and b.body.suffix is None)
        or b.kind == "record"
        or (b.kind == "ramp" and b.body.read)
    )


def _record_keys(b: Block) -> dict:
    return dict(b.body.keys if b.kind == "record" else b.body.record)


def _static_counts(blocks: tuple[Block, ...]) -> tuple[int, int]:
    """(pulses, emitting operations) of one pass over ``blocks``."""
    pulses = emits = 0
    for b in blocks:
        if b.kind == "pulse":
            pulses += b.body.count
        elif b.kind == "ramp":
            n = len(b.body.amplitudes())
            pulses += n * b.body.count
            emits += n if b.body.read else 0
        elif b.kind == "loop":
            p, e = _static_counts(b.children)
            pulses, emits = pulses + p * b.body.times, emits + e * b.body.times
        elif _emits(b):
            emits += 1
    return pulses, emits


def _columns(b: Block, pending: set[str]) -> set[str]:
    """The value columns a block stores (reads: with ``pending`` suffixed columns)."""
    if b.kind == "record":
        return pending | set(b.body.ratios)
    base = {"g", "v_read_v", "i_read_a", "open_circuit"}
    return base | ({"v_pulse_v"} if b.kind == "ramp" else set())


def _check(blocks: tuple[Block, ...], counters: tuple[str, ...], ctx: dict) -> set[str]:
    """Check references, key sets and until columns; returns the columns the blocks store."""
    stored: set[str] = set()
    pending: set[str] = set()
    for b in blocks:
        if b.kind == "read" and b.body.suffix is not None:
            s = b.body.suffix
            pending |= {f"g_{s}", f"v_read_{s}_v", f"i_read_{s}_a"}
        if b.kind == "record":
            for name, (num, den) in b.body.ratios.items():
                for col in (num, den):
                    require(
                        col in pending,
                        f"{b.path}.ratios.{name}",
                        f"column {col!r} is not read before it (held: {sorted(pending)})",
                    )
        if _emits(b):
            names = counters + ((b.body.counter,) if b.kind == "ramp" else ())
            rk = _record_keys(b)
            where = f"{b.path}.{'keys' if b.kind == 'record' else 'record'}"
            for k, v in rk.items():
                require(
                    isinstance(v, (int, str)) and not isinstance(v, bool),
                    f"{where}.{k}",
                    f"a record key is an integer, a string or $counter, got {v!r}",
                )
                if isinstance(v, str) and v.startswith("$"):
                    require(
                        v[1:] in names or v == "$pulses",
                        f"{where}.{k}",
                        f"unknown counter {v!r} (here: {['$' + n for n in names] + ['$pulses']})",
                    )
                require(
                    k not in ("protocol", "tile", "row", "col", ctx["index_key"]),
                    f"{where}.{k}",
                    "is a key the sequence sets itself",
                )
            first = ctx.setdefault("keys", (set(rk), where))
            require(
                set(rk) == first[0],
                where,
                f"keys {sorted(rk)} differ from {sorted(first[0])} of {first[1]}: every "
                f"record of a sequence carries the same keys",
            )
            stored = _columns(b, pending)
            if b.kind == "record":
                pending = set()
        if b.kind == "loop":
            inner = counters + ((b.body.counter,) if b.body.counter else ())
            cols = _check(b.children, inner, ctx)
            if b.body.until is not None:
                require(
                    b.body.until.column in cols,
                    f"{b.path}.until.column",
                    f"{b.body.until.column!r} is not a column its body stores ({sorted(cols)})",
                )
            stored = cols or stored
    return stored


@dataclass(frozen=True)
class SequenceParams:
    blocks: tuple[Any, ...] = ()
    name: str = "sequence"  # the records' protocol name and the units' key
    index_key: str | None = "step"
    v_read_v: float = 0.2
    compliance_a: float = 1e-3
    cells: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        positive(self, "v_read_v", "compliance_a")
        require(bool(self.name), "name", "must be non-empty")
        check_cells(self.cells)
        _check(self.parsed(), (), {"index_key": self.index_key})

    def parsed(self) -> tuple[Block, ...]:
        """The blocks, typed (raises ConfigError naming the block key)."""
        return parse_blocks(self.blocks, "blocks", True)


class _State:
    """Counters, the pulse and record tallies, held suffixed columns and the last record."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.pulses = 0
        self.emits = 0
        self.pending: dict[str, Any] = {}
        self.last: dict[str, Any] = {}

    def resolve(self, rk: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in rk.items():
            if isinstance(v, str) and v.startswith("$"):
                v = self.pulses if v == "$pulses" else self.counters[v[1:]]
            out[k] = v
        return out


def plan(p: SequenceParams, caps):
    cells = resolve_cells(p.cells, caps)
    st = _State()

    def emit(rk: Mapping[str, Any], columns: dict[str, Any]):
        key = {**st.resolve(rk)}
        if p.index_key:
            key[p.index_key] = st.emits
        st.emits += 1
        st.last = columns
        yield from cell_records(p.name, cells, key, columns)

    def pulse(amp: float, width: float, count: int, compliance: float | None, path: str, akey: str):
        st.pulses += count
        yield Pulse(
            cells,
            amp,
            width,
            count,
            p.compliance_a if compliance is None else compliance,
            keys(
                amplitude=f"{path}.{akey}",
                width=f"{path}.width_s",
                count=f"{path}.count",
                compliance=f"{path}.compliance_a" if compliance is not None else "compliance_a",
            ),
        )

    def read(v: float | None, tag: str, path: str):
        v_read = p.v_read_v if v is None else v
        vkey = f"{path}.v_read_v" if v is not None else "v_read_v"
        return (yield Read(cells, tag, v_read, keys(v_read=vkey)))

    def run_block(b: Block):
        body = b.body
        if b.kind == "pulse":
            yield from pulse(
                body.amplitude_v, body.width_s, body.count, body.compliance_a, b.path, "amplitude_v"
            )
        elif b.kind == "read":
            r = yield from read(body.v_read_v, body.tag, b.path)
            if body.suffix is not None:
                st.pending.update(read_columns(r, f"_{body.suffix}"))
            else:
                yield from emit(body.record, {**read_columns(r), "open_circuit": r.at_floor})
        elif b.kind == "record":
            cols = dict(st.pending)
            for name, (num, den) in body.ratios.items():
                cols[name] = cols[num] / cols[den]
            st.pending = {}
            yield from emit(body.keys, cols)
        elif b.kind == "wait":
            if body.duration_s > 0:
                yield Wait(body.duration_s)
        elif b.kind == "ramp":
            for k, v in enumerate(body.amplitudes()):
                st.counters[body.counter] = k + 1
                yield from pulse(v, body.width_s, body.count, body.compliance_a, b.path, "v_stop_v")
                if body.read:
                    r = yield from read(None, "ramp", b.path)
                    yield from emit(
                        body.record,
                        {
                            "v_pulse_v": [v] * len(cells),
                            **read_columns(r),
                            "open_circuit": r.at_floor,
                        },
                    )
        else:  # a nested loop (no until: checked at load)
            for it in range(body.times):
                if body.counter:
                    st.counters[body.counter] = body.start + body.step * it
                for child in b.children:
                    yield from run_block(child)

    for i, b in enumerate(p.parsed()):
        if b.kind != "loop":
            key: tuple = (p.name, i)
            if (yield Checkpoint(key)):
                n_pulses, n_emits = _static_counts((b,))
                st.pulses, st.emits = st.pulses + n_pulses, st.emits + n_emits
                continue
            yield from run_block(b)
            yield Commit(key)
            continue
        body = b.body
        stop_key = (p.name, i, "stopped")
        stopped = body.until is not None and (yield IsDone(stop_key))
        n_pulses, n_emits = _static_counts(b.children)
        for it in range(body.times):
            if body.counter:
                st.counters[body.counter] = body.start + body.step * it
            key = (p.name, i, it)
            if stopped and not (yield IsDone(key)):
                break
            if (yield Checkpoint(key)):
                st.pulses, st.emits = st.pulses + n_pulses, st.emits + n_emits
                continue
            for child in b.children:
                yield from run_block(child)
            yield Commit(key)
            if body.until is not None and body.until.met(st.last):
                yield Checkpoint(stop_key)
                yield Commit(stop_key)
                break
