"""IEEE 488.2 common commands and status reporting, written once for every emulator.

``ScpiStatus`` is an instrument's error queue and Standard Event Status Register (ESR);
``CommonCommands`` answers the common commands from a table that an emulator fills with
what it supports and extends with its own (``*LANG`` on the 2450). An emulator raises
``ScpiError`` for a command it refuses and pushes it onto its status: the error's class
(command, execution, device-specific, query error) sets its ESR bit, read and cleared by
``*ESR?`` (IEEE Std 488.2-1992, section 11.5.1; error-code classes from SCPI-1999,
vol. 2, chapter 21.8). Instrument-specific error readback (``:SYSTem:ERRor?``,
``errorqueue.next()``) stays with each emulator: its reply format is the instrument's.

``*ESE``/``*SRE`` store their register for reading back (``*STB?`` summarises any
event, whatever ``*ESE`` enables, and nothing raises a service request); ``*TST?``
answers 0 (passed). Emulator conventions: ``*OPC``, ``*WAI`` and ``*TRG`` do nothing (every command has
completed when its reply is sent, so nothing is pending); ``*OPC?`` answers 1. The error
queue keeps the newest ``ERROR_QUEUE_SIZE`` errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

#: Standard Event Status Register bits (IEEE 488.2, 11.5.1.1).
ESR_QUERY_ERROR = 0x04
ESR_DEVICE_ERROR = 0x08
ESR_EXECUTION_ERROR = 0x10
ESR_COMMAND_ERROR = 0x20
#: Status Byte bits: error/event queue not empty (SCPI-1999 vol. 1, 9.1), ESR summary.
STB_ERROR_AVAILABLE = 0x04
STB_EVENT_SUMMARY = 0x20

#: The errors an emulator keeps (the oldest is dropped beyond: a client that never reads
#: its errors cannot grow the emulator without bound).
ERROR_QUEUE_SIZE = 100

#: A common-command handler: the command's arguments -> the reply (None: no reply).
CommonHandler = Callable[[Sequence[str]], "str | None"]


def esr_bit(code: int) -> int:
    """The ESR bit an error code sets: -1xx command, -2xx execution, -4xx query error;
    -3xx and every instrument-specific code a device-specific error; 0 none."""
    if code == 0:
        return 0
    if -199 <= code <= -100:
        return ESR_COMMAND_ERROR
    if -299 <= code <= -200:
        return ESR_EXECUTION_ERROR
    if -499 <= code <= -400:
        return ESR_QUERY_ERROR
    return ESR_DEVICE_ERROR


class ScpiError(Exception):
    """A command the instrument refuses: ``code`` and ``message`` go to its error queue."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = int(code)
        self.message = message

    @property
    def esr_bit(self) -> int:
        return esr_bit(self.code)


class ScpiStatus:
    """An instrument's error queue ``errors`` ((code, message), oldest first) and its ESR."""

    def __init__(self, queue_size: int = ERROR_QUEUE_SIZE):
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.queue_size = int(queue_size)
        self.errors: list[tuple[int, str]] = []
        self.times: list[float] = []  # wall time (s since the epoch) each error was queued
        self.esr = 0
        self.ese = 0  # *ESE: standard event status enable register (stored, read back)
        self.sre = 0  # *SRE: service request enable register (stored, read back)

    def push(self, code: int, message: str) -> None:
        """Queue an error and set its ESR bit."""
        self._sync_times()
        self.errors.append((int(code), message))
        self.times.append(time.time())
        self.esr |= esr_bit(code)
        del self.errors[: -self.queue_size]
        del self.times[: -self.queue_size]

    def push_error(self, error: ScpiError) -> None:
        self.push(error.code, error.message)

    def pop(self) -> tuple[int, str] | None:
        """The oldest queued error, removed (None when the queue is empty)."""
        got = self.pop_with_time()
        return None if got is None else got[:2]

    def pop_with_time(self) -> tuple[int, str, float] | None:
        """The oldest queued error and the wall time it was queued, removed."""
        self._sync_times()
        if not self.errors:
            return None
        code, message = self.errors.pop(0)
        return code, message, self.times.pop(0)

    def _sync_times(self) -> None:
        """Keep one time per error when a caller edited ``errors`` directly."""
        if len(self.times) != len(self.errors):
            self.times = [time.time()] * len(self.errors)

    def clear(self) -> None:
        """``*CLS``: empty the error queue and the ESR."""
        self.errors.clear()
        self.times.clear()
        self.esr = 0

    def read_esr(self) -> int:
        """``*ESR?``: the ESR, cleared by reading it."""
        value, self.esr = self.esr, 0
        return value

    def stb(self) -> int:
        """``*STB?``: the status byte (error available; event summary of a nonzero ESR)."""
        return (STB_ERROR_AVAILABLE if self.errors else 0) | (STB_EVENT_SUMMARY if self.esr else 0)


