"""Registry of instrument types by name: the only way a Station YAML names a driver.

A station file says ``type: keithley2636b``, never a dotted import path: types are
resolved here, from names that adapter modules registered at import, so a YAML file can
only select code that memhil ships (or that a test registered explicitly). Nothing in
this module imports a module whose name comes from user input.

An adapter module registers its types at import::

    register_instrument("keithley2636b", "smu", make_2636b)

where ``factory(address: str, name: str, **options)`` returns an object implementing the
role's capability protocol (``memhil.instruments.capabilities``). An ``"smu"`` factory may
return a single ``SourceMeter`` or a dict of channel name -> ``SourceMeter`` (e.g.
``{"smua": ..., "smub": ...}``).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from memhil.core.errors import ConfigError

log = logging.getLogger(__name__)

Role = Literal["smu", "matrix", "prober", "array"]
ROLES: tuple[str, ...] = get_args(Role)

Factory = Callable[..., Any]

# The adapter modules memhil ships; each calls ``register_instrument`` at import. A fixed
# list (never extended from configuration): add a module here when you add an adapter.
BUILTIN_MODULES: tuple[str, ...] = (
    "memhil.instruments.adapters.keithley2600",
    "memhil.instruments.adapters.keithley2450",
    "memhil.instruments.adapters.b220x",
    "memhil.instruments.adapters.velox",
    "memhil.instruments.adapters.b1500",
    "memhil.instruments.adapters.sentio",
    "memhil.instruments.adapters.arc2",
    "memhil.instruments.adapters.k4200",
    "memhil.instruments.array_board",
)


# keyword arguments of a QCoDeS VisaInstrument that a station file may give
QCODES_VISA_OPTIONS = ("visalib", "timeout", "terminator", "device_clear")
# VISA libraries a station file may select by name: pyvisa-py and pyvisa-sim (pure Python)
VISA_LIBRARIES_BY_NAME = ("@py", "@sim")


@dataclass(frozen=True)
class InstrumentRanges:
    """What an instrument type can do, from its data sheet or its driver's range table; a
    station's limits are checked against it at load (None: no such bound)."""

    v_max_v: float | None = None
    """Largest |V| it sources or carries (V)."""
    i_max_a: float | None = None
    """Largest current (compliance) it sources or carries (A)."""
    width_max_s: float | None = None
    """Longest pulse it produces (s)."""
    count_max: int | None = None
    """Most pulses of one command."""
    width_min_s: float | None = None
    """Shortest pulse it produces (s): a station's ``limits.width_min_s`` may not be below."""


# (station limit, range field, unit): each limit must lie within the range of every
# instrument whose type declares that range.
RANGE_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("v_pulse_max_v", "v_max_v", "V"),
    ("v_read_max_v", "v_max_v", "V"),
    ("compliance_max_a", "i_max_a", "A"),
    ("compliance_default_a", "i_max_a", "A"),
    ("width_max_s", "width_max_s", "s"),
    ("count_max", "count_max", ""),
)


@dataclass(frozen=True)
class InstrumentType:
    """A registered instrument type: its name, role, factory and ranges."""

    name: str
    role: str
    factory: Factory
    module: str = ""
    # the options a station FILE may give (None: any); ``visa_option`` names the option
    # that selects the VISA library (only '@py'/'@sim' from a file; a path loads native
    # code and is given on the command line)
    options: frozenset[str] | None = None
    visa_option: str | None = None
    ranges: InstrumentRanges | None = None


_lock = threading.RLock()
_types: dict[str, InstrumentType] = {}
_missing_builtins: dict[str, str] = {}  # module name -> reason (ModuleNotFoundError text)


def register_instrument(
    name: str,
    role: str,
    factory: Factory,
    *,
    replace: bool = False,
    options: Iterable[str] | None = None,
    visa_option: str | None = None,
    ranges: InstrumentRanges | None = None,
) -> None:
    """Register ``factory`` under the type ``name`` for ``role`` (smu, matrix, prober, array),
    with the type's ``ranges`` (station limits beyond them fail at load).

    Registering the same factory again is a no-op; a different factory under a taken name
    raises ValueError unless ``replace=True``. ``options``: the option names a station file
    may give (None: any); ``visa_option``: the one that selects the VISA library.
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"instrument type name must be a non-empty string, got {name!r}")
    if role not in ROLES:
        raise ValueError(
            f"instrument type {name!r}: role must be one of {list(ROLES)}, got {role!r}"
        )
    if not callable(factory):
        raise TypeError(f"instrument type {name!r}: factory must be callable, got {factory!r}")
    module = getattr(factory, "__module__", "") or ""
    with _lock:
        old = _types.get(name)
        if old is not None and not replace and (old.factory is not factory or old.role != role):
            raise ValueError(
                f"instrument type {name!r} is already registered "
                f"(role {old.role!r}, from {old.module or 'unknown module'})"
            )
        _types[name] = InstrumentType(
            name,
            role,
            factory,
            module,
            None if options is None else frozenset(options),
            visa_option,
            ranges,
        )


def unregister_instrument(name: str) -> None:
    """Remove a registered type (for tests); unknown names are ignored."""
    with _lock:
        _types.pop(name, None)


def instrument_types() -> dict[str, str]:
    """Registered type names and their roles, sorted by name."""
    with _lock:
        return {n: _types[n].role for n in sorted(_types)}


def missing_builtin_modules() -> dict[str, str]:
    """Built-in adapter modules that did not exist at the last ``load_builtin_instruments``."""
    with _lock:
        return dict(_missing_builtins)


def get_instrument_type(
    name: Any, *, key: str = "type", source: str | None = None
) -> InstrumentType:
    """The registered type ``name``; ConfigError (naming ``key`` and ``source``) listing the
    known types otherwise."""
    with _lock:
        if isinstance(name, str) and name in _types:
            return _types[name]
        known = sorted(_types)
        missing = sorted(_missing_builtins)
    reason = f"unknown instrument type {name!r}; known types: {known or 'none registered'}"
    if missing:
        reason += (
            f" (built-in adapter modules not available, their types are not registered: {missing})"
        )
    raise ConfigError(key, reason, source)


def create_instrument(type_name: str, address: str, name: str, **options: Any) -> Any:
    """Build an instrument of a registered type through its factory."""
    return get_instrument_type(type_name).factory(address, name, **options)


def load_builtin_instruments() -> dict[str, str]:
    """Import the fixed list of built-in adapter modules so that they register their types.

    A module that does not exist (yet) is skipped with a debug line; every other import
    error propagates, including a ModuleNotFoundError for a dependency *inside* an
    existing module. Returns ``instrument_types()``.
    """
    for module in BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            log.debug("built-in instrument module %s not available: %s", module, exc)
            with _lock:
                _missing_builtins[module] = str(exc)
        else:
            with _lock:
                _missing_builtins.pop(module, None)
    return instrument_types()


__all__ = [
    "BUILTIN_MODULES",
    "InstrumentRanges",
    "InstrumentType",
    "QCODES_VISA_OPTIONS",
    "RANGE_CHECKS",
    "ROLES",
    "Role",
    "VISA_LIBRARIES_BY_NAME",
    "create_instrument",
    "get_instrument_type",
    "instrument_types",
    "load_builtin_instruments",
    "missing_builtin_modules",
    "register_instrument",
    "unregister_instrument",
]
