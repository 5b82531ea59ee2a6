"""Bringing an instrument connection back to a known state: the shared part of every
adapter's ``resync`` (``memhil.instruments.capabilities.Resyncable``).

A timeout poisons a connection: the late reply stays in the input buffer and answers the
next query (pyvisa-py #177, #206). ``resync_session`` runs one recipe for every
transport: *clean* (discard stale input, clear the interface), *identify* (a known
query) and check the reply; if anything fails, *reopen* the session at the same
address and try once more; then raise ``ResyncError``. The adapters supply the three
steps; ``visa_clean``/``reopen_visa``/``serial_clean``/``reopen_serial`` are the
transport parts they share.

pyvisa-py (0.8) notes, for ``TCPIP::...::SOCKET`` sessions:

* ``viClear`` is emulated by reading the socket until it is silent for 0.1 s, with no
  end-of-file check: once the peer has closed the connection it spins forever. So
  ``visa_clean`` never calls it on a SOCKET session (a raw socket has no device-clear
  message anyway) and drains with a short timeout instead; other resources (GPIB,
  USBTMC, VXI-11, HiSLIP) get a real device clear where the backend supports it;
* a closed peer is not noticed either: reads time out and the second write raises
  ``BrokenPipeError``. ``check_visa_open`` peeks at the socket to tell.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Callable
from typing import Any

import pyvisa
from pyvisa import constants

log = logging.getLogger(__name__)

#: How long the input must stay silent before it counts as drained (s), and the most a
#: drain may take (a device that keeps talking is left for the identity check to catch).
DRAIN_QUIET_S = 0.1
DRAIN_MAX_S = 2.0

#: The longest an identity query may take while resynchronizing (s): an instrument that
#: does not answer ``*IDN?`` within it is treated as unreachable, whatever the session's
#: (operation-sized) timeout, so a dead instrument is reported in seconds.
PROBE_TIMEOUT_S = 2.0
#: How often a long read checks whether the peer closed the connection (s).
PEER_CHECK_S = 0.25

#: Session settings carried over when a VISA resource is re-opened.
_VISA_SETTINGS = (
    "read_termination",
    "write_termination",
    "timeout",
    "encoding",
    "chunk_size",
    "query_delay",
    "baud_rate",
    "data_bits",
    "parity",
    "stop_bits",
    "flow_control",
)


class ResyncError(ConnectionError):
    """The instrument could not be brought back to a known state (not reachable, or it
    answers the identity query wrongly even on a fresh session)."""


def resync_session(
    name: str,
    address: Any,
    *,
    clean: Callable[[], None],
    identify: Callable[[], str],
    expected: Callable[[str], bool],
    reopen: Callable[[], None],
) -> str:
    """``clean()``, ``identify()`` and check the reply with ``expected``; a reply that does
    not match is given one more drain and query (a late reply that arrived after the
    drain). If that fails or anything raises, ``reopen()`` the session and do it again.
    Returns the identity reply; raises ``ResyncError`` (chained to the last failure)."""
    problems: list[str] = []
    last: BaseException | None = None
    for fresh in (False, True):
        try:
            if fresh:
                log.warning("%s: re-opening the connection at %s (%s)", name, address, problems[-1])
                reopen()
            for _ in range(2):
                clean()
                reply = identify().strip()
                if expected(reply):
                    if problems:
                        log.info("%s: connection restored (%s)", name, reply)
                    return reply
                problems.append(f"unexpected identity reply {reply!r}")
        except Exception as exc:  # noqa: BLE001 - any failure means "not in a known state"
            last = exc
            problems.append(f"{type(exc).__name__}: {exc}")
    raise ResyncError(
        f"{name}: cannot bring the connection at {address} back to a known "
        f"state: {'; '.join(problems)}"
    ) from last


# -- VISA (QCoDeS VisaInstrument.visa_handle, PyMeasure VISAAdapter.connection) ---------------


def is_socket(handle: pyvisa.resources.MessageBasedResource) -> bool:
    return str(handle.resource_name).upper().endswith("::SOCKET")


def check_visa_open(handle: pyvisa.resources.MessageBasedResource) -> None:
    """Raise ``ConnectionError`` when the session is closed or, for a pyvisa-py socket
    session, when the peer has closed the connection (pyvisa-py does not notice)."""
    try:
        session = handle.session
    except pyvisa.errors.InvalidSession:
        raise ConnectionError(f"{handle.resource_name}: the VISA session is closed") from None
    sessions = getattr(handle.visalib, "sessions", None)  # pyvisa-py only
    sock = getattr(sessions.get(session), "interface", None) if isinstance(sessions, dict) else None
    if not isinstance(sock, socket.socket):
        return
    if sock.fileno() < 0:
        raise ConnectionError(f"{handle.resource_name}: the socket is closed")
    readable, _, _ = select.select([sock], [], [], 0)
    if readable:
        try:
            data = sock.recv(1, socket.MSG_PEEK)
        except OSError as exc:
            raise ConnectionError(f"{handle.resource_name}: {exc}") from exc
        if not data:
            raise ConnectionError(f"{handle.resource_name}: the peer closed the connection")


def read_watching_peer(
    handle: pyvisa.resources.MessageBasedResource, read: Callable[[], Any]
) -> Any:
    """``read()`` (one read on ``handle``) within the session's timeout, in slices of
    ``PEER_CHECK_S``: a pyvisa-py socket whose peer closed the connection raises
    ``ConnectionError`` at the next slice instead of timing out at the end (pyvisa-py
    keeps partial input between reads, so slicing loses nothing)."""
    if not is_socket(handle):
        return read()
    total_ms = handle.timeout
    deadline = None if total_ms is None else time.monotonic() + total_ms / 1000.0
    try:
        while True:
            left_ms = None if deadline is None else (deadline - time.monotonic()) * 1000.0
            handle.timeout = (
                PEER_CHECK_S * 1000.0
                if left_ms is None
                else max(1.0, min(left_ms, PEER_CHECK_S * 1000.0))
            )
            try:
                return read()
            except pyvisa.errors.VisaIOError as exc:
                if exc.error_code != constants.StatusCode.error_timeout:
                    raise
                check_visa_open(handle)  # ConnectionError when the peer has gone
                if deadline is not None and time.monotonic() >= deadline:
                    raise
    finally:
        try:
            handle.timeout = total_ms
        except pyvisa.errors.Error:
            pass


def drain_visa(
    handle: pyvisa.resources.MessageBasedResource,
    quiet_s: float = DRAIN_QUIET_S,
    max_s: float = DRAIN_MAX_S,
) -> int:
    """Read and discard input until none arrives for ``quiet_s``; returns the bytes
    dropped. The session's timeout is restored."""
    try:
        handle.flush(constants.BufferOperation.discard_read_buffer_no_io)
    except (NotImplementedError, pyvisa.errors.VisaIOError):
        pass  # pyvisa-py keeps no read buffer for this session type: the loop drains
    saved, dropped = handle.timeout, 0
    handle.timeout = quiet_s * 1000.0
    deadline = time.monotonic() + max_s
    try:
        while time.monotonic() < deadline:
            try:
                dropped += len(handle.read_raw())
            except pyvisa.errors.VisaIOError as exc:
                if exc.error_code == constants.StatusCode.error_timeout:
                    break
                raise
    finally:
        handle.timeout = saved
    if dropped:
        log.info("%s: discarded %d stale bytes", handle.resource_name, dropped)
    return dropped