class CommonCommands:
    """The common commands one emulator serves, by header (``"*IDN?"``, ``"*RST"``).

    ``idn`` answers ``*IDN?``; ``reset`` (``*RST``) and ``status`` (``*CLS``, ``*ESR?``,
    ``*STB?``, ``*OPC``, ``*OPC?``, ``*WAI``, ``*TRG``) are served where given, so a
    dialect that only identifies itself (a probe station) passes ``idn`` alone; ``extra``
    adds or replaces headers. An unknown header raises ``ScpiError`` -113.
    """

    def __init__(
        self,
        idn: str | Callable[[], str],
        *,
        reset: Callable[[], None] | None = None,
        status: ScpiStatus | None = None,
        extra: Mapping[str, CommonHandler] | None = None,
    ):
        identify = idn if callable(idn) else (lambda: idn)
        self.table: dict[str, CommonHandler] = {"*IDN?": lambda args: identify()}
        if reset is not None:
            self.table["*RST"] = lambda args: reset()
        if status is not None:
            self.table.update(
                {
                    "*CLS": lambda args: status.clear(),
                    "*ESR?": lambda args: str(status.read_esr()),
                    "*STB?": lambda args: str(status.stb()),
                    "*OPC?": lambda args: "1",
                    "*OPC": lambda args: None,
                    "*WAI": lambda args: None,
                    "*TRG": lambda args: None,
                    "*TST?": lambda args: "0",  # self-test passed
                    "*ESE": lambda args: _set_register(status, "ese", args),
                    "*ESE?": lambda args: str(status.ese),
                    "*SRE": lambda args: _set_register(status, "sre", args),
                    "*SRE?": lambda args: str(status.sre),
                }
            )
        for header, handler in (extra or {}).items():
            self.register(header, handler)

    def register(self, header: str, handler: CommonHandler) -> None:
        """Serve ``header`` (e.g. ``"*LANG?"``) with ``handler(args) -> reply``."""
        if not header.startswith("*"):
            raise ValueError(f"a common command starts with '*', got {header!r}")
        self.table[header.upper()] = handler

    def __call__(self, header: str, args: Sequence[str] = ()) -> str | None:
        """The reply to common command ``header`` (with its ``?`` for a query)."""
        handler = self.table.get(header.strip().upper())
        if handler is None:
            raise ScpiError(-113, f"Undefined header {header.strip()}")
        return handler(args)


def _set_register(status: ScpiStatus, name: str, args: Sequence[str]) -> None:
    """``*ESE n`` / ``*SRE n``: an 8-bit enable register (IEEE 488.2, 10.10 and 10.34)."""
    try:
        value = int(float(args[0])) if args else -1
    except ValueError:
        value = -1
    if not 0 <= value <= 255:
        raise ScpiError(-222, f"Data out of range: {args[0] if args else '(missing)'}")
    setattr(status, name, value)


def is_common(command: str) -> bool:
    """Whether ``command`` is an IEEE 488.2 common command (its header starts with ``*``)."""
    return command.lstrip().startswith("*")


__all__ = [
    "ERROR_QUEUE_SIZE",
    "ESR_COMMAND_ERROR",
    "ESR_DEVICE_ERROR",
    "ESR_EXECUTION_ERROR",
    "ESR_QUERY_ERROR",
    "STB_ERROR_AVAILABLE",
    "STB_EVENT_SUMMARY",
    "CommonCommands",
    "ScpiError",
    "ScpiStatus",
    "esr_bit",
    "is_common",
]
