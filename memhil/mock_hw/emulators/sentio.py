"""MPI SENTIO probe-station emulator: the native remote commands MPI's unmodified
``sentio-prober-control`` package sends (SENTIO remote command reference, "*RCS 1"
command set), served on a loopback socket, stepping a ``MockChip`` across its wafer.

Every command but ``*RCS`` gets one reply line ``"<errc | status << 10>,<cmd_id>,<msg>"``
(``Response.parse_resp``); error codes are SENTIO's ``RemoteCommandError`` values,
status bit 0 (``StatusBits.EndOfRoute``) is set on a step onto the last die of the map.

Commands served::

    *RCS 1                               native command set (no reply)
    *IDN?                                MPI Corporation,SENTIO,...
    status:get_version                   0,0,Version: 24.0.0
    status:get_machine_status            0,0,Ready
    move_chuck_contact / _separation     0,0,<chuck z> (um)
    get_chuck_z <ref>                    0,0,<z>
    get_chuck_site_heights Wafer         0,0,<contact>,<separation>,<overtravel>,<hover>
    map:step_die c, r, s                 0,0,c,r,s   (refused in contact: InvalidOperation)
    map:step_first_die [s]               0,0,c,r,s
    map:step_next_die [s]                0,0,c,r,s   (EndOfRoute status on the last die)
    map:die:get_current_index            0,0,c,r,s

The wafer map is ``chip.wafer.dies`` (route order) with ``subsites`` subsites per die.
Contact: like the Velox emulator, ``contact_ok`` is True at contact height on a die unless
``lose_contact()`` lifted the needles (the prober does not notice); emulators that reach the
chip through the pads read an open circuit then. Chuck moves advance the virtual clock.
"""

from __future__ import annotations

import logging
import threading

from memhil.mock_hw.chip import MockChip
from memhil.mock_hw.server import LineServer, ServedEmulator

log = logging.getLogger(__name__)

# SENTIO RemoteCommandError codes (sentio_prober_control.Sentio.Enumerations)
ERR_INVALID_COMMAND = 3
ERR_INVALID_PARAMETER = 5
ERR_END_OF_ROUTE = 11
ERR_INVALID_OPERATION = 12
STATUS_END_OF_ROUTE = 1


class _SentioError(Exception):
    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code, self.text = code, text