def visa_clean(
    handle: pyvisa.resources.MessageBasedResource, device_clear: Callable[[], None] | None = None
) -> None:
    """Check the session is alive, device-clear it where that is a real viClear (not on
    SOCKET sessions: see the module docstring), then drain stale input."""
    check_visa_open(handle)
    if not is_socket(handle):
        try:
            (device_clear or handle.clear)()
        except (NotImplementedError, pyvisa.errors.VisaIOError) as exc:
            unsupported = (None, constants.StatusCode.error_nonsupported_operation)
            if getattr(exc, "error_code", None) not in unsupported:
                raise
            log.debug("%s: device clear not supported (%s)", handle.resource_name, exc)
    drain_visa(handle)


def visa_settings(handle: pyvisa.resources.MessageBasedResource) -> dict[str, Any]:
    """The session settings ``apply_visa_settings`` restores on a re-opened resource."""
    out = {}
    for attr in _VISA_SETTINGS:
        try:
            out[attr] = getattr(handle, attr)
        except (AttributeError, pyvisa.errors.Error):
            pass
    return out


def apply_visa_settings(
    handle: pyvisa.resources.MessageBasedResource, settings: dict[str, Any]
) -> None:
    for attr, value in settings.items():
        if hasattr(type(handle), attr):
            setattr(handle, attr, value)


