"""A threaded line server on 127.0.0.1 that puts an emulator behind a real socket.

Drivers reach it exactly as a bench instrument: pyvisa-py opens
``TCPIP0::127.0.0.1::<port>::SOCKET`` (set ``read_termination`` to the server's
terminator). Each received line goes to ``handler(line) -> str | bytes | None``; a str
reply gets the terminator appended, bytes (binary blocks) are sent as they are, None
sends nothing. Faults are injected per server through its ``FaultInjector``.

Written here rather than taken from a library: the emulators need per-connection fault
injection (silence, garbling, dropped sockets) and a shared lock with the chip model,
which socketserver-based helpers in comet/sinstruments do not offer.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Handler = Callable[[str], "str | bytes | None"]

_session = threading.local()
_session_ids = iter(range(1, 1 << 62))


def current_session() -> int | None:
    """The connection whose command the calling handler is answering (an id unique in the
    process), or None outside a server (an emulator driven in-process). Emulators keep
    per-connection state (a TSP script being loaded) under it; an emulator with a
    ``session_closed(id)`` method is told when that connection ends."""
    return getattr(_session, "id", None)


@dataclass
class FaultInjector:
    """Faults for one server, armed by tests: each counter applies to that many of the
    next commands; ``latency_s`` delays every reply (wall time)."""

    latency_s: float = 0.0
    silent: int = 0  # swallow the next N commands without a reply (a timeout)
    garble: int = 0  # corrupt the next N replies
    drop: int = 0  # close the connection on the next N commands, before replying
    late: int = 0  # hold the next N replies back until the command after each arrives
    delay: dict = field(default_factory=dict, repr=False)  # fault -> commands to let pass first
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def timeout_next(self, n: int = 1, *, after: int = 0) -> None:
        """No reply to ``n`` commands, starting ``after`` commands from now."""
        self._arm("silent", n, after)

    def garble_next(self, n: int = 1, *, after: int = 0) -> None:
        self._arm("garble", n, after)

    def drop_next(self, n: int = 1, *, after: int = 0) -> None:
        """Close the connection on a command ``after`` commands from now (mid-operation)."""
        self._arm("drop", n, after)

    def late_next(self, n: int = 1, *, after: int = 0) -> None:
        """Hold the reply to ``n`` commands back and send each just before whatever the
        following command produces: the caller's read times out, and its reply then
        answers the next query (a stale reply), whatever the load on the machine. A
        deterministic ``latency_s`` with no race between the driver's timeout and the
        reply."""
        self._arm("late", n, after)

    def clear(self) -> None:
        with self._lock:
            self.latency_s, self.silent, self.garble, self.drop, self.late = 0.0, 0, 0, 0, 0
            self.delay.clear()

    def _arm(self, name: str, n: int, after: int) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)
            if after:
                self.delay[name] = after

    def _tick(self) -> None:
        """One command passed: count down the ``after`` delays."""
        with self._lock:
            for name in list(self.delay):
                self.delay[name] -= 1
                if self.delay[name] < 0:
                    del self.delay[name]

    def _take(self, name: str) -> bool:
        with self._lock:
            n = getattr(self, name)
            if n > 0 and name not in self.delay:
                setattr(self, name, n - 1)
                return True
            return False


TRANSCRIPT_LINES = 10_000  # lines an emulator's transcript (command log) keeps


class LineServer:
    """Serve ``handler`` on a loopback TCP port (0 = pick a free one) until ``stop``."""

    def __init__(
        self,
        handler: Handler,
        *,
        name: str = "",
        host: str = "127.0.0.1",
        port: int = 0,
        terminator: str = "\n",
        faults: FaultInjector | None = None,
    ):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the mock lab serves on loopback only, not {host!r}")
        self.handler = handler
        self.name = name or getattr(handler, "__qualname__", "emulator")
        self.terminator = terminator
        self.faults = faults or FaultInjector()
        self._sock = socket.create_server((host, port))
        self._sock.settimeout(0.2)
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._held: dict[socket.socket, bytes] = {}  # replies held back by ``late_next``
        self._running = threading.Event()
        self.transactions = 0  # commands received, for overhead accounting

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    @property
    def resource_name(self) -> str:
        """The VISA resource string a pyvisa-py driver opens."""
        return f"TCPIP0::127.0.0.1::{self.port}::SOCKET"

    def start(self) -> LineServer:
        self._running.set()
        t = threading.Thread(target=self._accept_loop, name=f"mock-{self.name}", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._running.clear()
        # shut down before closing: a shutdown wakes the threads blocked in accept/recv at
        # once (a close alone leaves them asleep until their 0.2 s poll timeout runs out)
        for c in list(self._conns):
            _close(c)
        _close(self._sock)
        for t in self._threads:
            t.join(timeout=2.0)

    def __enter__(self) -> LineServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while self._running.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        term = self.terminator.encode()
        buf = b""
        conn.settimeout(0.2)
        _session.id = sid = next(_session_ids)
        try:
            while self._running.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                buf += chunk
                while term in buf:
                    raw, buf = buf.split(term, 1)
                    line = raw.decode(errors="replace").strip("\r")
                    if not line.strip():
                        continue
                    if not self._respond(conn, line):
                        return
        except OSError:
            return
        finally:
            _close(conn)
            self._held.pop(conn, None)
            if conn in self._conns:
                self._conns.remove(conn)
            closed = getattr(getattr(self.handler, "__self__", None), "session_closed", None)
            if callable(closed):
                closed(sid)

    def _respond(self, conn: socket.socket, line: str) -> bool:
        """Handle one command; False when the connection was dropped."""
        self.transactions += 1
        self.faults._tick()
        # Acknowledge at once: a driver that writes twice before reading (QCoDeS B220x:
        # ``*CLS`` then the command) has its second write held by the client's Nagle
        # algorithm until this ACK, which Linux otherwise delays up to 40 ms.
        quickack = getattr(socket, "TCP_QUICKACK", None)
        if quickack is not None:
            try:
                conn.setsockopt(socket.IPPROTO_TCP, quickack, 1)
            except OSError:
                pass
        f = self.faults
        if f._take("drop"):
            log.info("%s: dropping the connection on %r", self.name, line)
            return False
        held = self._held.pop(conn, None)
        if held is not None:
            conn.sendall(held)  # the late reply lands ahead of this command's
        if f._take("silent"):
            log.info("%s: no reply to %r (injected timeout)", self.name, line)
            return True
        reply = self.handler(line)
        if reply is None:
            return True
        data = reply if isinstance(reply, bytes) else (reply + self.terminator).encode()
        if f._take("garble"):
            data = bytes((b ^ 0x5A) for b in data[:-1]) + data[-1:]
        if f._take("late"):
            log.info("%s: holding the reply to %r back (injected late reply)", self.name, line)
            self._held[conn] = data
            return True
        if f.latency_s > 0:
            time.sleep(f.latency_s)
        conn.sendall(data)
        return True


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected (a listening socket on some systems) or already closed
    try:
        s.close()
    except OSError:
        pass


class ServedEmulator:
    """Mixin for an emulator with ``handle(line)`` and ``name``: serve it on its own
    loopback port (``start``/``stop``, context manager, ``resource_name``). The mock lab
    serves emulators itself; this is for tests and one-off use."""

    server: LineServer | None = None

    def start(self):
        self.server = LineServer(self.handle, name=self.name, terminator="\n").start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def resource_name(self) -> str:
        if self.server is None:
            raise RuntimeError("start() the emulator first")
        return self.server.resource_name

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
