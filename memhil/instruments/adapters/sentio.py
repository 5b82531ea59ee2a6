"""``Prober`` adapter over MPI's unmodified ``sentio-prober-control`` (``SentioProber``,
MPI's maintained package for the SENTIO remote command set).

The address is the station's SENTIO remote port as a VISA socket resource
(``TCPIP0::<host>::35555::SOCKET``), opened with the package's TCP/IP communicator
(``host:port``): its VISA communicator opens the system VISA without a read termination,
which a raw socket needs. Commands: ``move_chuck_contact``/``move_chuck_separation``,
``map.step_die``, ``map.die.get_current_index``, ``get_chuck_z`` and
``get_chuck_site_heights``; an error reply raises the package's ``ProberException``.

Interlock: ``step_to`` asks the chuck height first and refuses in contact
(``ProberInterlockError``) before anything moves; SENTIO refuses as well. ``separate`` is
verified by reading the chuck height back. ``contact_ok`` equals ``in_contact`` unless a
``continuity`` callable is given (a prober cannot see the needles touch the pads; the
bench check adds a read of its test structure, docs/bench-bringup.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from memhil.instruments.adapters.velox import ProberInterlockError
from memhil.instruments.registry import register_instrument
from memhil.instruments.session import ResyncError

_SOCKET = re.compile(r"TCPIP\d*::([^:]+)::(\d+)::SOCKET$", re.I)


def sentio_address(address: str) -> str:
    """``TCPIP0::host::port::SOCKET`` as the package's ``host:port``; ValueError otherwise."""
    m = _SOCKET.match(address.strip())
    if m is None:
        raise ValueError(
            f"SENTIO address {address!r}: expected its remote port as "
            f"'TCPIP0::<host>::<port>::SOCKET' (SENTIO listens on 35555 by default)"
        )
    return f"{m.group(1)}:{m.group(2)}"


class SentioProberAdapter:
    """A SENTIO station as a ``Prober``; ``contact_tolerance_um``: how far below the
    contact height the chuck may sit and still count as in contact."""

    def __init__(
        self,
        address: str,
        name: str,
        *,
        contact_tolerance_um: float = 1.0,
        continuity: Callable[[], bool] | None = None,
    ):
        self.name = name
        self.address = address
        self.contact_tolerance_um = float(contact_tolerance_um)
        self.continuity = continuity
        self._map: list[tuple[int, int]] | None = None
        self._subsites = 1
        self.sentio = self._open()

    def _open(self) -> Any:
        # imported here: the package prints a line per subpackage on import, which every
        # `memhil` command would show if the registry imported it
        from sentio_prober_control.Communication.CommunicatorTcpIp import CommunicatorTcpIp
        from sentio_prober_control.Sentio.ProberSentio import SentioProber

        return SentioProber(CommunicatorTcpIp.create(sentio_address(self.address)))

    # -- wafer map -------------------------------------------------------------------------
    def load_map(self, dies: Sequence[tuple[int, int]], subsites: int = 1) -> None:
        """The dies (and subsites per die) this run may visit (SENTIO keeps the map in its
        project); ``step_to`` refuses others before sending anything."""
        if subsites < 1:
            raise ValueError(f"subsites must be >= 1, got {subsites}")
        self._map = [(int(c), int(r)) for c, r in dies]
        self._subsites = int(subsites)

    def step_to(self, die: tuple[int, int], subsite: int = 0) -> None:
        die = (int(die[0]), int(die[1]))
        if self._map is not None and die not in self._map:
            raise ValueError(f"{self.name}: die {die} is not in the loaded map")
        if not 0 <= subsite < self._subsites:
            raise ValueError(f"{self.name}: subsite {subsite} not in 0..{self._subsites - 1}")
        if self.in_contact():
            raise ProberInterlockError(
                f"{self.name}: step to die {die} refused: the chuck is in contact; separate first"
            )
        self.sentio.map.step_die(die[0], die[1], int(subsite))
        got = self.position()
        if got != (die, subsite):
            raise RuntimeError(
                f"{self.name}: asked for die {die} subsite {subsite}, SENTIO reports {got}"
            )

    def position(self) -> tuple[tuple[int, int], int]:
        col, row, site = self.sentio.map.die.get_current_index()
        return (int(col), int(row)), int(site)

    # -- chuck height ----------------------------------------------------------------------
    def contact(self) -> None:
        self.sentio.move_chuck_contact()

    def separate(self) -> None:
        """Chuck to separation height, verified by reading the height back."""
        self.sentio.move_chuck_separation()
        if self.in_contact():
            raise RuntimeError(f"{self.name}: chuck still at contact height after separation")

    def in_contact(self) -> bool:
        from sentio_prober_control.Sentio.Enumerations import ChuckSite, ZReference

        z = float(self.sentio.get_chuck_z(ZReference.Zero))
        contact = float(self.sentio.get_chuck_site_height(ChuckSite.Wafer)[0])
        return z >= contact - self.contact_tolerance_um

    def contact_ok(self) -> bool:
        if not self.in_contact():
            return False
        return bool(self.continuity()) if self.continuity is not None else True

    def safe_state(self) -> None:
        self.separate()

    def resync(self) -> None:
        """``Resyncable``: reconnect (the package's TCP/IP communicator has no device clear
        and a stale reply would stay in its reader) and check the version query."""
        try:
            self.sentio.comm.disconnect()
        except OSError:
            pass
        try:
            self.sentio = self._open()
            version = self.sentio.status.get_version()
        except (OSError, ValueError) as exc:
            raise ResyncError(f"{self.name}: cannot reach SENTIO at {self.address}: {exc}") from exc
        if "Version" not in version:
            raise ResyncError(f"{self.name}: unexpected SENTIO version reply {version!r}")

    def close(self) -> None:
        try:
            self.sentio.comm.disconnect()
        except OSError:
            pass


def create(address: str, name: str, **options: Any) -> SentioProberAdapter:
    """Open a SENTIO station at ``address`` (``options`` go to ``SentioProberAdapter``)."""
    return SentioProberAdapter(address, name, **options)


register_instrument(
    "mpi_sentio", "prober", create, options=("contact_tolerance_um",), visa_option=None
)

__all__ = ["SentioProberAdapter", "create", "sentio_address"]
