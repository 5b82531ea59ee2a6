"""pyserial URL handler: ``serial.serial_for_url("memhilboard://<board-id>")`` opens a
serial port to a board emulator registered in this process under ``<board-id>``.

Importing this module appends ``"memhil.mock_hw"`` to
``serial.protocol_handler_packages`` (pyserial then imports
``memhil.mock_hw.protocol_memhilboard`` for the ``memhilboard`` scheme). pyvisa-py's ASRL
resources pass their board string to ``serial_for_url``, so the same board is also
``ASRLmemhilboard://<board-id>::INSTR`` (``ResourceManager("@py")``; set ``baud_rate``
to the board's rate).

A registered device has ``handle(line: str) -> str | None`` (one command without its
terminator -> one reply without it, None = no reply), ``faults`` (a ``FaultInjector``),
``baudrate`` (None = any) and ``terminator`` (default ``"\\n"``).

What the port emulates, as a UART to a microcontroller board would behave:

* terminators: bytes accumulate until the device's terminator; ``\\r`` before it is
  dropped; each complete line is handled in the writing thread, and the reply bytes
  (plus terminator) are queued for reading;
* partial reads: with ``?chunk=N&gap=S`` the reply arrives in pieces of N bytes, S
  seconds (wall time) apart; ``in_waiting`` and ``read`` see only what has arrived, and
  ``read(size)`` returns what it has when the timeout expires (pyserial semantics);
* echo: ``?echo=1`` sends every received byte back before the reply (terminal-mode
  firmware);
* baud rate: a port opened at a rate other than the board's receives nothing (the
  board sees framing errors, discards the bytes and answers nothing: reads time out);
* faults (the device's ``FaultInjector``): ``timeout_next`` swallows replies,
  ``garble_next`` corrupts them, ``drop_next`` makes the device vanish (USB unplugged:
  every further read/write raises ``SerialException``), ``latency_s`` delays replies,
  ``late_next`` holds a reply back until the next command (a stale reply, race-free).

Example: ``serial.serial_for_url("memhilboard://board0?chunk=5&gap=0.001", timeout=1)``.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from typing import Any, Protocol

import serial
from serial.serialutil import PortNotOpenError, SerialBase, SerialException, Timeout

log = logging.getLogger(__name__)

SCHEME = "memhilboard"

if "memhil.mock_hw" not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append("memhil.mock_hw")


class LineDevice(Protocol):
    faults: Any
    baudrate: int | None

    def handle(self, line: str) -> str | None: ...


_registry: dict[str, LineDevice] = {}
_registry_lock = threading.Lock()


def register(board_id: str, device: LineDevice) -> str:
    """Make ``device`` reachable as ``memhilboard://<board_id>``; returns the URL."""
    if not board_id or any(c in board_id for c in "/?&#: "):
        raise ValueError(f"invalid board id {board_id!r}")
    with _registry_lock:
        if board_id in _registry and _registry[board_id] is not device:
            raise ValueError(f"board id {board_id!r} is already registered")
        _registry[board_id] = device
    return f"{SCHEME}://{board_id}"


def unregister(board_id: str) -> None:
    with _registry_lock:
        _registry.pop(board_id, None)


def registered() -> list[str]:
    with _registry_lock:
        return sorted(_registry)


def lookup(board_id: str) -> LineDevice:
    with _registry_lock:
        dev = _registry.get(board_id)
    if dev is None:
        raise SerialException(
            f"no memhil board registered as {board_id!r} (registered: {registered()})"
        )
    return dev


