"""The mock lab behind pyvisa's plugin mechanism: a script opens its bench addresses
(``GPIB0::22::INSTR``, ``TCPIP0::10.0.0.5::inst0::INSTR``, ``USB0::...::INSTR``, raw
sockets) unchanged and reaches the emulators, when it selects the mock lab's VISA library
``"STATION.yaml@memhil"`` (or ``"@memhil"`` with ``MEMHIL_MOCK_STATION=STATION.yaml``) as
QCoDeS ``visalib=``, PyMeasure ``visa_library=`` or ``pyvisa.ResourceManager(...)``.

pyvisa imports a backend named ``NAME`` after ``@`` from the module ``pyvisa_NAME``
(pyvisa ``highlevel.get_wrapper_class``, the mechanism of pyvisa-sim's ``@sim``);
``pyvisa_memhil`` re-exports ``MockLabVisaLibrary``. The address map is the mock station
file: every instrument's ``address`` (the bench address) and the aliases of
``mock.visa: {RESOURCE: instrument}``. A resource is opened as pyvisa-py's loopback
socket session to the emulator's server (pyvisa-py does the I/O, termination and
timeouts), of the lab served by ``memhil mock-lab serve STATION`` when one runs
(it registers its live ports, see ``register_served``), else of a lab started in this
process on first use (shared by every resource manager of that station file, so all
instruments act on one chip). See docs/mock-lab.md.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pyvisa import attributes, constants, rname
from pyvisa.constants import StatusCode
from pyvisa.typing import VISARMSession, VISASession
from pyvisa.util import LibraryPath
from pyvisa_py.highlevel import PyVisaLibrary
from pyvisa_py.sessions import OpenError
from pyvisa_py.tcpip import TCPIPSocketSession

from memhil.core.errors import ConfigError

if TYPE_CHECKING:
    from memhil.mock_hw.lab import MockLab

log = logging.getLogger(__name__)

#: The station file ``"@memhil"`` (no path before the ``@``) opens.
ENV_STATION = "MEMHIL_MOCK_STATION"
_DEFAULT_PATH = "memhil"  # the library path pyvisa passes for a bare "@memhil"


def canonical(resource: str) -> str:
    """The resource name as pyvisa normalises it (``GPIB::22`` -> ``GPIB0::22::INSTR``);
    compare them case-blind (``_find``), as VISA does."""
    return str(rname.parse_resource_name(resource))


def is_visa_resource(address: str) -> bool:
    try:
        rname.parse_resource_name(address)
    except rname.InvalidResourceName:
        return False
    return True


def address_map(
    instruments: Mapping[str, Any], aliases: Mapping[str, str], source: str | None = None
) -> dict[str, str]:
    """Canonical VISA resource -> instrument name: each instrument's own ``address`` (a
    bench address; a loopback address is the lab's own port, not a bench's) and the
    ``mock.visa`` aliases. Two names for one resource are a ConfigError."""
    out: dict[str, str] = {}

    def add(resource: str, name: str, key: str) -> None:
        canon = canonical(resource)
        other = _find(out, canon)
        if other is not None and other != name:
            raise ConfigError(key, f"{resource} is already {other!r}'s address", source)
        out[canon] = name

    for name, inst in instruments.items():
        addr = str(inst.address)
        if is_visa_resource(addr) and not _is_loopback(addr):
            add(addr, name, f"instruments.{name}.address")
    for resource, name in aliases.items():
        key = f"mock.visa.{resource}"
        if name not in instruments:
            raise ConfigError(key, f"no instrument {name!r} in the station", source)
        if not is_visa_resource(str(resource)):
            raise ConfigError(key, f"{resource!r} is not a VISA resource name", source)
        add(str(resource), str(name), key)
    return out


def _find(resources: Mapping[str, str], canon: str) -> str | None:
    """``resources[canon]`` with resource names compared case-blind."""
    want = canon.upper()
    return next((v for k, v in resources.items() if k.upper() == want), None)


def _is_loopback(address: str) -> bool:
    parsed = rname.parse_resource_name(address)
    return getattr(parsed, "host_address", None) in ("127.0.0.1", "localhost")


# -- labs served by another process ---------------------------------------------------------


def _station_key(station: str | Path) -> str:
    return hashlib.sha256(str(Path(station).resolve()).encode()).hexdigest()[:16]


def registry_file(station: str | Path) -> Path:
    """Where a served lab of ``station`` announces its live resources (per user, in the
    temporary directory; removed when the lab stops)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"memhil-mock-lab-{uid}" / f"{_station_key(station)}.yaml"


