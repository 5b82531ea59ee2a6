"""FormFactor (Cascade) Velox probe-station emulator: the SCI dialect PyMeasure's
unmodified ``Velox`` driver sends, served on a loopback socket, stepping a ``MockChip``
across its virtual wafer.

Every command gets exactly one reply line ``"<errcode>: <payload>"`` (``"0:"`` on
success; the driver raises ``ConnectionError`` for a non-zero code except 703, which it
reports as ``wafermap.end_reached``); ``*IDN?`` answers without a code, as Velox does.

Commands served::

    *IDN?                              FormFactor,Velox,...
    ReportSoftwareVersion              0: <version>
    IsAppRegistered <app>              0: 1 for WaferMap, 0: 0 otherwise
    MoveChuckContact [v]               chuck to contact height
    MoveChuckAlign [v]                 chuck to align height
    MoveChuckSeparation [v]            chuck to separation height
    MoveChuckIndex x y <H|Z|R|C|D> [v] XY move in index steps  (refused in contact)
    MoveChuck x y <ref> <unit> [v]     XY move in microns/index (refused in contact)
    SetChuckIndex x y [Y]              die pitch (microns)
    ReadChuckIndex [Y]                 0: <x> <y>
    ReadChuckPosition [unit] [ref]     0: <x> <y> <z>              (microns)
    ReadChuckHeights [unit]            0: <contact> <overtravel> <align> <sep> <search>
    StepFirstDie [clear]               0: <col> <row> <site> <sites>   (refused in contact)
    StepNextDie                        next die of the map; 703 at the end (stays put)
    StepNextDie col row [site]         that die / subsite            (refused in contact)
    ReadMapPosition [pos]              0: <col> <row> <x> <y> <site> <sites>
    MoveChuckSubsite x y [unit] [v]    XY move from the present die's home (refused in contact)
    ReadChuckStatus                    0: <FlagsInit> <FlagsMode> <FlagsLimit> <FlagsMoving>
                                          <Comp> <IsVacuumOn> <PresetHeight C|A|S> <LoadPos>
                                          <IsLiftDown> <CameraConnection> <IsQuiet>
    ReadProberStatus                   0: <FlagsBusy> <FlagsContact> <Mode> <IsQuiet>

Command syntax, reply fields and units follow FormFactor's published SCI command list
(the Velox Python module's ``Velox SCI Commands``, FormFactor GmbH, MIT licence,
generated 2025-02-12: e.g. ``MoveChuckSubsite XValue YValue Unit Velocity``,
``ReadChuckStatus`` and ``ReadProberStatus`` with the fields above). What the mock cannot
know is fixed and documented: FlagsInit 7 (X, Y, Z initialised; no theta stage),
FlagsMode 20 (HasInterlock | IsContactSet: XY moves in contact are refused), FlagsLimit
and FlagsMoving 0 (moves are complete when acknowledged), Comp ``T`` (technology), vacuum
on, LoadPos ``0``, lift up, CameraConnection ``0``, not quiet; ReadProberStatus reports
FlagsBusy 0, FlagsContact 1 while the chuck is at contact height, Mode ``L`` (the kernel's
default, no ``SetExternalMode``).

Units: ``Y`` microns, ``I`` mils (25.4 um) and, for ``MoveChuck``, ``X`` index steps.
``J`` (jogs) and ``E`` (encoder counts) are refused with code 2: their size is a setting
of each station (joystick step, encoder resolution) that the command list does not give.

Error codes: 703 (end of the wafer map) is the one PyMeasure's ``Velox`` driver names; the
others are the mock's own (the vendor's numbers were not reachable here): 1 unknown
command, 2 invalid parameter, 701 die not on the wafer map, 704 not on a die, 705 chuck
is in contact (XY move refused: separate first).

The wafer map is ``chip.wafer.dies`` (map order) with ``subsites`` subsites per die; die
(col, row) sits at ``(col * index_x, row * index_y)`` microns from home. Stepping calls
``chip.select_die``; an XY move that ends off every die leaves the probes on no die.
Chuck moves advance the chip's virtual clock (``step_time_s``, ``z_time_s``).

Contact: ``contact_ok`` is True while the chuck is at contact height over a die and no
lost-contact fault is armed. ``lose_contact()`` makes the needles stop touching the pads
(the prober does not notice: it still reports contact height); emulators that reach the
chip through the pads (``B220xEmulator(probe=...)``, ``ArrayBoardEmulator(probe=...)``,
or any bench router that checks ``contact_ok``) then route nothing, so every terminal
reads an open circuit. The fault clears on the next touchdown unless ``persistent``.
The chip itself (``MockChip``) has no contact flag; this emulator keeps it.
"""

