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

``contact_ok``: a prober cannot see whether the needles touch the pads; it can only
report the chuck height. Pass ``continuity`` (a callable returning True when a known
structure conducts, e.g. a small read through the array board or an SMU) for a real
check; without one ``contact_ok`` equals ``in_contact``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pymeasure.instruments.formfactor.velox import Velox

from memhil.instruments.registry import register_instrument
from memhil.instruments.session import idn_matches, resync_pymeasure


class ProberInterlockError(RuntimeError):
    """A move was refused because the chuck is in contact."""


class VeloxProber:
    """A FormFactor Velox station as a memhil ``Prober``."""

    def __init__(self, velox: Velox | str, name: str = "prober", *,
                 continuity: Callable[[], bool] | None = None, velocity: float = 100.0,
                 contact_tolerance_um: float = 1.0, **velox_kwargs: Any):
        if isinstance(velox, str):
            velox_kwargs.setdefault("read_termination", "\n")
            velox_kwargs.setdefault("write_termination", "\n")
            velox = Velox(velox, **velox_kwargs)
        self.velox = velox
        self.name = name
        self.continuity = continuity
        self.velocity = float(velocity)
        self.contact_tolerance_um = float(contact_tolerance_um)
        self._map: list[tuple[int, int]] | None = None
        self._subsites = 1
        self._idn: str | None = None

    # -- wafer map -------------------------------------------------------------------------
    def load_map(self, dies: Sequence[tuple[int, int]], subsites: int = 1) -> None:
        """The dies (and subsites per die) this run may visit. Velox keeps its map in
        the WaferMap application, which must be registered; ``step_to`` refuses dies
        outside the map given here before sending anything."""
        if subsites < 1:
            raise ValueError(f"subsites must be >= 1, got {subsites}")
        if not self.velox.wafermap.enabled:
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
        self.velox.wafermap.step_to_die(die[0], die[1], subsite if subsite else None)
        got = self.position()
        if got != (die, subsite):
            raise RuntimeError(f"{self.name}: asked for die {die} subsite {subsite}, "
                               f"the station reports {got}")

    def step_first(self) -> tuple[int, int]:
        """First die of the station's map (subsite 0)."""
        self._interlock("step to the first die")
        col, row = self.velox.wafermap.step_first_die()[:2]
        return int(col), int(row)

    def step_next(self) -> tuple[int, int] | None:
        """Next die of the station's map, or None at the end of the map (703)."""
        self._interlock("step to the next die")
        reply = self.velox.wafermap.step_next_die()
        if self.velox.wafermap.end_reached:
            return None
        return int(reply[0]), int(reply[1])

    def position(self) -> tuple[tuple[int, int], int]:
        col, row, _x, _y, site, *_ = self.velox.values("ReadMapPosition", separator=" ")
        return (int(col), int(row)), int(site)

    # -- chuck height ----------------------------------------------------------------------
    def contact(self) -> None:
        self.velox.chuck.move_contact(self.velocity)

    def separate(self) -> None:
        self.velox.chuck.move_separation(self.velocity)

    def in_contact(self) -> bool:
        z = float(self.velox.values("ReadChuckPosition Y Z", separator=" ")[2])
        contact = float(self.velox.values("ReadChuckHeights Y", separator=" ")[0])
        return contact >= 0 and z >= contact - self.contact_tolerance_um

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
        self._idn = resync_pymeasure(velox, identify=lambda: velox.ask("*IDN?"),
                                     expected=lambda r: idn_matches(r, self._idn))

    def close(self) -> None:
        adapter = getattr(self.velox, "adapter", None)
        if adapter is not None:
            adapter.close()

    def _interlock(self, what: str) -> None:
        if self.in_contact():
            raise ProberInterlockError(f"{self.name}: {what} refused: the chuck is in "
                                       "contact; separate first")


def create(address: str, name: str, **options: Any) -> VeloxProber:
    """Open a Velox station at ``address`` (``options`` go to ``VeloxProber``)."""
    return VeloxProber(address, name, **options)


register_instrument("formfactor_velox", "prober", create,
                    options=("visa_library", "timeout", "velocity", "contact_tolerance_um",
                             "read_termination", "write_termination"),
                    visa_option="visa_library")
