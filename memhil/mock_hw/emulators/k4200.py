"""Keithley 4200A-SCS KXCI emulator (user mode) over the mock lab's chip: the commands
PyMeasure's unmodified ``Keithley4200`` driver and memhil's 4200 adapter send (4200A-SCS
Reference Manual, "KXCI user mode commands"), answered from device physics.

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

Status: ``N`` normal, ``C`` the SMU is in compliance (4200A-SCS KXCI data status codes).
A set command answers ``ACK``; a bad one answers an error line (``ERROR: ...``), which the
driver's ``check_set_errors`` raises. A reading holds the drive for ``integration_s``
(one PLC at 50 Hz by default) on the virtual clock; compliance is the shared SMU physics.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from memhil.mock_hw.bench import MockBench, SourceTerminal
from memhil.mock_hw.server import ServedEmulator
from memhil.mock_hw.smu_physics import CONDITION_CURRENT_LIMIT, CONDITION_VOLTAGE_LIMIT, settle

log = logging.getLogger(__name__)


class _KxciError(Exception):
    pass


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
        self, bench: MockBench, name: str = "k4200", *, smus: int = 4, integration_s: float = 0.02
    ):
        self.bench = bench
        self.name = name
        self.integration_s = float(integration_s)
        self.lock = threading.RLock()
        self.smus = {k: _Smu(bench.terminal(f"{name}.smu{k}")) for k in range(1, smus + 1)}
        self.transcript: list[str] = []

    def commands(self) -> list[str]:
        return list(self.transcript)

    def _apply(self, smu: _Smu):
        return settle(
            self.bench,
            smu.terminal,
            output_on=smu.enabled,
            voltage_mode=smu.voltage_mode,
            level=smu.level,
            limit=smu.compliance,
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


__all__ = ["Keithley4200Emulator"]