from __future__ import annotations

import logging
import threading

from memhil.mock_hw.chip import MockChip
from memhil.mock_hw.scpi import CommonCommands, ScpiError, is_common
from memhil.mock_hw.server import LineServer, ServedEmulator

log = logging.getLogger(__name__)

ERR_UNKNOWN = 1
ERR_PARAM = 2
ERR_NOT_ON_MAP = 701
ERR_END_OF_MAP = 703
ERR_NO_DIE = 704
ERR_IN_CONTACT = 705

SEPARATED, ALIGN, CONTACT = "separation", "align", "contact"


class _VeloxError(Exception):
    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code, self.text = code, text


class VeloxEmulator(ServedEmulator):
    """A Velox station holding ``chip``'s wafer: chuck heights, XY position, wafer map."""

    idn = "FormFactor,Velox,MOCK0001,3.7.0"
    version = "3.7.0.20 memhil-mock"

    def __init__(
        self,
        chip: MockChip,
        name: str = "prober",
        *,
        subsites: int = 1,
        index_um: tuple[float, float] = (5000.0, 5000.0),
        contact_height_um: float = 10000.0,
        align_dist_um: float = 50.0,
        separation_dist_um: float = 300.0,
        step_time_s: float = 0.5,
        z_time_s: float = 0.2,
    ):
        if subsites < 1:
            raise ValueError(f"subsites must be >= 1, got {subsites}")
        self.chip = chip
        self.name = name
        self.subsites = int(subsites)
        self.index_um = (float(index_um[0]), float(index_um[1]))
        self.contact_height_um = float(contact_height_um)
        self.align_dist_um = float(align_dist_um)
        self.separation_dist_um = float(separation_dist_um)
        self.step_time_s = float(step_time_s)
        self.z_time_s = float(z_time_s)
        self.lock = threading.RLock()
        self.height = SEPARATED
        self.map_index = 0
        self.site = 0
        self._lost = False
        self._lost_persistent = False
        die = chip.die
        self.x_um, self.y_um = self._die_xy(die)
        self.server: LineServer | None = None
        self.common = CommonCommands(self.idn)  # SCI answers *IDN? alone of IEEE 488.2

    # -- state and faults -------------------------------------------------------------------
    @property
    def dies(self) -> list[tuple[int, int]]:
        return list(self.chip.wafer.dies)

    @property
    def in_contact(self) -> bool:
        return self.height == CONTACT

    @property
    def die(self) -> tuple[int, int] | None:
        """The die under the probes (None when the chuck is between dies)."""
        for d in self.dies:
            x, y = self._die_xy(d)
            if (
                abs(self.x_um - x) <= 0.5 * self.index_um[0] - 1e-9
                and abs(self.y_um - y) <= 0.5 * self.index_um[1] - 1e-9
            ):
                return d
        return None

    @property
    def contact_ok(self) -> bool:
        """Whether the needles touch the pads of a die (what a continuity check sees)."""
        with self.lock:
            return self.in_contact and not self._lost and self.die is not None

    def lose_contact(self, persistent: bool = False) -> None:
        """Needles lift off the pads (drift, contamination) while the chuck stays at
        contact height; cleared by the next touchdown unless ``persistent``."""
        with self.lock:
            self._lost, self._lost_persistent = True, persistent

    def restore_contact(self) -> None:
        with self.lock:
            self._lost = self._lost_persistent = False

    @property
    def faults(self):
        if self.server is None:
            raise RuntimeError("start() the emulator before arming server faults")
        return self.server.faults

    # -- SCI ---------------------------------------------------------------------------------
    def handle(self, line: str) -> str:
        parts = line.strip().split()
        if not parts:
            return f"{ERR_UNKNOWN}: Empty command"
        cmd, args = parts[0], parts[1:]
        if is_common(cmd):
            try:
                return self.common(cmd) or ""  # no error code, as Velox answers *IDN?
            except ScpiError:
                return f"{ERR_UNKNOWN}: Unknown command {cmd}"
        handler = getattr(self, "_cmd_" + cmd.lower(), None)
        if handler is None:
            return f"{ERR_UNKNOWN}: Unknown command {cmd}"
        try:
            with self.lock:
                payload = handler(args)
        except _VeloxError as e:
            log.info("%s: %r -> %d %s", self.name, line, e.code, e.text)
            return f"{e.code}: {e.text}"
        except (ValueError, IndexError) as e:
            return f"{ERR_PARAM}: Invalid parameter ({e})"
        return "0:" if not payload else f"0: {payload}"

    def _cmd_reportsoftwareversion(self, args: list[str]) -> str:
        return self.version

    def _cmd_isappregistered(self, args: list[str]) -> str:
        return "1" if args and args[0].lower() == "wafermap" else "0"

    def _cmd_movechuckcontact(self, args: list[str]) -> str:
        _velocity(args, 0)
        self._require_die()
        self._z_move(CONTACT)
        if self._lost and not self._lost_persistent:
            self._lost = False
        return ""

    def _cmd_movechuckalign(self, args: list[str]) -> str:
        _velocity(args, 0)
        self._z_move(ALIGN)
        return ""

    def _cmd_movechuckseparation(self, args: list[str]) -> str:
        _velocity(args, 0)
        self._z_move(SEPARATED)
        return ""

    def _cmd_movechuckindex(self, args: list[str]) -> str:
        x, y = float(args[0]), float(args[1])
        ref = args[2].upper() if len(args) > 2 else "R"
        _velocity(args, 3)
        self._xy_move(x * self.index_um[0], y * self.index_um[1], ref)
        return ""

    def _cmd_movechuck(self, args: list[str]) -> str:
        x, y = float(args[0]), float(args[1])
        ref = args[2].upper() if len(args) > 2 else "H"
        unit = args[3].upper() if len(args) > 3 else "Y"
        _velocity(args, 4)
        scale = {"Y": (1.0, 1.0), "I": (25.4, 25.4), "X": self.index_um}.get(unit)
        if scale is None:
            raise _VeloxError(ERR_PARAM, f"Unit {unit} not supported")
        self._xy_move(x * scale[0], y * scale[1], ref)
        return ""

    def _cmd_movechucksubsite(self, args: list[str]) -> str:
        """An XY move measured from the present die's home (a subsite of the die):
        ``MoveChuckSubsite XValue YValue [Unit] [Velocity]``, as the SCI list has it."""
        x, y = float(args[0]), float(args[1])
        unit = args[2].upper() if len(args) > 2 else "Y"
        _velocity(args, 3)
        scale = {"Y": 1.0, "I": 25.4}.get(unit)
        if scale is None:
            raise _VeloxError(ERR_PARAM, f"Unit {unit} not supported")
        self._xy_move(x * scale, y * scale, "D")
        return ""

    def _cmd_readchuckstatus(self, args: list[str]) -> str:
        # FlagsInit FlagsMode FlagsLimit FlagsMoving Comp IsVacuumOn PresetHeight LoadPos
        # IsLiftDown CameraConnection IsQuiet (fixed fields: see the module docstring)
        return f"7 20 0 0 T 1 {self.height[0].upper()} 0 0 0 0"

    def _cmd_readproberstatus(self, args: list[str]) -> str:
        # FlagsBusy FlagsContact Mode IsQuiet
        return f"0 {1 if self.in_contact else 0} L 0"

    def _cmd_setchuckindex(self, args: list[str]) -> str:
        x, y = float(args[0]), float(args[1])
        if x <= 0 or y <= 0:
            raise _VeloxError(ERR_PARAM, "Index must be > 0")
        self.index_um = (x, y)
        return ""

    def _cmd_readchuckindex(self, args: list[str]) -> str:
        return f"{self.index_um[0]:.1f} {self.index_um[1]:.1f}"

    def _cmd_readchuckposition(self, args: list[str]) -> str:
        return f"{self.x_um:.1f} {self.y_um:.1f} {self._z():.1f}"

    def _cmd_readchuckheights(self, args: list[str]) -> str:
        return (
            f"{self.contact_height_um:.1f} 0.0 {self.align_dist_um:.1f} "
            f"{self.separation_dist_um:.1f} 0.0"
        )

    def _cmd_stepfirstdie(self, args: list[str]) -> str:
        self._step_to_index(0, 0)
        return self._map_reply()

    def _cmd_stepnextdie(self, args: list[str]) -> str:
        if not args:
            nxt = self.map_index + 1 if self.die is not None else 0
            if nxt >= len(self.dies):
                raise _VeloxError(ERR_END_OF_MAP, "End of wafer map")
            self._step_to_index(nxt, 0)
            return self._map_reply()
        col, row = int(args[0]), int(args[1])
        site = int(args[2]) if len(args) > 2 else 0
        if (col, row) not in self.dies:
            raise _VeloxError(ERR_NOT_ON_MAP, f"Die {col} {row} is not in the wafer map")
        if not 0 <= site < self.subsites:
            raise _VeloxError(ERR_NOT_ON_MAP, f"Subsite {site} not in 0..{self.subsites - 1}")
        self._step_to_index(self.dies.index((col, row)), site)
        return self._map_reply()

    def _cmd_readmapposition(self, args: list[str]) -> str:
        die = self.die
        if die is None:
            raise _VeloxError(ERR_NO_DIE, "Chuck is not on a die of the wafer map")
        return f"{die[0]} {die[1]} {self.x_um:.1f} {self.y_um:.1f} {self.site} {self.subsites}"

    # -- mechanics ----------------------------------------------------------------------------
    def _z(self) -> float:
        return {
            CONTACT: self.contact_height_um,
            ALIGN: self.contact_height_um - self.align_dist_um,
            SEPARATED: self.contact_height_um - self.separation_dist_um,
        }[self.height]

    def _z_move(self, height: str) -> None:
        if height != self.height:
            self.chip.clock.advance(self.z_time_s)
        self.height = height

    def _refuse_in_contact(self, what: str) -> None:
        if self.in_contact:
            raise _VeloxError(
                ERR_IN_CONTACT, f"Chuck is in contact: {what} refused, move to separation first"
            )

    def _require_die(self) -> None:
        if self.die is None:
            raise _VeloxError(ERR_NO_DIE, "Chuck is not on a die of the wafer map")

    def _xy_move(self, dx: float, dy: float, ref: str) -> None:
        self._refuse_in_contact("XY move")
        if ref == "R":
            x, y = self.x_um + dx, self.y_um + dy
        elif ref in ("H", "Z", "C"):
            x, y = dx, dy
        elif ref == "D":
            ref_die = self.die if self.die is not None else self.dies[self.map_index]
            x0, y0 = self._die_xy(ref_die)
            x, y = x0 + dx, y0 + dy
        else:
            raise _VeloxError(ERR_PARAM, f"Reference {ref} not supported")
        self.x_um, self.y_um = x, y
        self.chip.clock.advance(self.step_time_s)
        die = self.die
        if die is not None:
            self.map_index = self.dies.index(die)
            self.site = 0
            self.chip.select_die(die)

    def _step_to_index(self, index: int, site: int) -> None:
        self._refuse_in_contact("stepping")
        die = self.dies[index]
        self.x_um, self.y_um = self._die_xy(die)
        self.map_index, self.site = index, site
        self.chip.clock.advance(self.step_time_s)
        self.chip.select_die(die)

    def _map_reply(self) -> str:
        col, row = self.dies[self.map_index]
        return f"{col} {row} {self.site} {self.subsites}"

    def _die_xy(self, die: tuple[int, int]) -> tuple[float, float]:
        return die[0] * self.index_um[0], die[1] * self.index_um[1]


def _velocity(args: list[str], pos: int) -> float:
    if len(args) <= pos:
        return 100.0
    v = float(args[pos])
    if not 0.1 <= v <= 100:
        raise _VeloxError(ERR_PARAM, f"Velocity {v} not in 0.1..100 %")
    return v