class Serial(SerialBase):
    """A serial port to an in-process board emulator (see the module docstring)."""

    is_open: bool  # set by SerialBase.__init__

    def open(self) -> None:
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        if self.is_open:
            raise SerialException("Port is already open.")
        self._device, opts = self.from_url(self._port)
        self._chunk = int(opts.get("chunk", 0))
        self._gap = float(opts.get("gap", 0.0))
        self._echo = opts.get("echo", "0") not in ("0", "false", "no", "")
        self._lock = threading.Condition()
        self._tx = bytearray()
        self._held = b""  # a reply held back by ``late_next``
        self._rx: list[tuple[float, bytes]] = []  # (wall time it arrives, bytes)
        self._gone = False
        self.is_open = True
        self._reconfigure_port()

    def from_url(self, url: str) -> tuple[LineDevice, dict[str, str]]:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != SCHEME:
            raise SerialException(f"expected a URL of the form {SCHEME}://<board-id>, got {url!r}")
        board_id = parts.netloc or parts.path.strip("/")
        opts = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}
        unknown = set(opts) - {"chunk", "gap", "echo"}
        if unknown:
            raise SerialException(f"unknown option(s) {sorted(unknown)} in {url!r}")
        return lookup(board_id), opts

    def _reconfigure_port(self) -> None:
        # Port settings are kept by SerialBase; the baud rate is compared at each write.
        pass

    def close(self) -> None:
        self.is_open = False

    # -- data ----------------------------------------------------------------------------
    def _check(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()
        if self._gone:
            raise SerialException("device disconnected (the board stopped answering the port)")

    @property
    def in_waiting(self) -> int:
        self._check()
        now = time.monotonic()
        with self._lock:
            return sum(len(b) for t, b in self._rx if t <= now)

    def read(self, size: int = 1) -> bytes:
        self._check()
        out = bytearray()
        timeout = Timeout(self._timeout)
        while len(out) < size:
            now = time.monotonic()
            wait = None
            with self._lock:
                while self._rx and len(out) < size:
                    t, b = self._rx[0]
                    if t > now:
                        wait = t - now
                        break
                    take = b[: size - len(out)]
                    out += take
                    if len(take) == len(b):
                        self._rx.pop(0)
                    else:
                        self._rx[0] = (t, b[len(take) :])
            if len(out) >= size or timeout.expired():
                break
            left = timeout.time_left() if self._timeout is not None else None
            if self._timeout == 0:
                break
            nap = min(x for x in (wait, left, 0.05) if x is not None)
            time.sleep(max(nap, 0.0))
            self._check()
        return bytes(out)

    def read_until(self, expected: bytes = b"\n", size: int | None = None) -> bytes:
        """pyserial's ``read_until`` (up to and including ``expected``, at most ``size``
        bytes, or what arrived before the timeout), taking each arrived chunk at once:
        the base class calls ``read(1)`` per byte, most of an in-process board read."""
        self._check()
        line = bytearray()
        timeout = Timeout(self._timeout)
        while True:
            now = time.monotonic()
            wait = None
            with self._lock:
                while self._rx:
                    t, b = self._rx[0]
                    if t > now:
                        wait = t - now
                        break
                    room = len(b) if size is None else min(len(b), size - len(line))
                    start = max(0, len(line) - len(expected) + 1)  # a terminator split by chunks
                    line += b[:room]
                    end = line.find(expected, start)
                    taken = room
                    if end >= 0:
                        end += len(expected)
                        taken -= len(line) - end  # bytes after the terminator stay queued
                        del line[end:]
                    if taken == len(b):
                        self._rx.pop(0)
                    else:
                        self._rx[0] = (t, b[taken:])
                    if end >= 0 or (size is not None and len(line) >= size):
                        return bytes(line)
            if self._timeout == 0 or timeout.expired():
                return bytes(line)
            left = timeout.time_left() if self._timeout is not None else None
            nap = min(x for x in (wait, left, 0.05) if x is not None)
            time.sleep(max(nap, 0.0))
            self._check()

    def write(self, data: bytes) -> int:
        self._check()
        data = bytes(data)
        dev = self._device
        rate = getattr(dev, "baudrate", None)
        if rate is not None and int(self._baudrate) != int(rate):
            log.warning(
                "%s: port at %s baud, board at %s: bytes lost to framing errors",
                self._port,
                self._baudrate,
                rate,
            )
            return len(data)
        term = getattr(dev, "terminator", "\n").encode()
        now = time.monotonic()
        if self._echo:
            self._queue(data, now)
        self._tx += data
        while term in self._tx:
            raw, _, rest = bytes(self._tx).partition(term)
            self._tx = bytearray(rest)
            line = raw.decode(errors="replace").rstrip("\r")
            if line.strip():
                self._respond(dev, line, term)
        return len(data)

    def _respond(self, dev: LineDevice, line: str, term: bytes) -> None:
        f = getattr(dev, "faults", None)
        if f is not None:
            f._tick()
        if f is not None and f._take("drop"):
            log.info("%s: device vanished on %r", self._port, line)
            self._gone = True
            raise SerialException("device disconnected (the board stopped answering the port)")
        if self._held:
            held, self._held = self._held, b""
            self._queue(held, time.monotonic())  # the late reply lands ahead of this one's
        if f is not None and f._take("silent"):
            log.info("%s: no reply to %r (injected timeout)", self._port, line)
            return
        reply = dev.handle(line)
        if reply is None:
            return
        data = (reply.encode() if isinstance(reply, str) else bytes(reply)) + term
        if f is not None and f._take("garble"):
            data = bytes(b ^ 0x5A for b in data[: -len(term)]) + term
        if f is not None and f._take("late"):
            self._held = data
            return
        latency = f.latency_s if f is not None else 0.0
        self._queue(data, time.monotonic() + latency)

    def _queue(self, data: bytes, t0: float) -> None:
        with self._lock:
            if self._chunk > 0:
                for k in range(0, len(data), self._chunk):
                    self._rx.append(
                        (t0 + self._gap * (k // self._chunk), data[k : k + self._chunk])
                    )
            else:
                self._rx.append((t0, data))

    def reset_input_buffer(self) -> None:
        self._check()
        with self._lock:
            self._rx.clear()

    def reset_output_buffer(self) -> None:
        self._check()
        self._tx.clear()

    def flush(self) -> None:
        self._check()

    @property
    def out_waiting(self) -> int:
        return 0

    def send_break(self, duration: float = 0.25) -> None:
        self._check()

    def _update_break_state(self) -> None:
        pass

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True