def live_resources(lab: MockLab) -> dict[str, str]:
    """Canonical bench resource -> the loopback socket that serves it, for a started lab."""
    amap = address_map(lab.config.instruments, lab.mock.visa, lab.config.source)
    return {res: lab.servers[name].resource_name for res, name in amap.items()}


def register_served(lab: MockLab) -> Path | None:
    """Announce a started lab's live resources for ``@memhil`` clients of other processes
    (None for a lab not loaded from a file: nothing can name it)."""
    if not lab.config.source:
        return None
    path = registry_file(lab.config.source)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    data = {"station": str(Path(lab.config.source).resolve()), "pid": os.getpid()}
    tmp.write_text(yaml.safe_dump({**data, "resources": live_resources(lab)}))
    tmp.replace(path)  # readers never see half a file
    return path


def unregister_served(path: Path | None) -> None:
    if path is None:
        return
    try:
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and data.get("pid") == os.getpid():
            path.unlink()
    except OSError:
        pass


def served_resources(station: str | Path) -> dict[str, str] | None:
    """The live resources of a lab serving ``station`` in a running process, or None."""
    path = registry_file(station)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(data, dict) or not _alive(int(data.get("pid", -1))):
        return None
    return {str(k): str(v) for k, v in dict(data.get("resources") or {}).items()}


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- labs started in this process -----------------------------------------------------------

_labs: dict[str, MockLab] = {}
_labs_lock = threading.Lock()


def in_process_lab(station: str | Path) -> MockLab:
    """The lab of ``station`` started in this process (once; stopped at exit)."""
    from memhil.mock_hw.lab import MockLab

    key = str(Path(station).resolve())
    with _labs_lock:
        lab = _labs.get(key)
        if lab is None:
            lab = _labs[key] = MockLab(key, as_bench=True).start()
            if len(_labs) == 1:
                atexit.register(stop_in_process_labs)
        return lab


def stop_in_process_labs() -> None:
    """Stop every lab ``@memhil`` started in this process (tests; also at exit)."""
    with _labs_lock:
        labs = list(_labs.values())
        _labs.clear()
    for lab in labs:
        lab.stop()


# -- the pyvisa backend ---------------------------------------------------------------------


def _is_serial_line(attribute: Any) -> bool:
    """Whether ``attribute`` is a serial-line setting (``VI_ATTR_ASRL_*``)."""
    cls = attributes.AttributesByID.get(int(attribute))
    return cls is not None and cls.visa_name.startswith("VI_ATTR_ASRL_")