class SentioEmulator(ServedEmulator):
    """A SENTIO station holding ``chip``'s wafer: chuck height and wafer-map position."""

    idn = "MPI Corporation,SENTIO,MOCK0001,24.0.0"
    version = "Version: 24.0.0"

    def __init__(
        self,
        chip: MockChip,
        name: str = "prober",
        *,
        subsites: int = 1,
        contact_um: float = 10000.0,
        separation_um: float = 300.0,
        step_time_s: float = 0.5,
        z_time_s: float = 0.2,
    ):
        self.chip = chip
        self.name = name
        self.subsites = int(subsites)
        self.contact_um = float(contact_um)
        self.separation_um = float(separation_um)
        self.step_time_s, self.z_time_s = float(step_time_s), float(z_time_s)
        self.lock = threading.RLock()
        self.z_um = self.contact_um - self.separation_um
        self.index = 0
        self.site = 0
        self._lost = self._lost_persistent = False
        self.server: LineServer | None = None
        self.transcript: list[str] = []

    # -- state and faults -------------------------------------------------------------------
    @property
    def dies(self) -> list[tuple[int, int]]:
        return [tuple(d) for d in self.chip.wafer.dies]  # type: ignore[misc]

    @property
    def in_contact(self) -> bool:
        return self.z_um >= self.contact_um

    @property
    def contact_ok(self) -> bool:
        with self.lock:
            return self.in_contact and not self._lost

    def lose_contact(self, persistent: bool = False) -> None:
        """Needles lift off the pads while the chuck stays at contact height."""
        with self.lock:
            self._lost, self._lost_persistent = True, persistent

    def commands(self) -> list[str]:
        return list(self.transcript)

    # -- wire -------------------------------------------------------------------------------
    def handle(self, line: str) -> str | None:
        with self.lock:
            self.transcript.append(line)
            del self.transcript[:-10_000]
            head, _, rest = line.strip().partition(" ")
            args = [a.strip() for a in rest.split(",")] if rest.strip() else []
            if head.upper() == "*RCS":
                return None
            if head.upper() == "*IDN?":
                return self.idn
            handler = getattr(self, "_cmd_" + head.lower().replace(":", "_"), None)
            try:
                if handler is None:
                    raise _SentioError(ERR_INVALID_COMMAND, f"Unknown command {head}")
                status, msg = handler(args)
            except _SentioError as err:
                log.info("%s: %s -> %d %s", self.name, line, err.code, err.text)
                return f"{err.code},0,{err.text}"
            return f"{status << 10},0,{msg}"

    # -- commands ---------------------------------------------------------------------------
    def _cmd_status_get_version(self, args):
        return 0, self.version

    def _cmd_status_get_machine_status(self, args):
        return 0, "Ready"

    def _move_z(self, z_um: float) -> None:
        self.z_um = z_um
        self.chip.clock.advance(self.z_time_s)

    def _cmd_move_chuck_contact(self, args):
        if self.chip.die not in self.dies:
            raise _SentioError(ERR_INVALID_OPERATION, "Chuck is not over a die")
        self._move_z(self.contact_um)
        if not self._lost_persistent:
            self._lost = False  # a fresh touchdown
        return 0, f"{self.z_um:g}"

    def _cmd_move_chuck_separation(self, args):
        self._move_z(self.contact_um - self.separation_um)
        return 0, f"{self.z_um:g}"

    def _cmd_get_chuck_z(self, args):
        return 0, f"{self.z_um:g}"

    def _cmd_get_chuck_site_heights(self, args):
        if args and args[0] not in ("Wafer", "0"):
            raise _SentioError(ERR_INVALID_PARAMETER, f"Chuck site {args[0]} not emulated")
        return 0, f"{self.contact_um:g},{self.separation_um:g},0,0"

    def _step(self, index: int, site: int) -> tuple[int, str]:
        if self.in_contact:
            raise _SentioError(ERR_INVALID_OPERATION, "Chuck is in contact; separate first")
        if not 0 <= site < self.subsites:
            raise _SentioError(ERR_INVALID_PARAMETER, f"Subsite {site} not in the map")
        self.index, self.site = index, site
        die = self.dies[index]
        self.chip.select_die(die)
        self.chip.clock.advance(self.step_time_s)
        status = STATUS_END_OF_ROUTE if index == len(self.dies) - 1 else 0
        return status, f"{die[0]},{die[1]},{site}"

    def _ints(self, args: list[str]) -> list[int]:
        try:
            return [int(a) for a in args]
        except ValueError:
            raise _SentioError(ERR_INVALID_PARAMETER, f"Invalid parameter {args}") from None

    def _cmd_map_step_die(self, args):
        col, row, *site = self._ints(args)
        if (col, row) not in self.dies:
            raise _SentioError(ERR_INVALID_PARAMETER, f"Die {col},{row} is not in the map")
        return self._step(self.dies.index((col, row)), site[0] if site else 0)

    def _cmd_map_step_first_die(self, args):
        return self._step(0, self._ints(args)[0] if args else 0)

    def _cmd_map_step_next_die(self, args):
        if self.index + 1 >= len(self.dies):
            raise _SentioError(ERR_END_OF_ROUTE, "End of route")
        return self._step(self.index + 1, self._ints(args)[0] if args else self.site)

    def _cmd_map_die_get_current_index(self, args):
        die = self.dies[self.index]
        return 0, f"{die[0]},{die[1]},{self.site}"


__all__ = ["SentioEmulator"]
