"""Keithley 4200A-SCS KXCI emulator (user mode and the standard-pulse subset of the
``:PMU:`` commands) over the mock lab's chip: the commands PyMeasure's unmodified
``Keithley4200`` driver and memhil's 4200 adapter send (4200A-SCS Reference Manual, "KXCI
user mode commands"; 4200A-SCS KXCI programming manual, "KXCI PGU and PMU commands"),
answered from device physics.

KXCI over Ethernet terminates every message, both ways, with a NUL byte (the driver's
``write_termination``/``read_termination`` of ``"\\0"``). Commands served::

    *OPT?                        SMU1,SMU2,...   (installed SMUs)
    ID                           KI4200A KXCI ...
    SP                           status byte (0; 1 when a reading is ready)
    BC                           clear the buffer                        -> ACK
    US                           user mode (prefix: "US;DV1,0,0.5,1E-3") -> no reply
    DVn[,range,V,Icomp]          force V with current compliance; "DVn" alone disables
    DIn[,range,I,Vcomp]          force I with voltage compliance
    TVn / TIn                    trigger a V / I reading: "<status><chan><type><value>"

A 4225-PMU card with 4225-RPMs on SMUs (``rpm={"smu1": "PMU1-1"}``, the station option:
the RPM of PMU channel 1 shares SMU 1's output, its chip terminal) serves::

    :PMU:RPM:CONFIGURE PMU1-1, m  RPM path: 0 pulse (PMU), 1/3 CV, 2 SMU
    :PMU:INIT 0                   standard pulse mode (1, Segment Arb: not emulated)
    :PMU:SOURCE:RANGE ch, 10      the 10 V range (40 V: not emulated)
    :PMU:PULSE:TIMES ch, period, width, rise, fall[, delay]
    :PMU:PULSE:TRAIN ch, base, amplitude
    :PMU:PULSE:BURST:COUNT n
    :PMU:OUTPUT:STATE ch, 0|1     on takes effect at EXECUTE, off at once
    :PMU:EXECUTE                  the train, on the virtual clock (done before the reply)
    :PMU:TEST:STATUS?             0 idle (1 running: never seen here)
    :PMU:ABORT                    stop, PMU outputs off

The RPMs start on the pulse path, so an SMU whose driver never selects the SMU path reaches
nothing. Stricter than the instrument: switching an RPM while its SMU is enabled or its
PMU output is on is an error (the manual: sources to 0 V before the RPM switches). The PMU
limits no current: a pulse is a voltage source up to the 10 V range's 200 mA. Channels
pulsed together share their timing (one period per card). A train holds ``count`` pulses
of ``width`` at the amplitude, then ``count`` off times at the base (exact for a 0 V base).

Status: ``N`` normal, ``C`` the SMU is in compliance (4200A-SCS KXCI data status codes).
A set command answers ``ACK``; a bad one answers an error line (``ERROR: ...``), which the
driver's ``check_set_errors`` raises. A reading holds the drive for ``integration_s``
(one PLC at 50 Hz by default) on the virtual clock; compliance is the shared SMU physics.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from memhil.mock_hw.bench import MockBench, SourceTerminal
from memhil.mock_hw.server import ServedEmulator
from memhil.mock_hw.smu_physics import CONDITION_CURRENT_LIMIT, CONDITION_VOLTAGE_LIMIT, settle

log = logging.getLogger(__name__)


class _KxciError(Exception):
    pass


#: 4225-PMU 10 V range: the shortest width, rise/fall and off time (``:PMU:PULSE:TIMES``),
#: the longest period, and the range's current (A).
PMU_WIDTH_MIN_S = 40e-9
PMU_TRANSITION_MIN_S = 20e-9
PMU_TRANSITION_MAX_S = 33e-3
PMU_OFF_MIN_S = 40e-9
PMU_PERIOD_MAX_S = 1.0
PMU_RANGE_V = 10.0
PMU_CURRENT_MAX_A = 0.2
RPM_PULSE, RPM_SMU = 0, 2
_RPM_ID = re.compile(r"PMU(\d)-([12])$", re.I)


@dataclass
class _PmuChannel:
    """One 4225-PMU channel and the RPM on SMU ``smu``'s output."""

    hrid: str
    smu: int
    path: int = RPM_PULSE
    period_s: float = 1e-6
    width_s: float = 500e-9
    base_v: float = 0.0
    amplitude_v: float = 0.0
    output: bool = False  # OUTPUT:STATE (on: armed for EXECUTE, then holding the base)