def reopen_visa(
    handle: pyvisa.resources.MessageBasedResource,
    open_resource: Callable[[str], pyvisa.resources.MessageBasedResource],
) -> pyvisa.resources.MessageBasedResource:
    """Open ``handle``'s resource again with ``open_resource(name)`` (which may close the
    old session itself) and give it the old session's settings; returns the new one."""
    settings, name = visa_settings(handle), str(handle.resource_name)
    try:
        handle.close()
    except Exception as exc:  # noqa: BLE001 - already closed or broken: a new one follows
        log.debug("%s: closing the old session: %s", name, exc)
    new = open_resource(name)
    apply_visa_settings(new, settings)
    return new


def visa_library(handle: pyvisa.resources.MessageBasedResource) -> str:
    """The ``visalib`` string that opens a resource manager of ``handle``'s backend."""
    lib = handle.visalib
    backend = {"PyVisaLibrary": "py", "SimVisaLibrary": "sim", "MockLabVisaLibrary": "memhil"}.get(
        type(lib).__name__, "ivi"
    )
    return "@py" if backend == "py" else f"{lib.library_path}@{backend}"


# -- pyserial (PyMeasure SerialAdapter.connection) --------------------------------------------


def serial_clean(port: Any, quiet_s: float = DRAIN_QUIET_S, max_s: float = DRAIN_MAX_S) -> None:
    """Discard buffered and late input on a pyserial port (raises ``SerialException``
    when the port is closed or the device is gone)."""
    import serial

    if not port.is_open:
        raise serial.SerialException(f"{port.port}: the port is closed")
    port.reset_output_buffer()
    port.reset_input_buffer()
    saved = port.timeout
    port.timeout = quiet_s
    deadline = time.monotonic() + max_s
    try:
        while port.read(4096) and time.monotonic() < deadline:
            pass
    finally:
        port.timeout = saved


def reopen_serial(port: Any) -> None:
    """Close and re-open a pyserial port at the same port name or URL (and settings)."""
    try:
        port.close()
    except Exception as exc:  # noqa: BLE001 - already closed or broken: re-open anyway
        log.debug("%s: closing the port: %s", port.port, exc)
    port.open()


def idn_matches(reply: str, known: Any = None) -> bool:
    """Whether ``reply`` looks like an ``*IDN?`` answer (at least two non-empty
    comma-separated fields, printable) and, when ``known`` (a QCoDeS IDN dict or an
    earlier reply) is given, names the same model and serial number."""
    parts = [p.strip() for p in reply.split(",")]
    if len(parts) < 2 or not all(parts[:2]) or not reply.isprintable():
        return False
    if isinstance(known, str):
        return reply == known.strip()
    known = known or {}
    return all(not known.get(k) or str(known[k]) in reply for k in ("model", "serial"))


# -- driver families ----------------------------------------------------------------------------