class MessageSocketSession(TCPIPSocketSession):
    """pyvisa-py's socket session with a bench bus's message end: GPIB (EOI), VXI-11 and
    USBTMC (END) mark where a reply ends, so a script that sets no read termination reads
    one reply per read. The emulators end each reply with a newline, which is the END
    here; a binary block (``#...``) is read as pyvisa-py reads a socket (by count, or
    until the line is quiet). A script that sets a termination character is served
    exactly as by pyvisa-py."""

    def read(self, count: int) -> tuple[bytes, StatusCode]:
        term_en, _ = self.get_attribute(constants.ResourceAttribute.termchar_enabled)
        if term_en or self._pending_buffer[:1] == b"#":
            return super().read(count)
        term, _ = self.get_attribute(constants.ResourceAttribute.termchar)
        self.set_attribute(constants.ResourceAttribute.termchar, ord("\n"))
        self.set_attribute(constants.ResourceAttribute.termchar_enabled, True)
        try:
            data, status = super().read(count)
        finally:
            self.set_attribute(constants.ResourceAttribute.termchar, term)
            self.set_attribute(constants.ResourceAttribute.termchar_enabled, False)
        if data[:1] == b"#" and status == StatusCode.success_termination_character_read:
            self._pending_buffer[:0] = data  # a binary block: read it as pyvisa-py does
            return super().read(count)
        if status == StatusCode.success_termination_character_read:
            status = StatusCode.success  # END, not a termination character
        return data, status

    def read_stb(self) -> tuple[int, StatusCode]:
        """Serial poll, as the ``*STB?`` query a socket instrument answers."""
        _, st = self.write(b"*STB?\n")
        if st != StatusCode.success:
            return 0, st
        data, st = self.read(64)
        try:
            return int(float(data.decode().strip())), StatusCode.success
        except ValueError:
            return 0, StatusCode.error_io

    def get_attribute(self, attribute: constants.ResourceAttribute) -> tuple[Any, StatusCode]:
        if _is_serial_line(attribute) and attribute in self._serial_line:
            return self._serial_line[attribute], StatusCode.success
        return super().get_attribute(attribute)

    def set_attribute(self, attribute: constants.ResourceAttribute, value: Any) -> StatusCode:
        """A serial instrument's line settings (baud rate, parity, ...: ``VI_ATTR_ASRL_*``)
        are kept and read back: the loopback socket has no line to set, and a client
        that configures its serial port (PyMeasure's ``asrl={...}``) must not fail."""
        if _is_serial_line(attribute):
            self._serial_line[attribute] = value
            return StatusCode.success
        return super().set_attribute(attribute, value)

    @property
    def _serial_line(self) -> dict[Any, Any]:
        return self.__dict__.setdefault("_serial_line_settings", {})

    def gpib_control_ren(self, mode: constants.RENLineOperation) -> StatusCode:
        """Remote enable: an emulator is always remote."""
        return StatusCode.success


class MockLabVisaLibrary(PyVisaLibrary):
    """pyvisa backend ``@memhil``: bench resource names of a mock station file, opened as
    pyvisa-py socket sessions to the mock lab's emulators."""

    @staticmethod
    def get_library_paths() -> Iterable[LibraryPath]:
        return (LibraryPath(_DEFAULT_PATH),)

    @staticmethod
    def get_debug_info() -> dict[str, Any]:
        from memhil import __version__

        return {"Version": __version__, "Station": os.environ.get(ENV_STATION, "(unset)")}

    def _init(self) -> None:
        super()._init()
        path = str(self.library_path.path)
        if path in ("", _DEFAULT_PATH):
            path = os.environ.get(ENV_STATION, "")
            if not path:
                raise OSError(
                    f"'@memhil' needs a mock station file: 'STATION.yaml@memhil' or "
                    f"{ENV_STATION}=STATION.yaml"
                )
        if not Path(path).is_file():
            raise OSError(f"'{path}@memhil': no such mock station file")
        self.station_path = str(Path(path).resolve())

    def resources(self) -> dict[str, str]:
        """Canonical bench resource -> live loopback socket: a served lab's when one runs,
        else this process's own lab of the station file."""
        served = served_resources(self.station_path)
        if served is not None:
            return served
        return live_resources(in_process_lab(self.station_path))

    def open(
        self,
        session: VISARMSession,
        resource_name: str,
        access_mode: constants.AccessModes = constants.AccessModes.no_lock,
        open_timeout: int | None = constants.VI_TMO_IMMEDIATE,
    ) -> tuple[VISASession, StatusCode]:
        try:
            canon = canonical(resource_name)
        except rname.InvalidResourceName:
            return VISASession(0), self.handle_return_value(
                None, StatusCode.error_invalid_resource_name
            )
        live = _find(self.resources(), canon)
        if live is None:
            log.info("%s@memhil: no instrument at %s", self.station_path, resource_name)
            return VISASession(0), self.handle_return_value(
                None, StatusCode.error_resource_not_found
            )
        try:
            sess = MessageSocketSession(
                session, live, rname.parse_resource_name(live), open_timeout
            )
        except OpenError as exc:
            return VISASession(0), self.handle_return_value(None, exc.error_code)
        return self._register(sess), StatusCode.success

    def list_resources(self, session: VISARMSession, query: str = "?*::INSTR") -> tuple[str, ...]:
        return tuple(rname.filter(list(self.resources()), query))