@dataclass
class _Smu:
    terminal: SourceTerminal
    enabled: bool = False
    voltage_mode: bool = True
    level: float = 0.0
    compliance: float = 1e-3


class Keithley4200Emulator(ServedEmulator):
    """A 4200A-SCS whose SMUs are terminals ``{name}.smu<k>`` on ``bench``."""

    terminator = "\0"
    idn = "KI4200A KXCI MOCK0001 V1.13"

    def __init__(
        self,
        bench: MockBench,
        name: str = "k4200",
        *,
        smus: int = 4,
        integration_s: float = 0.02,
        rpm: Mapping[str, str] | None = None,
    ):
        self.bench = bench
        self.name = name
        self.integration_s = float(integration_s)
        self.lock = threading.RLock()
        self.smus = {k: _Smu(bench.terminal(f"{name}.smu{k}")) for k in range(1, smus + 1)}
        self.pmu: dict[int, _PmuChannel] = {}  # KXCI PMU channel -> channel
        for smu, hrid in (rpm or {}).items():
            m = _RPM_ID.match(str(hrid))
            k = next((k for k in self.smus if smu == f"smu{k}"), None)
            if m is None or k is None:
                raise ValueError(f"{name}: RPM {hrid!r} on {smu!r}: no such RPM id or SMU")
            ch = 2 * (int(m.group(1)) - 1) + int(m.group(2))
            self.pmu[ch] = _PmuChannel(str(hrid).upper(), k)
        self.pmu_mode: int | None = None  # :PMU:INIT mode
        self.burst_count = 1
        self.transcript: list[str] = []

    def commands(self) -> list[str]:
        return list(self.transcript)

    def _rpm_of(self, smu: _Smu) -> _PmuChannel | None:
        return next((c for c in self.pmu.values() if self.smus[c.smu] is smu), None)

    def _apply(self, smu: _Smu):
        rpm = self._rpm_of(smu)
        if rpm is not None and rpm.path != RPM_SMU:  # the RPM routes the PMU, not the SMU
            return (smu.level if smu.enabled and smu.voltage_mode else 0.0), 0.0, 0
        return settle(
            self.bench,
            smu.terminal,
            output_on=smu.enabled,
            voltage_mode=smu.voltage_mode,
            level=smu.level,
            limit=smu.compliance,
        )

    def _pmu_drive(self, ch: _PmuChannel, level_v: float | None) -> None:
        """The PMU channel's output on its SMU's terminal: ``level_v`` (None: off)."""
        settle(
            self.bench,
            self.smus[ch.smu].terminal,
            output_on=level_v is not None,
            voltage_mode=True,
            level=level_v or 0.0,
            limit=PMU_CURRENT_MAX_A,
        )

    def handle(self, line: str) -> bytes | None:
        with self.lock:
            self.transcript.append(line)
            del self.transcript[:-10_000]
            reply = None
            for command in line.strip().strip("\0").split(";"):
                command = command.strip()
                if not command or command.upper() == "US":
                    continue
                try:
                    reply = self._dispatch(command)
                except _KxciError as err:
                    log.info("%s: %s -> %s", self.name, command, err)
                    reply = f"ERROR: {err}"
            return None if reply is None else (reply + self.terminator).encode()

    def _smu(self, digits: str) -> tuple[int, _Smu]:
        try:
            k = int(digits)
            return k, self.smus[k]
        except (ValueError, KeyError):
            raise _KxciError(f"no SMU{digits}") from None

    def _dispatch(self, command: str) -> str:
        if command.upper().startswith(":PMU:"):
            return self._pmu_command(command)
        head = command[:2].upper()
        if command.upper() == "*OPT?":
            return ",".join(f"SMU{k}" for k in self.smus)
        if command.upper() == "ID":
            return self.idn
        if command.upper() == "SP":
            return "0"
        if command.upper() == "BC":
            return "ACK"
        if head in ("DV", "DI"):
            chan, _, rest = command[2:].partition(",")
            _, smu = self._smu(chan)
            if not rest:  # "DVn": disable the SMU (0 V, output off)
                smu.enabled, smu.level = False, 0.0
                self._apply(smu)
                return "ACK"
            try:
                _rng, value, limit = (float(x) for x in rest.split(","))
            except ValueError:
                raise _KxciError(f"bad parameters {rest!r}") from None
            smu.enabled, smu.voltage_mode = True, head == "DV"
            smu.level, smu.compliance = value, abs(limit)
            self._apply(smu)
            return "ACK"
        if head in ("TV", "TI"):
            k, smu = self._smu(command[2:])
            with self.bench.lock:
                self._apply(smu)
                self.bench.hold(self.integration_s)
                v, i, cond = self._apply(smu)
            limited = cond & (CONDITION_CURRENT_LIMIT | CONDITION_VOLTAGE_LIMIT)
            value = v if head == "TV" else i
            return f"{'C' if limited else 'N'}{chr(ord('A') + k - 1)}{head[1]}{value:+.6E}"
        raise _KxciError(f"unknown command {command!r}")

    # -- :PMU: (4225-PMU, standard pulse) --------------------------------------------------
    def _pmu_command(self, command: str) -> str:
        head, _, rest = command.partition(" ")
        head = head.upper()
        args = [a.strip() for a in rest.split(",")] if rest.strip() else []
        if not self.pmu:
            raise _KxciError(f"{head}: no 4225-PMU installed")
        if head == ":PMU:TEST:STATUS?":
            return "0"  # EXECUTE runs the whole train on the virtual clock before it replies
        if head == ":PMU:ABORT":
            for ch in self.pmu.values():
                self._pmu_output(ch, False)
            return "ACK"
        if head == ":PMU:RPM:CONFIGURE":
            ch = self._pmu_by_hrid(args[0] if args else "")
            mode = self._pmu_int(args, 1, head)
            if mode not in (0, 1, 2, 3):
                raise _KxciError(f"{head}: mode {mode} not 0..3")
            if self.smus[ch.smu].enabled or ch.output:
                raise _KxciError(f"{head}: {ch.hrid} switched with its SMU or PMU output on")
            ch.path = mode
            return "ACK"
        if head == ":PMU:INIT":
            mode = self._pmu_int(args, 0, head)
            if mode != 0:
                raise _KxciError(f"{head}: mode {mode}: only standard pulse (0) is emulated")
            for ch in self.pmu.values():
                self._pmu_output(ch, False)
                ch.period_s, ch.width_s, ch.base_v, ch.amplitude_v = 1e-6, 500e-9, 0.0, 0.0
            self.pmu_mode, self.burst_count = mode, 1
            return "ACK"
        if head == ":PMU:PULSE:BURST:COUNT":
            count = self._pmu_int(args, 0, head)
            if count < 1:
                raise _KxciError(f"{head}: count {count} < 1")
            self.burst_count = count
            return "ACK"
        if head == ":PMU:EXECUTE":
            self._pmu_execute()
            return "ACK"
        ch = self._pmu_channel(args[0] if args else "")
        values = [self._pmu_float(args, k, head) for k in range(1, len(args))]
        if head == ":PMU:SOURCE:RANGE" and values == [PMU_RANGE_V]:
            return "ACK"
        if head == ":PMU:PULSE:TIMES" and len(values) in (4, 5):
            period, width, rise, fall = values[:4]
            self._check_times(head, period, width, rise, fall, values[4] if len(values) > 4 else 0)
            ch.period_s, ch.width_s = period, width
            return "ACK"
        if head == ":PMU:PULSE:TRAIN" and len(values) == 2:
            if max(abs(v) for v in values) > PMU_RANGE_V:
                raise _KxciError(f"{head}: {values} beyond the {PMU_RANGE_V:g} V range")
            ch.base_v, ch.amplitude_v = values
            return "ACK"
        if head == ":PMU:OUTPUT:STATE" and values in ([0.0], [1.0]):
            if values == [1.0]:
                ch.output = True  # takes effect at EXECUTE
            else:
                self._pmu_output(ch, False)
            return "ACK"
        raise _KxciError(f"unknown or malformed PMU command {command!r}")

    @staticmethod
    def _check_times(head: str, period, width, rise, fall, delay) -> None:
        if not PMU_WIDTH_MIN_S <= width:
            raise _KxciError(f"{head}: width {width:g} s below {PMU_WIDTH_MIN_S:g} s")
        for t in (rise, fall):
            if not PMU_TRANSITION_MIN_S <= t <= PMU_TRANSITION_MAX_S:
                raise _KxciError(f"{head}: rise/fall {t:g} s outside 20 ns..33 ms")
        if width <= 0.5 * (rise + fall) or rise > width:
            raise _KxciError(f"{head}: width {width:g} s too short for its edges")
        off = period - delay - width - 0.5 * (rise + fall)
        if not (off > PMU_OFF_MIN_S and period <= PMU_PERIOD_MAX_S):
            raise _KxciError(f"{head}: period {period:g} s leaves off time {off:g} s")

    def _pmu_by_hrid(self, hrid: str) -> _PmuChannel:
        ch = next((c for c in self.pmu.values() if c.hrid == hrid.upper()), None)
        if ch is None:
            raise _KxciError(f"no RPM {hrid!r}")
        return ch

    def _pmu_channel(self, arg: str) -> _PmuChannel:
        try:
            return self.pmu[int(arg)]
        except (ValueError, KeyError):
            raise _KxciError(f"no PMU channel {arg!r}") from None

    @staticmethod
    def _pmu_int(args: list[str], k: int, head: str) -> int:
        try:
            return int(args[k])
        except (IndexError, ValueError):
            raise _KxciError(f"{head}: bad parameters {args}") from None

    @staticmethod
    def _pmu_float(args: list[str], k: int, head: str) -> float:
        try:
            return float(args[k])
        except ValueError:
            raise _KxciError(f"{head}: bad parameter {args[k]!r}") from None

    def _pmu_output(self, ch: _PmuChannel, on: bool) -> None:
        ch.output = on
        if ch.path == RPM_PULSE:
            self._pmu_drive(ch, ch.base_v if on else None)

    def _pmu_execute(self) -> None:
        """The armed channels' trains, together: on-time at the amplitude (a vectorized
        hold of ``count`` pulses), then the off times at the base."""
        if self.pmu_mode != 0:
            raise _KxciError(":PMU:EXECUTE: no :PMU:INIT 0 (standard pulse) before")
        armed = [ch for ch in self.pmu.values() if ch.output]
        if not armed:
            raise _KxciError(":PMU:EXECUTE: no PMU output on")
        if len({(ch.period_s, ch.width_s) for ch in armed}) > 1:
            raise _KxciError(":PMU:EXECUTE: channels pulsed together need one timing")
        period, width, n = armed[0].period_s, armed[0].width_s, self.burst_count
        routed = [ch for ch in armed if ch.path == RPM_PULSE]
        with self.bench.lock:
            for ch in routed:
                self._pmu_drive(ch, ch.amplitude_v)
            self.bench.hold(width, n)
            for ch in routed:
                self._pmu_drive(ch, ch.base_v)
            self.bench.hold(n * (period - width))


__all__ = ["Keithley4200Emulator"]