def resync_qcodes(
    instr: Any,
    *,
    identify: Callable[[], str],
    expected: Callable[[str], bool],
    clear_status: bool = True,
    idle: Callable[[], None] | None = None,
) -> str:
    """``resync`` of a QCoDeS ``VisaInstrument``: device clear (where it is a real
    viClear), drain, ``idle()`` (commands that return the command interface to idle
    whatever state it is in, e.g. out of a half-loaded script), ``*CLS``
    (``clear_status``), ``identify()``; re-open with
    ``set_address`` (same address, same backend, the old session's terminators and
    timeout) when that fails. The driver's timeout is restored."""
    saved_timeout = instr.timeout()
    if saved_timeout is None or saved_timeout > PROBE_TIMEOUT_S:
        instr.timeout(PROBE_TIMEOUT_S)  # re-opened sessions inherit it; restored below

    def clean() -> None:
        visa_clean(instr.visa_handle, instr.device_clear)
        if idle is not None:
            idle()
        if clear_status:
            instr.write("*CLS")

    def reopen() -> None:
        lib = visa_library(instr.visa_handle)

        def open_resource(name: str) -> Any:
            instr.set_address(name, lib)
            return instr.visa_handle

        reopen_visa(instr.visa_handle, open_resource)

    try:
        return resync_session(
            instr.name,
            instr.visa_handle.resource_name,
            clean=clean,
            identify=identify,
            expected=expected,
            reopen=reopen,
        )
    finally:
        try:
            instr.timeout(saved_timeout)
        except pyvisa.errors.Error:  # the session could not be re-opened: ResyncError follows
            pass


def resync_pymeasure(
    instr: Any, *, identify: Callable[[], str], expected: Callable[[str], bool]
) -> str:
    """``resync`` of a PyMeasure ``Instrument`` over a ``VISAAdapter`` (drain, device
    clear where real; re-open the resource through the adapter's resource manager) or a
    ``SerialAdapter`` (flush and drain; close and re-open the port or URL)."""
    import serial

    adapter = instr.adapter
    conn = adapter.connection
    if isinstance(conn, pyvisa.resources.MessageBasedResource):
        address = conn.resource_name

        def clean() -> None:
            visa_clean(adapter.connection)

        def reopen() -> None:
            adapter.connection = reopen_visa(adapter.connection, adapter.manager.open_resource)

        try:
            saved_ms = conn.timeout
        except pyvisa.errors.Error:  # a closed session: resync_session re-opens it
            saved_ms = None
        if saved_ms is not None and saved_ms > PROBE_TIMEOUT_S * 1000.0:
            conn.timeout = PROBE_TIMEOUT_S * 1000.0  # re-opened sessions inherit it
        try:
            return resync_session(
                instr.name,
                address,
                clean=clean,
                identify=identify,
                expected=expected,
                reopen=reopen,
            )
        finally:
            try:
                if saved_ms is not None:
                    adapter.connection.timeout = saved_ms
            except pyvisa.errors.Error:  # not re-opened: ResyncError follows
                pass
    elif isinstance(conn, serial.SerialBase):
        address = conn.port

        def clean() -> None:
            serial_clean(adapter.connection)

        def reopen() -> None:
            reopen_serial(adapter.connection)
    else:
        raise NotImplementedError(f"{instr.name}: cannot resync a {type(adapter).__name__}")
    return resync_session(
        instr.name, address, clean=clean, identify=identify, expected=expected, reopen=reopen
    )


__all__ = [
    "DRAIN_MAX_S",
    "DRAIN_QUIET_S",
    "PEER_CHECK_S",
    "PROBE_TIMEOUT_S",
    "ResyncError",
    "apply_visa_settings",
    "check_visa_open",
    "drain_visa",
    "idn_matches",
    "is_socket",
    "read_watching_peer",
    "reopen_serial",
    "reopen_visa",
    "resync_pymeasure",
    "resync_qcodes",
    "resync_session",
    "serial_clean",
    "visa_clean",
    "visa_library",
    "visa_settings",
]
