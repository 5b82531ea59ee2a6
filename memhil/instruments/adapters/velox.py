"""``Prober`` adapter over PyMeasure's unmodified FormFactor ``Velox`` driver.

Uses the driver's own methods (``chuck.move_contact``/``move_separation``,
``wafermap.step_first_die``/``step_next_die``/``step_to_die``/``enabled``) and, for the
reads the driver does not wrap, its ``values`` on standard Velox SCI queries
(``ReadMapPosition``, ``ReadChuckPosition Y Z``, ``ReadChuckHeights Y``); every reply goes
through ``Velox.read``, so a non-zero error code raises ``ConnectionError`` and 703 sets
``wafermap.end_reached``.

Interlock: ``step_to`` (and ``step_first``/``step_next``) asks the station whether the
chuck is at contact height and refuses with ``ProberInterlockError`` before anything
moves; the station refuses as well (defence in depth).

Replies: ``StrictVelox`` (what an address opens) is the driver with a stricter ``read``:
every SCI reply but ``*IDN?``'s must be ``<code>: <payload>`` (the driver takes a reply
without ':' as a bare success value, so a garbled "0:" would pass), and a non-zero code is
a ``ProberError`` (the prober answered: not retried). A peer that closed the connection is
noticed at once (``session.read_watching_peer``), not after the 40 s read timeout.

Recovery: every operation but ``step_next`` is idempotent (absolute heights, absolute
dies, queries), so a communication failure (timeout, dropped connection, garbled reply)
resyncs the connection (re-opening it if needed) and retries, ``retries`` times at most.
``separate`` (and so ``safe_state``) is verified by reading the chuck height back.

``contact_ok``: a prober cannot see whether the needles touch the pads; it can only
report the chuck height. Pass ``continuity`` (a callable returning True when a known
structure conducts, e.g. a small read through the array board or an SMU) for a real
check; without one ``contact_ok`` equals ``in_contact``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pyvisa
from pymeasure.instruments.formfactor.velox import Velox

from memhil.instruments.registry import register_instrument
from memhil.instruments.session import (
    ResyncError,
    idn_matches,
    read_watching_peer,
    resync_pymeasure,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_REPLY = re.compile(r"(\d+):(.*)", re.S)


class ProberInterlockError(RuntimeError):
    """A move was refused because the chuck is in contact."""


class ProberError(RuntimeError):
    """The prober answered a command with a non-zero error code (it was received and
    refused: not a communication failure, so never retried)."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


class GarbledReplyError(ValueError):
    """A reply that is not ``<code>: <payload>`` (corrupted on the way)."""


class StrictVelox(Velox):
    """PyMeasure's ``Velox`` with a strict reply check (see the module docstring); the
    driver's commands and channels are used unchanged."""

    _bare_reply = False  # the last command was an IEEE-488 query (*IDN?): no code

    def write(self, command: str, **kwargs: Any) -> None:
        self._bare_reply = command.lstrip().startswith("*")
        super().write(command, **kwargs)

    def read(self) -> str:
        self.error_code, self.error_message = 0, ""
        self.wafermap.end_reached = False
        conn = getattr(self.adapter, "connection", None)
        raw = super(Velox, self).read  # the adapter's line, before Velox's parsing
        got = (
            read_watching_peer(conn, raw)
            if isinstance(conn, pyvisa.resources.MessageBasedResource)
            else raw()
        )
        if self._bare_reply:
            return got
        m = _REPLY.fullmatch(got.strip())
        if m is None:
            raise GarbledReplyError(f"{self.name}: reply {got!r} is not '<code>: <payload>'")
        code, response = int(m.group(1)), m.group(2).strip()
        if code == 703:  # end of the wafer map: a status, as the driver reports it
            self.error_code, self.error_message = code, response
            self.wafermap.end_reached = True
        elif code:
            self.error_code, self.error_message = code, response
            raise ProberError(code, response)
        return response


def _communication_failure(exc: BaseException) -> bool:
    """A failure a resync can cure (timeout, dropped or refused connection, garbage);
    a ``ProberError`` is the prober's own answer and ``ResyncError`` means resync failed."""
    if isinstance(exc, (ProberError, ResyncError)):
        return False
    return isinstance(
        exc,
        (
            pyvisa.errors.VisaIOError,
            pyvisa.errors.InvalidSession,
            OSError,
            ValueError,
            TimeoutError,
        ),
    )


