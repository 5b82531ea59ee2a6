"""Station YAML: the bench in one file (chip, safety limits, instruments, wiring), and the
live ``Station`` that builds the instruments through the registry behind the safety guard.

Schema (every key is checked at load; unknown keys, wrong types and inconsistent wiring
raise ``ConfigError`` naming the file, the dotted key and the reason)::

    name: my_bench                       # optional, default "station"
    chip:                                # required
      rows: 8                            #   int >= 1
      cols: 8                            #   int >= 1
      device: vteam                      #   optional, free-form (model name or mapping), for the mock lab
    limits:                              # required section (fields default as in memhil.core.limits.Limits)
      v_pulse_max_v: 2.0                 #   |V| of any source level, sweep point or pulse
      v_read_max_v: 0.3                  #   |V| of array-board reads
      compliance_max_a: 1.0e-3           #   largest current compliance (and |I| in current mode)
      compliance_default_a: 1.0e-4
      width_min_s: 1.0e-6
      width_max_s: 1.0
      count_max: 100000
      energy_max_j: 1.0e-6               #   or null; worst case |V| * I_compliance * width
                                         #   * count, per cell and request
      period_max_s: 10.0                 #   longest SMU pulse period
                                         # every limit must lie within each instrument type's ranges
    instruments:                         # required, at least one; name -> block
      smu:                               #   name: letters, digits, '_' (no dots)
        type: keithley2636b              #   a registered type (memhil.instruments.registry)
        address: "TCPIP0::127.0.0.1::5025::SOCKET"
        options: {}                      #   optional, keyword arguments of the type's factory
      matrix: {type: keysight_b2201, address: "TCPIP0::127.0.0.1::5026::SOCKET"}
    wiring:                              # optional section
      smu_ports: {smu.smua: 1, smu.smub: 2}   # SMU channel -> matrix input port (int >= 1, unique)
      rows: [1, 2, 3, 4, 5, 6, 7, 8]          # matrix output line of array row i (len == chip.rows)
      cols: [9, 10, 11, 12, 13, 14, 15, 16]   # matrix output line of array column j (len == chip.cols)
      forbidden: [[1, 9]]                     # (port, line) relays that must never close
    mock: {}                             # optional, free-form, for the mock lab (not read here)

SMU channels are named ``<instrument>.<channel>`` when the type's factory returns a dict
of channels (``smu.smua``), and ``<instrument>`` alone when it returns one SourceMeter.
At most one instrument each of role matrix, prober and array. With a matrix, ``rows``
and ``cols`` are required, and ``smu_ports`` too when an SMU is declared; without a
matrix, ``smu_ports`` and ``forbidden`` must be empty. No line appears twice in
rows + cols, no port twice in smu_ports. Whether each ``smu_ports`` channel exists is
checked when the instruments are built (``Station.from_config``).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from memhil.core.config import from_mapping, load_yaml, require
from memhil.core.errors import ConfigError
from memhil.core.limits import Limits, exceeds
from memhil.instruments.capabilities import ArrayIO, Prober, SourceMeter, SwitchMatrix
from memhil.instruments.guard import (
    GuardedArrayIO,
    GuardedProber,
    GuardedSourceMeter,
    GuardedSwitchMatrix,
    SafeStateReport,
    safe_state_all,
)
from memhil.instruments.registry import (
    RANGE_CHECKS,
    VISA_LIBRARIES_BY_NAME,
    get_instrument_type,
    load_builtin_instruments,
)

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOP_KEYS = ("name", "chip", "limits", "instruments", "wiring", "mock", "test_structure")
_REQUIRED = ("chip", "limits", "instruments")
_SINGLE_ROLES = ("matrix", "prober", "array")
_PROTOCOL = {"smu": SourceMeter, "matrix": SwitchMatrix, "prober": Prober, "array": ArrayIO}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class ChipConfig:
    """The crossbar on the chuck: ``rows x cols`` cells; ``device`` is free-form info.

    ``conductance_range_s`` (usable [g_min, g_max] for weights) and the nominal
    ``set_pulse`` / ``reset_pulse`` ([amplitude V, width s]) describe the devices to the
    algorithms (the hardware backend's capabilities); measure them once per chip type.
    """

    rows: int
    cols: int
    device: Any = None
    conductance_range_s: tuple[float, ...] | None = None
    set_pulse: tuple[float, ...] | None = None
    reset_pulse: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        require(self.rows >= 1, "rows", f"must be >= 1, got {self.rows}")
        require(self.cols >= 1, "cols", f"must be >= 1, got {self.cols}")
        g = self.conductance_range_s
        require(
            g is None or (len(g) == 2 and 0 <= g[0] < g[1]),
            "conductance_range_s",
            f"expected [g_min, g_max] with 0 <= g_min < g_max, got {g}",
        )
        for name in ("set_pulse", "reset_pulse"):
            p = getattr(self, name)
            require(
                p is None or (len(p) == 2 and p[1] > 0),
                name,
                f"expected [amplitude_v, width_s] with width > 0, got {p}",
            )


@dataclass(frozen=True)
class InstrumentConfig:
    """One instrument block: a registered ``type``, its ``address`` and factory ``options``."""

    type: str
    address: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(bool(self.type.strip()), "type", "must be a non-empty type name")
        for k in self.options:
            require(
                isinstance(k, str) and _NAME.match(k) is not None,
                f"options.{k}",
                "option names must be identifiers (letters, digits, '_')",
            )


@dataclass(frozen=True)
class WiringConfig:
    """How the SMU channels and the array lines meet at the switch matrix."""

    smu_ports: dict[str, int] = field(default_factory=dict)
    rows: tuple[int, ...] = ()
    cols: tuple[int, ...] = ()
    forbidden: tuple[tuple[int, ...], ...] = ()
    ground_ports: tuple[int, ...] = ()  # matrix inputs tied to the SMUs' common LO (ground)

    def __post_init__(self) -> None:
        ports: dict[int, str] = {}
        for key, port in self.smu_ports.items():
            where = f"smu_ports[{key}]"
            require(
                isinstance(key, str) and all(_NAME.match(p) for p in key.split(".", 1)),
                where,
                "SMU channel must be '<instrument>' or '<instrument>.<channel>'",
            )
            require(_is_int(port), where, f"expected an integer port, got {port!r}")
            require(port >= 1, where, f"port must be >= 1, got {port}")
            require(port not in ports, where, f"port {port} is already used by {ports.get(port)!r}")
            ports[port] = key
        lines: dict[int, str] = {}
        for side in ("rows", "cols"):
            for i, line in enumerate(getattr(self, side)):
                where = f"{side}[{i}]"
                require(line >= 1, where, f"line must be >= 1, got {line}")
                require(
                    line not in lines,
                    where,
                    f"line {line} is used twice (already {lines.get(line)})",
                )
                lines[line] = where
        for i, port in enumerate(self.ground_ports):
            where = f"ground_ports[{i}]"
            require(port >= 1, where, f"port must be >= 1, got {port}")
            require(port not in ports, where, f"port {port} is already used by {ports.get(port)!r}")
        for i, pair in enumerate(self.forbidden):
            where = f"forbidden[{i}]"
            require(len(pair) == 2, where, f"expected a [port, line] pair, got {list(pair)}")
            require(
                pair[0] >= 1 and pair[1] >= 1,
                where,
                f"port and line must be >= 1, got {list(pair)}",
            )


@dataclass(frozen=True)
class ReferenceStructure:
    """The one structure ``memhil bench check`` may touch (the ``test_structure:`` section):
    a resistor or a sacrificial device at crossbar position ``cell`` (row, col), whose
    resistance ``r_ohm`` a read must find within ``tolerance_rel``; ``compliance_a`` is the
    limit of the compliance-clamp check (default: a tenth of V_read / r_ohm)."""

    kind: str
    cell: tuple[int, ...]
    r_ohm: float
    tolerance_rel: float = 0.05
    compliance_a: float | None = None

    def __post_init__(self) -> None:
        require(
            self.kind in ("resistor", "device"),
            "kind",
            f"expected 'resistor' or 'device' (a sacrificial device), got {self.kind!r}",
        )
        require(
            len(self.cell) == 2 and all(_is_int(x) and x >= 0 for x in self.cell),
            "cell",
            f"expected [row, col] (integers >= 0), got {list(self.cell)}",
        )
        require(self.r_ohm > 0, "r_ohm", f"must be > 0 ohm, got {self.r_ohm}")
        require(
            0 < self.tolerance_rel < 1,
            "tolerance_rel",
            f"must be in (0, 1), got {self.tolerance_rel}",
        )
        require(
            self.compliance_a is None or self.compliance_a > 0,
            "compliance_a",
            f"must be > 0 A, got {self.compliance_a}",
        )


@dataclass(frozen=True)
class StationConfig:
    """A validated station file (build it with ``load_station_config``)."""

    chip: ChipConfig
    limits: Limits
    instruments: dict[str, InstrumentConfig]
    wiring: WiringConfig = field(default_factory=WiringConfig)
    mock: dict[str, Any] = field(default_factory=dict)
    name: str = "station"
    source: str | None = field(default=None, compare=False)
    test_structure: ReferenceStructure | None = None

    def to_dict(self) -> dict:
        """Plain data (YAML/JSON-ready); ``load_station_config(cfg.to_dict())`` rebuilds it."""
        return {
            "name": self.name,
            "chip": {
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self.chip).items()
                if v is not None
            },
            "limits": dataclasses.asdict(self.limits),
            "instruments": {
                n: {"type": i.type, "address": i.address, "options": dict(i.options)}
                for n, i in self.instruments.items()
            },
            "wiring": {
                "smu_ports": dict(self.wiring.smu_ports),
                "rows": list(self.wiring.rows),
                "cols": list(self.wiring.cols),
                "forbidden": [list(p) for p in self.wiring.forbidden],
                "ground_ports": list(self.wiring.ground_ports),
            },
            "mock": dict(self.mock),
            **(
                {}
                if self.test_structure is None
                else {
                    "test_structure": {
                        **dataclasses.asdict(self.test_structure),
                        "cell": list(self.test_structure.cell),
                    }
                }
            ),
        }


# -- loading -------------------------------------------------------------------------------


def load_station_config(
    path_or_mapping: str | Path | Mapping[str, Any] | StationConfig, *, source: str | None = None
) -> StationConfig:
    """Read and validate a station file (or a mapping). Built-in instrument types are
    loaded first so that ``type`` can be checked against the registry."""
    if isinstance(path_or_mapping, StationConfig):
        return path_or_mapping
    if isinstance(path_or_mapping, (str, Path)):
        source = str(path_or_mapping)
        data: Any = load_yaml(Path(path_or_mapping))
    else:
        data = path_or_mapping
    if not isinstance(data, Mapping):
        raise ConfigError("<root>", f"expected a mapping, got {type(data).__name__}", source)
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(str(key), f"unknown key (allowed: {sorted(_TOP_KEYS)})", source)
    for key in _REQUIRED:
        if data.get(key) is None:
            raise ConfigError(key, "required section is missing", source)

    name = data.get("name", "station")
    if not isinstance(name, str) or not name:
        raise ConfigError("name", f"expected a non-empty string, got {name!r}", source)
    _require_keys(data["chip"], ("rows", "cols"), "chip", source)
    chip = from_mapping(ChipConfig, data["chip"], source=source, prefix="chip")
    limits = from_mapping(Limits, data["limits"], source=source, prefix="limits")
    wiring = data.get("wiring")
    wiring = from_mapping(
        WiringConfig, {} if wiring is None else wiring, source=source, prefix="wiring"
    )
    mock = data.get("mock")
    mock = {} if mock is None else mock
    if not isinstance(mock, Mapping):
        raise ConfigError("mock", f"expected a mapping, got {mock!r}", source)

    structure = data.get("test_structure")
    if structure is not None:
        _require_keys(structure, ("kind", "cell", "r_ohm"), "test_structure", source)
        structure = from_mapping(
            ReferenceStructure, structure, source=source, prefix="test_structure"
        )

    raw = data["instruments"]
    if not isinstance(raw, Mapping):
        raise ConfigError(
            "instruments", f"expected a mapping of name -> instrument, got {raw!r}", source
        )
    if not raw:
        raise ConfigError("instruments", "at least one instrument is required", source)
    load_builtin_instruments()
    instruments: dict[str, InstrumentConfig] = {}
    roles: dict[str, str] = {}
    for inst, block in raw.items():
        if not isinstance(inst, str) or not _NAME.match(inst):
            raise ConfigError(
                f"instruments.{inst}",
                "instrument names must be identifiers (letters, digits, '_'; no dots)",
                source,
            )
        key = f"instruments.{inst}"
        _require_keys(block, ("type", "address"), key, source)
        ic = from_mapping(InstrumentConfig, block, source=source, prefix=key)
        itype = get_instrument_type(ic.type, key=f"{key}.type", source=source)
        _check_options(ic, itype, key, source)
        role = itype.role
        for other, other_role in roles.items():
            if role in _SINGLE_ROLES and other_role == role:
                raise ConfigError(
                    f"{key}.type",
                    f"a second {role!r} instrument ({other!r} is one); a station has at most one",
                    source,
                )
        instruments[inst] = ic
        roles[inst] = role

    cfg = StationConfig(
        chip=chip,
        limits=limits,
        instruments=instruments,
        wiring=wiring,
        mock=dict(mock),
        name=name,
        source=source,
        test_structure=structure,
    )
    _check_wiring(cfg, roles)
    if structure is not None and not (
        structure.cell[0] < chip.rows and structure.cell[1] < chip.cols
    ):
        raise ConfigError(
            "test_structure.cell",
            f"{list(structure.cell)} is outside the {chip.rows} x {chip.cols} chip",
            source,
        )
    slowest = _slowest_pulser(cfg)
    if slowest is not None and isinstance(data["limits"], Mapping):
        if "width_min_s" not in data["limits"] and slowest[0] > limits.width_min_s:
            # unset: the shortest pulse this bench makes, not Limits' 1 ns default
            limits = dataclasses.replace(limits, width_min_s=slowest[0])
            cfg = dataclasses.replace(cfg, limits=limits)
    _check_ranges(cfg)
    return cfg


def _check_options(ic: InstrumentConfig, itype: Any, key: str, source: str | None) -> None:
    """Options from a file: only the type's allowed names, and a VISA library only by name
    (a library path makes pyvisa load native code: it is a command-line flag)."""
    allowed = itype.options
    for name, value in ic.options.items():
        if allowed is not None and name not in allowed:
            raise ConfigError(
                f"{key}.options.{name}",
                f"not an option of type {ic.type!r} (allowed: {sorted(allowed)})",
                source,
            )
        if name == itype.visa_option and value not in VISA_LIBRARIES_BY_NAME:
            raise ConfigError(
                f"{key}.options.{name}",
                f"{value!r}: a station file selects a "
                f"VISA library only by name {list(VISA_LIBRARIES_BY_NAME)}; a "
                f"library path loads native code: give it on the command line "
                f"(memhil run --visa-library PATH)",
                source,
            )


def _check_ranges(cfg: StationConfig) -> None:
    """Every limit within the range of every instrument whose type declares one, so a
    limit no instrument can honour fails at load, not in the middle of a run."""
    for limit_name, range_name, unit in RANGE_CHECKS:
        value = getattr(cfg.limits, limit_name)
        bounds = [
            (getattr(t.ranges, range_name), inst, ic.type)
            for inst, ic in cfg.instruments.items()
            if (t := get_instrument_type(ic.type)).ranges is not None
            and getattr(t.ranges, range_name) is not None
        ]
        if not bounds:
            continue
        bound, inst, type_name = min(bounds, key=lambda b: b[0])  # the tightest names itself
        if exceeds(value, bound):
            u = f" {unit}" if unit else ""
            raise ConfigError(
                f"limits.{limit_name}",
                f"{value:g}{u} is beyond the range of "
                f"instruments.{inst} ({type_name}): at most {bound:g}{u}",
                cfg.source,
            )
    slowest = _slowest_pulser(cfg)
    if slowest is not None:  # the backend advertises width_min_s: no shorter pulse than it
        floor, inst, type_name = slowest
        if cfg.limits.width_min_s < floor:
            raise ConfigError(
                "limits.width_min_s",
                f"{cfg.limits.width_min_s:g} s is shorter than the shortest pulse of "
                f"instruments.{inst} ({type_name}): at least {floor:g} s",
                cfg.source,
            )


def _slowest_pulser(cfg: StationConfig) -> tuple[float, str, str] | None:
    """(floor s, instrument, type) of the pulser whose shortest pulse is the longest, over
    the instrument types that declare one; None if none does. With an array board the
    board pulses, and an SMU's floor binds only a backend that pulses through it
    (``pulse_width_floor``); without one the SMUs are the pulsers."""
    has_board = any(get_instrument_type(ic.type).role == "array" for ic in cfg.instruments.values())
    floors = [
        (t.ranges.width_min_s, inst, ic.type)
        for inst, ic in cfg.instruments.items()
        if (t := get_instrument_type(ic.type)).ranges is not None
        and t.ranges.width_min_s is not None
        and not (has_board and t.role == "smu")
    ]
    return max(floors, key=lambda b: b[0]) if floors else None


def _require_keys(block: Any, keys: tuple[str, ...], prefix: str, source: str | None) -> None:
    if isinstance(block, Mapping):
        for k in keys:
            if k not in block:
                raise ConfigError(f"{prefix}.{k}", "required key is missing", source)


def _check_wiring(cfg: StationConfig, roles: dict[str, str]) -> None:
    w, src = cfg.wiring, cfg.source
    has_matrix = "matrix" in roles.values()
    smu_names = sorted(n for n, r in roles.items() if r == "smu")
    for side, n in (("rows", cfg.chip.rows), ("cols", cfg.chip.cols)):
        lines = getattr(w, side)
        if has_matrix and not lines:
            raise ConfigError(
                f"wiring.{side}",
                f"required with a switch matrix: the matrix line of each of the {n} chip {side}",
                src,
            )
        if lines and len(lines) != n:
            raise ConfigError(
                f"wiring.{side}", f"has {len(lines)} lines but chip.{side} is {n}", src
            )
    if not has_matrix:
        for side in ("smu_ports", "forbidden", "ground_ports"):
            if getattr(w, side):
                raise ConfigError(
                    f"wiring.{side}", "no instrument of role 'matrix' is declared", src
                )
        return
    if smu_names and not w.smu_ports:
        raise ConfigError(
            "wiring.smu_ports",
            f"required with a switch matrix and SMUs "
            f"{smu_names}: the matrix input port of each SMU channel",
            src,
        )
    for key in w.smu_ports:
        inst = key.split(".", 1)[0]
        if roles.get(inst) != "smu":
            raise ConfigError(
                f"wiring.smu_ports[{key}]",
                f"{inst!r} is not a declared SMU instrument (SMUs: {smu_names})",
                src,
            )


# -- the live station ----------------------------------------------------------------------


def _identify(obj: Any) -> Any:
    """An instrument's identification where its driver offers one (QCoDeS ``get_idn``,
    PyMeasure ``id``, or ``idn``); None otherwise. Never raises."""
    candidates = list(obj.values()) if isinstance(obj, Mapping) else [obj]
    for o in candidates:
        for attr in ("get_idn", "idn", "id"):
            try:
                v = getattr(o, attr, None)
                if v is None:
                    continue
                v = v() if callable(v) else v
            except Exception as exc:  # noqa: BLE001 - a snapshot must not fail on an id query
                return f"<unavailable: {type(exc).__name__}: {exc}>"
            if v is not None:
                return v if isinstance(v, (str, int, float, dict, list)) else str(v)
    return None


class Station:
    """The instruments of one bench, every one behind the safety guard.

    ``smus``: "inst.channel" (or "inst") -> ``GuardedSourceMeter``; ``matrix``,
    ``prober``, ``array``: the guarded instrument of that role or None.
    """

    def __init__(
        self,
        config: StationConfig,
        instruments: dict[str, Any],
        smus: dict[str, GuardedSourceMeter],
        matrix: GuardedSwitchMatrix | None,
        prober: GuardedProber | None,
        array: GuardedArrayIO | None,
    ):
        self.config = config
        self.limits: Limits = config.limits
        self.smus = smus
        self.matrix = matrix
        self.prober = prober
        self.array = array
        self._instruments = instruments  # name -> what the factory returned (unguarded)
        self._closed = False

    @classmethod
    def from_config(
        cls,
        config: StationConfig | Mapping[str, Any] | str | Path,
        *,
        safe_start: bool = True,
        visa_library: str | None = None,
    ) -> Station:
        """Build every instrument through the registry and wrap it in the guard. With
        ``safe_start`` every instrument is put in its safe state once built (a previous run
        may have left an output on). ``visa_library`` (a path or '@name', from the command
        line, never a file) is passed to every VISA instrument."""
        cfg = load_station_config(config)
        src = cfg.source
        built: dict[str, Any] = {}
        try:
            smus: dict[str, GuardedSourceMeter] = {}
            single: dict[str, Any] = {}
            for inst, ic in cfg.instruments.items():
                itype = get_instrument_type(ic.type, key=f"instruments.{inst}.type", source=src)
                options = dict(ic.options)
                if visa_library is not None and itype.visa_option is not None:
                    options[itype.visa_option] = visa_library
                obj = itype.factory(ic.address, inst, **options)
                built[inst] = obj
                proto = _PROTOCOL[itype.role]
                if itype.role == "smu" and isinstance(obj, Mapping):
                    if not obj:
                        raise TypeError(
                            f"instrument {inst!r} ({ic.type}): factory returned no SMU channels"
                        )
                    for ch, smu in obj.items():
                        if not isinstance(ch, str) or not _NAME.match(ch):
                            raise TypeError(
                                f"instrument {inst!r} ({ic.type}): bad channel name {ch!r}"
                            )
                        if not isinstance(smu, proto):
                            raise TypeError(
                                f"instrument {inst!r} ({ic.type}): channel {ch!r} is "
                                f"a {type(smu).__name__}, not a SourceMeter"
                            )
                        # isinstance(smu, proto) above, proto being SourceMeter for "smu"
                        smus[f"{inst}.{ch}"] = GuardedSourceMeter(
                            cast(SourceMeter, smu), cfg.limits
                        )
                    continue
                if not isinstance(obj, proto):
                    raise TypeError(
                        f"instrument {inst!r} ({ic.type}): factory returned a "
                        f"{type(obj).__name__}, which does not implement "
                        f"{proto.__name__}"
                    )
                if itype.role == "smu":
                    smus[inst] = GuardedSourceMeter(cast(SourceMeter, obj), cfg.limits)
                else:
                    single[itype.role] = obj
            for key in cfg.wiring.smu_ports:
                if key not in smus:
                    raise ConfigError(
                        f"wiring.smu_ports[{key}]",
                        f"no SMU channel {key!r}; the instruments provide {sorted(smus)}",
                        src,
                    )
            array = single.get("array")
            if array is not None and (array.rows, array.cols) != (cfg.chip.rows, cfg.chip.cols):
                raise ConfigError(
                    "chip",
                    f"the array board is {array.rows}x{array.cols} but chip "
                    f"is {cfg.chip.rows}x{cfg.chip.cols}",
                    src,
                )
            station = cls(
                cfg,
                built,
                smus,
                GuardedSwitchMatrix(single["matrix"], cfg.wiring.forbidden)
                if "matrix" in single
                else None,
                GuardedProber(single["prober"]) if "prober" in single else None,
                GuardedArrayIO(array, cfg.limits) if array is not None else None,
            )
        except BaseException:
            _close_all(built)
            raise
        if safe_start:
            try:
                station.safe_state()
            except BaseException:
                _close_all(built)
                raise
        return station

    @classmethod
    def from_yaml(cls, path: str | Path, **kwargs: Any) -> Station:
        return cls.from_config(load_station_config(path), **kwargs)

    @property
    def name(self) -> str:
        return self.config.name

    def smu_port(self, channel: str) -> int:
        """The matrix input port of SMU ``channel`` (from ``wiring.smu_ports``)."""
        try:
            return self.config.wiring.smu_ports[channel]
        except KeyError:
            raise KeyError(
                f"SMU channel {channel!r} has no port in wiring.smu_ports "
                f"({sorted(self.config.wiring.smu_ports)})"
            ) from None

    def safe_state(self) -> SafeStateReport:
        """Outputs off at 0, array lines at 0 V, relays open, prober separated, each
        confirmed by a query (see ``guard.safe_state_all``): returns the report, or raises
        ``SafeStateError`` naming what was not confirmed."""
        return safe_state_all(self)

    def snapshot(self) -> dict:
        """Plain data: the configuration and, per instrument, type, role, address and id."""
        instruments = {}
        for inst, ic in self.config.instruments.items():
            try:
                role = get_instrument_type(ic.type).role
            except ConfigError:
                role = None
            entry: dict[str, Any] = {
                "type": ic.type,
                "role": role,
                "address": ic.address,
                "idn": _identify(self._instruments.get(inst)),
            }
            obj = self._instruments.get(inst)
            if isinstance(obj, Mapping):
                entry["channels"] = sorted(obj)
            instruments[inst] = entry
        return {
            "name": self.config.name,
            "source": self.config.source,
            "config": self.config.to_dict(),
            "instruments": instruments,
        }

    def close(self) -> None:
        """Safe state, then close every instrument connection (errors re-raised after all
        were attempted). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.safe_state()
        finally:
            try:
                _close_all(self._instruments, raise_errors=True)
            finally:
                _forget_qcodes(self.config.instruments)

    def __enter__(self) -> Station:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        parts = [f"smus={sorted(self.smus)}"]
        for attr in ("matrix", "prober", "array"):
            if getattr(self, attr) is not None:
                parts.append(f"{attr}={getattr(self, attr).name!r}")
        return f"Station({self.config.name!r}, {', '.join(parts)})"