class VeloxProber:
    """A FormFactor Velox station as a memhil ``Prober``."""

    def __init__(
        self,
        velox: Velox | str,
        name: str = "prober",
        *,
        continuity: Callable[[], bool] | None = None,
        velocity: float = 100.0,
        contact_tolerance_um: float = 1.0,
        retries: int = 2,
        **velox_kwargs: Any,
    ):
        if isinstance(velox, str):
            velox_kwargs.setdefault("read_termination", "\n")
            velox_kwargs.setdefault("write_termination", "\n")
            velox = StrictVelox(velox, **velox_kwargs)
        self.velox = velox
        self.name = name
        self.continuity = continuity
        self.velocity = float(velocity)
        self.contact_tolerance_um = float(contact_tolerance_um)
        self._map: list[tuple[int, int]] | None = None
        self._subsites = 1
        self._idn: str | None = None
        self.retries = int(retries)

    def _op(self, what: str, fn: Callable[[], T]) -> T:
        """Run an idempotent operation; after a communication failure resync (re-open if
        the connection is gone) and retry, ``retries`` times at most. A failed resync
        (the prober cannot be reached) ends it at once."""
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as exc:  # classified, re-raised unless retried
                if not _communication_failure(exc) or attempt == self.retries:
                    raise
                log.warning(
                    "%s: %s failed (%s: %s); resynchronizing and retrying (%d/%d)",
                    self.name,
                    what,
                    type(exc).__name__,
                    exc,
                    attempt + 1,
                    self.retries,
                )
                self.resync()
        raise AssertionError("unreachable")

    # -- wafer map -------------------------------------------------------------------------
    def load_map(self, dies: Sequence[tuple[int, int]], subsites: int = 1) -> None:
        """The dies (and subsites per die) this run may visit. Velox keeps its map in
        the WaferMap application, which must be registered; ``step_to`` refuses dies
        outside the map given here before sending anything."""
        if subsites < 1:
            raise ValueError(f"subsites must be >= 1, got {subsites}")
        if not self._op("IsAppRegistered", lambda: self.velox.wafermap.enabled):
            raise RuntimeError(f"{self.name}: the Velox WaferMap application is not registered")
        self._map = [(int(c), int(r)) for c, r in dies]
        self._subsites = int(subsites)

    @property
    def dies(self) -> list[tuple[int, int]] | None:
        return None if self._map is None else list(self._map)

    def step_to(self, die: tuple[int, int], subsite: int = 0) -> None:
        die = (int(die[0]), int(die[1]))
        if self._map is not None and die not in self._map:
            raise ValueError(f"{self.name}: die {die} is not in the loaded map")
        if not 0 <= subsite < self._subsites:
            raise ValueError(f"{self.name}: subsite {subsite} not in 0..{self._subsites - 1}")
        self._interlock(f"step to die {die}")
        self._op(
            "step to die",
            lambda: self.velox.wafermap.step_to_die(die[0], die[1], subsite if subsite else None),
        )
        got = self.position()
        if got != (die, subsite):
            raise RuntimeError(
                f"{self.name}: asked for die {die} subsite {subsite}, the station reports {got}"
            )

    def step_first(self) -> tuple[int, int]:
        """First die of the station's map (subsite 0)."""
        self._interlock("step to the first die")
        col, row = self._op("step to the first die", self.velox.wafermap.step_first_die)[:2]
        return int(col), int(row)

    def step_next(self) -> tuple[int, int] | None:
        """Next die of the station's map, or None at the end of the map (703). Not
        retried: stepping is relative, a lost reply leaves the die unknown (read
        ``position`` back)."""
        self._interlock("step to the next die")
        reply = self.velox.wafermap.step_next_die()
        if self.velox.wafermap.end_reached:
            return None
        return int(reply[0]), int(reply[1])

    def position(self) -> tuple[tuple[int, int], int]:
        col, row, _x, _y, site, *_ = self._op(
            "ReadMapPosition", lambda: self.velox.values("ReadMapPosition", separator=" ")
        )
        return (int(col), int(row)), int(site)

    # -- chuck height ----------------------------------------------------------------------
    def contact(self) -> None:
        self._op("MoveChuckContact", lambda: self.velox.chuck.move_contact(self.velocity))

    def separate(self) -> None:
        """Chuck to separation height, verified by reading the height back."""
        self._op("MoveChuckSeparation", lambda: self.velox.chuck.move_separation(self.velocity))
        if self.in_contact():
            raise ProberError(
                -1, f"{self.name}: chuck still at contact height after MoveChuckSeparation"
            )

    def in_contact(self) -> bool:
        def query() -> bool:
            z = float(self.velox.values("ReadChuckPosition Y Z", separator=" ")[2])
            contact = float(self.velox.values("ReadChuckHeights Y", separator=" ")[0])
            return contact >= 0 and z >= contact - self.contact_tolerance_um

        return self._op("ReadChuckPosition", query)

    def contact_ok(self) -> bool:
        if not self.in_contact():
            return False
        return bool(self.continuity()) if self.continuity is not None else True

    def safe_state(self) -> None:
        self.separate()

    def resync(self) -> None:
        """``Resyncable``: drain (device clear where the VISA session has a real one),
        ``*IDN?`` (SCI has no ``*CLS``) must look like an identity and equal the first
        one seen; re-open the VISA resource if that fails. The chuck is not moved."""
        velox = self.velox
        self._idn = resync_pymeasure(
            velox, identify=lambda: velox.ask("*IDN?"), expected=lambda r: idn_matches(r, self._idn)
        )

    def close(self) -> None:
        adapter = getattr(self.velox, "adapter", None)
        if adapter is not None:
            adapter.close()

    def _interlock(self, what: str) -> None:
        if self.in_contact():
            raise ProberInterlockError(
                f"{self.name}: {what} refused: the chuck is in contact; separate first"
            )


def create(address: str, name: str, **options: Any) -> VeloxProber:
    """Open a Velox station at ``address`` (``options`` go to ``VeloxProber``)."""
    return VeloxProber(address, name, **options)


register_instrument(
    "formfactor_velox",
    "prober",
    create,
    options=(
        "visa_library",
        "timeout",
        "velocity",
        "contact_tolerance_um",
        "read_termination",
        "write_termination",
    ),
    visa_option="visa_library",
)