def _forget_qcodes(names: Any) -> None:
    """Close the QCoDeS instruments of these names (QCoDeS names are global in a process:
    a station opened again would collide with the old ones)."""
    try:
        from qcodes.instrument import Instrument
    except ImportError:  # pragma: no cover - QCoDeS is a dependency
        return
    for name in names:
        if Instrument.exist(name):
            Instrument.find_instrument(name).close()


def _close_all(instruments: Mapping[str, Any], raise_errors: bool = False) -> None:
    """``close()`` every distinct object that has one (channels of one SMU may share a
    connection: adapters make ``close`` idempotent)."""
    seen: set[int] = set()
    errors: list[BaseException] = []
    for inst, obj in instruments.items():
        for o in list(obj.values()) if isinstance(obj, Mapping) else [obj]:
            close = getattr(o, "close", None)
            if close is None or id(o) in seen or not callable(close):
                continue
            seen.add(id(o))
            try:
                close()
            except BaseException as exc:  # noqa: BLE001 - close the others, re-raise below
                log.error("closing instrument %s failed: %s: %s", inst, type(exc).__name__, exc)
                errors.append(exc)
    if errors and raise_errors:
        raise errors[0]


__all__ = [
    "ChipConfig",
    "InstrumentConfig",
    "ReferenceStructure",
    "Station",
    "StationConfig",
    "WiringConfig",
    "load_station_config",
]


def pulse_width_floor(config: StationConfig, smu_key: str) -> tuple[float, str] | None:
    """The shortest pulse the SMU channel ``smu_key`` ("inst.channel" or "inst") of a
    station makes, from its type's ranges, and what to call it in an error
    (``instruments.smu (keithley2636b)``); None when its type declares no floor."""
    inst = smu_key.split(".", 1)[0]
    ic = config.instruments[inst]
    ranges = get_instrument_type(ic.type).ranges
    if ranges is None or ranges.width_min_s is None:
        return None
    return float(ranges.width_min_s), f"instruments.{inst} ({ic.type})"
