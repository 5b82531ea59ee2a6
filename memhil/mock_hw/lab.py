"""MockLab: a whole bench emulated from a station YAML, for CI and for trying things out.

Every instrument of the station becomes its wire-level emulator, served on a loopback TCP
port (pyvisa-py ``TCPIP0::127.0.0.1::PORT::SOCKET``) or, for the array board, through the
``memhilboard://`` pyserial URL (in-process) or a ``socket://`` URL (served). All of them
share ONE chip (``MockChip``: a crossbar of simulator devices on a virtual wafer) and ONE
virtual clock. ``lab.station_config()`` is the same station with the live addresses, so
``Station.from_config(lab.station_config())`` drives the mock exactly as the bench.

The station's ``mock:`` section describes the chip under the probes::

    mock:
      device: {model: vteam}          # default: chip.device; or a parameter file
                                      # (fitted.yaml, relative to the station file)
      seed: 0
      read: {read_noise_rel: 0.01}    # the simulator's read path (memhil.backends.sim)
      faults: {stuck_on_fraction: 0}  # stuck-at faults of the simulated array
      sneak_paths: true               # passive array (false: ideal selectors)
      wafer: {dies: [[0, 0], [1, 0], [2, 0]], die_overrides: {"2,0": {r_on_ohm: 80}}}
      ground_ports: [12]              # (prefer wiring.ground_ports) matrix inputs at LO
      routes: {smu.smua: {hi: [[row, 0]], lo: [[col, 0]]}}   # without a matrix
      visa: {"GPIB0::23::INSTR": matrix}  # more bench addresses for the @memhil VISA library
      time: {mode: realtime, scale: 1.0, latency: true}  # default: virtual, no latency;
                                      # `mock-lab serve`: realtime with latency (lab_time)
      accuracy: true                  # SMU readings off by the datasheet accuracy; default:
                                      # on when served or opened through @memhil, else off

An instrument's ``address`` may be its bench address (``GPIB0::22::INSTR``): the lab then
serves it on a free loopback port, and the ``@memhil`` pyvisa backend
(``memhil.mock_hw.visa``) opens the bench address there (docs/mock-lab.md).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memhil.backends.clock import VirtualClock
from memhil.backends.hardware import HardwareBackend
from memhil.core.config import from_mapping
from memhil.core.errors import ConfigError
from memhil.instruments.station import StationConfig, load_station_config
from memhil.mock_hw.bench import MockBench
from memhil.mock_hw.chip import MockChip, WaferSpec
from memhil.mock_hw.emulators.arc2 import EmulatedArC2
from memhil.mock_hw.emulators.array_board import ArrayBoardEmulator
from memhil.mock_hw.emulators.b220x import B220xEmulator
from memhil.mock_hw.emulators.b1500 import B1500Emulator
from memhil.mock_hw.emulators.k2450 import Keithley2450Emulator
from memhil.mock_hw.emulators.k2600 import Keithley2600Emulator
from memhil.mock_hw.emulators.k4200 import Keithley4200Emulator
from memhil.mock_hw.emulators.sentio import SentioEmulator
from memhil.mock_hw.emulators.velox import VeloxEmulator
from memhil.mock_hw.lab_time import PacedClock, SyncedEmulator, TimeConfig, WallClockSync
from memhil.mock_hw.server import FaultInjector, LineServer
from memhil.mock_hw.visa import is_visa_resource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MockConfig:
    """The ``mock:`` section of a station file."""

    device: Any = None
    seed: int = 0
    read: dict = field(default_factory=dict)
    faults: dict = field(default_factory=dict)
    sneak_paths: bool = True
    wafer: dict = field(default_factory=dict)
    ground_ports: tuple[int, ...] = ()
    routes: dict = field(default_factory=dict)
    visa: dict = field(default_factory=dict)  # extra VISA resource -> instrument (@memhil)
    time: dict = field(default_factory=dict)  # mode / scale / latency (lab_time.TimeConfig)
    # SMU readings off by the datasheet accuracy per range (memhil.mock_hw.smu_accuracy);
    # unset: on for a lab used as a bench (served, or opened through @memhil), off for
    # memhil's own in-process runs and tests (exact values)
    accuracy: bool | None = None


# Which emulator stands in for each registered instrument type, and how the driver
# options must be set to reach it over pyvisa-py.
_VISA_OPTIONS = {
    "keithley2636b": {"visalib": "@py"},
    "keithley2450": {"visalib": "@py"},
    "keysight_b2201": {"visalib": "@py"},
    "formfactor_velox": {"visa_library": "@py"},
    "keysight_b1500a": {"visalib": "@py"},
    "keithley4200a": {"visa_library": "@py"},
}


class MockLab:
    """Emulators for every instrument of ``station`` (a StationConfig, mapping or YAML
    path), sharing one chip and one virtual clock. Use as a context manager."""

    def __init__(
        self,
        station: StationConfig | Mapping[str, Any] | str | Path,
        *,
        clock: VirtualClock | None = None,
        serve_array_board_tcp: bool = False,
        served: bool = False,
        as_bench: bool = False,
    ):
        self.config = load_station_config(station)
        src = self.config.source
        self.mock = from_mapping(MockConfig, self.config.mock, source=src, prefix="mock")
        self.time = from_mapping(
            TimeConfig,
            TimeConfig.with_defaults(self.mock.time, serve=served),
            source=src,
            prefix="mock.time",
        )
        self.accuracy = (
            bool(self.mock.accuracy) if self.mock.accuracy is not None else served or as_bench
        )
        self.clock = clock or PacedClock(pace_scale=self.time.scale if self.time.latency else None)
        self._sync: WallClockSync | None = None
        chip_cfg = self.config.chip
        device = self.mock.device if self.mock.device is not None else (chip_cfg.device or "pcm")
        if (
            isinstance(device, str)
            and device.endswith((".yaml", ".yml"))
            and src
            and not Path(device).expanduser().is_absolute()
        ):
            device = str((Path(src).parent / Path(device).expanduser()).resolve())  # a fit file
        wafer = WaferSpec(
            dies=tuple(tuple(d) for d in self.mock.wafer.get("dies", [[0, 0]])),
            die_overrides=dict(self.mock.wafer.get("die_overrides", {})),
        )
        self.chip = MockChip(
            {
                "rows": chip_cfg.rows,
                "cols": chip_cfg.cols,
                "device": device,
                "seed": self.mock.seed,
                "read": self.mock.read,
                "faults": self.mock.faults,
            },
            clock=self.clock,
            wafer=wafer,
            sneak_paths=self.mock.sneak_paths,
        )
        self.bench = MockBench(self.chip, self._fixed_router())
        self.emulators: dict[str, Any] = {}
        self.servers: dict[str, LineServer] = {}
        self._serve_board_tcp = serve_array_board_tcp
        self._build()

    # -- construction -------------------------------------------------------------------
    def _terminal_key(self, station_key: str) -> str:
        """Bench terminal of a station SMU key (``inst.channel``, or ``inst`` for a
        single-channel SMU such as the 2450, whose emulator names it ``inst.smu``)."""
        inst = station_key.split(".")[0]
        if "." not in station_key and self.config.instruments[inst].type == "keithley2450":
            return f"{inst}.smu"
        return station_key

    def _fixed_router(self):
        routes = {self._terminal_key(k): v for k, v in self.mock.routes.items()}

        def router(key: str):
            r = routes.get(key)
            if r is None:
                return [], []
            return (
                [(str(a), int(b)) for a, b in r.get("hi", [])],
                [(str(a), int(b)) for a, b in r.get("lo", [])],
            )

        return router

    def _build(self) -> None:
        prober: Any = None
        for name, inst in self.config.instruments.items():
            if inst.type == "formfactor_velox":
                prober = self.emulators[name] = VeloxEmulator(self.chip, name=name)
            elif inst.type == "mpi_sentio":
                prober = self.emulators[name] = SentioEmulator(self.chip, name=name)
        for name, inst in self.config.instruments.items():
            t = inst.type
            emu: Any
            if t == "keithley2636b":
                emu = Keithley2600Emulator(
                    self.bench,
                    name=name,
                    model="2636B",
                    seed=self.mock.seed,
                    accuracy=self.accuracy,
                )
            elif t == "keithley2450":
                emu = Keithley2450Emulator(
                    self.bench, name=name, seed=self.mock.seed, accuracy=self.accuracy
                )
            elif t == "keysight_b1500a":
                emu = B1500Emulator(self.bench, name=name)
            elif t == "keithley4200a":  # a 4225-PMU when the station names RPMs on SMUs
                emu = Keithley4200Emulator(self.bench, name=name, rpm=inst.options.get("rpm"))
            elif t == "keysight_b2201":
                w = self.config.wiring
                emu = B220xEmulator(
                    self.bench,
                    {
                        "ports": {self._terminal_key(k): v for k, v in w.smu_ports.items()},
                        "rows": list(w.rows),
                        "cols": list(w.cols),
                        "ground": list(w.ground_ports or self.mock.ground_ports),
                    },
                    name=name,
                    probe=prober,
                )
            elif t == "memhil_array_board":
                emu = ArrayBoardEmulator(self.chip, board_id=name, name=name, probe=prober)
            elif t == "arc2":  # pyarc2's USB link has no wire to emulate: its API is
                emu = EmulatedArC2(self.chip, name=name, probe=prober)
            elif t in ("formfactor_velox", "mpi_sentio"):
                continue
            else:
                raise ValueError(
                    f"instruments.{name}.type: the mock lab has no emulator for "
                    f"{t!r} (has: keithley2636b, keithley2450, keithley4200a, keysight_b1500a, keysight_b2201, "
                    f"formfactor_velox, mpi_sentio, memhil_array_board, arc2)"
                )
            self.emulators[name] = emu

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> MockLab:
        """Serve every instrument (port 0 in an address: a free port, see ``address``). A
        port that cannot be bound is a ConfigError naming the instrument, and whatever was
        already started is stopped."""
        if self.time.mode == "realtime" and isinstance(self.clock, PacedClock):
            self._sync = WallClockSync(self.bench, self.clock, self.time.scale)
        try:
            for name, emu in self.emulators.items():
                inst = self.config.instruments[name]
                if isinstance(emu, EmulatedArC2):
                    emu.start()  # arc2mock://<name>, in-process
                    continue
                if isinstance(emu, ArrayBoardEmulator):
                    emu.start()  # in-process pyserial URL
                    # served too when asked, or when a bench addresses it by VISA
                    # (``ASRL...::INSTR``: reached through ``@memhil``, docs/mock-lab.md)
                    if not (self._serve_board_tcp or is_visa_resource(str(inst.address))):
                        continue
                port = _port_of(inst.address)
                faults = emu.faults if isinstance(emu, ArrayBoardEmulator) else FaultInjector()
                try:
                    handle = (
                        emu.handle if self._sync is None else SyncedEmulator(emu, self._sync).handle
                    )
                    server = LineServer(
                        handle,
                        name=name,
                        port=port,
                        faults=faults,
                        terminator=getattr(emu, "terminator", "\n"),  # KXCI: NUL
                    )
                except OSError as exc:
                    raise ConfigError(
                        f"instruments.{name}.address",
                        f"cannot serve on 127.0.0.1:{port} ({exc.strerror or exc}); "
                        f"another mock lab may hold it: use port 0 (a free port)",
                        self.config.source,
                    ) from None
                self.servers[name] = server.start()
                if hasattr(emu, "server"):
                    emu.server = self.servers[name]
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        for emu in self.emulators.values():
            if isinstance(emu, (ArrayBoardEmulator, EmulatedArC2)):
                emu.stop()
        self.servers.clear()

    def __enter__(self) -> MockLab:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what clients need --------------------------------------------------------------
    def address(self, name: str) -> str:
        """The live address of instrument ``name``."""
        emu = self.emulators[name]
        if isinstance(emu, (ArrayBoardEmulator, EmulatedArC2)) and name not in self.servers:
            return emu.url
        if name not in self.servers:
            raise RuntimeError(f"{name} is not served: start() the lab first")
        server = self.servers[name]
        if isinstance(emu, ArrayBoardEmulator):
            return f"socket://127.0.0.1:{server.port}"
        return server.resource_name

    def station_config(self) -> StationConfig:
        """The station with live addresses and the driver options that reach the mock."""
        instruments = {}
        for name, inst in self.config.instruments.items():
            options = {**_VISA_OPTIONS.get(inst.type, {}), **inst.options}
            instruments[name] = dataclasses.replace(
                inst, address=self.address(name), options=options
            )
        return dataclasses.replace(self.config, instruments=instruments)

    def faults(self, name: str) -> FaultInjector:
        """The fault injector of instrument ``name``'s emulator."""
        emu = self.emulators[name]
        if isinstance(emu, ArrayBoardEmulator):
            return emu.faults
        return self.servers[name].faults

    @classmethod
    def open_backend(
        cls, station: StationConfig | Mapping[str, Any] | str | Path, **backend_kw: Any
    ):
        """A ``MockLabBackend`` over a fresh, started lab for ``station``, on the lab's
        virtual clock, touching down on the wafer's first die (``die=`` another) as any
        station with a prober does; closing the backend also closes the station and stops
        the lab."""
        from memhil.instruments.station import Station

        lab = cls(station).start()
        st = None
        try:
            st = Station.from_config(lab.station_config())
            if st.prober is not None:  # the backend touches down on its die (default: the
                st.prober.load_map(list(lab.chip.wafer.dies))  # first) before it reads
                backend_kw.setdefault("die", tuple(lab.chip.wafer.dies[0]))
            return MockLabBackend(lab, st, **backend_kw)
        except BaseException:
            # a backend refused at open (a nominal pulse below the floor ...) leaves no
            # connection and no QCoDeS name behind: the station can be opened again
            try:
                if st is not None:
                    st.close()
            finally:
                lab.stop()
            raise

    def sources_off(self) -> bool:
        """True when no emulated source drives the chip (every terminal off)."""
        return not any(t.output_on for t in self.bench.terminals.values())


class MockLabBackend(HardwareBackend):
    """A ``HardwareBackend`` over ``station`` connected to ``lab``, which it owns: closing
    it (after the safe state) closes the station and stops the lab; its description adds
    the device the lab emulates (``mock_device``, a file of it as calibration data)."""

    def __init__(self, lab: MockLab, station: Any, **backend_kw: Any):
        self.lab = lab
        super().__init__(station, clock=lab.clock, on_close=self._close_lab, **backend_kw)

    def _close_lab(self) -> None:
        try:
            self.station.close()
        finally:
            self.lab.stop()
            _close_qcodes(self.station)

    def describe(self) -> dict[str, Any]:
        desc = super().describe()
        device = self.lab.mock.device
        if device is not None:
            desc["mock_device"] = device
            if isinstance(device, (str, Path)) and str(device).endswith((".yaml", ".yml")):
                p = Path(device).expanduser()
                if not p.is_absolute() and self.lab.config.source:
                    p = Path(self.lab.config.source).parent / p
                desc["calibration_files"] = {
                    **desc["calibration_files"],
                    "mock.device": str(p.resolve()),
                }
        return desc


def _close_qcodes(station: Any) -> None:
    """Forget the station's QCoDeS instruments (their names are global in QCoDeS)."""
    from qcodes.instrument import Instrument

    for name in station.config.instruments:
        if Instrument.exist(name):
            Instrument.find_instrument(name).close()


def _port_of(address: str) -> int:
    """The TCP port of a loopback VISA socket or ``socket://`` address, else 0 (pick a
    free one)."""
    m = re.match(r"TCPIP\d*::(127\.0\.0\.1|localhost)::(\d+)::SOCKET", address, re.I) or re.match(
        r"socket://(127\.0\.0\.1|localhost):(\d+)", address, re.I
    )
    return int(m.group(2)) if m else 0


def serve(station: str | Path, *, out=print, ready_file: str | Path | None = None) -> None:
    """Run a mock lab until Ctrl-C (``memhil mock-lab serve``): every instrument on its TCP
    port (the array board as ``socket://``); the live station is written to
    ``ready_file`` (YAML) when given, so another process can connect to it."""
    import os
    import signal
    import threading

    import yaml

    from memhil.mock_hw.visa import register_served, unregister_served

    stop = threading.Event()
    with MockLab(station, serve_array_board_tcp=True, served=True) as lab:
        registered = register_served(lab)  # bench addresses for '@memhil' clients
        live = lab.station_config()
        for name, inst in live.instruments.items():
            out(f"{name:<10} {inst.type:<20} {inst.address}")
        t = lab.time
        out(
            f"chip time: {t.mode}, {t.scale:g} chip s per wall s, "
            f"latency {'on' if t.latency else 'off'} (mock.time)"
        )
        # the SIGTERM handler before the ready file: a client may stop the lab as soon as
        # the file appears, and the default action would kill it without its clean stop
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            if ready_file is not None:  # whole or absent: written apart, then renamed
                ready = Path(ready_file)
                partial = ready.with_name(ready.name + ".partial")
                partial.write_text(yaml.safe_dump(live.to_dict(), sort_keys=False))
                os.replace(partial, ready)
            out("mock lab running; Ctrl-C to stop")
            while not stop.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            unregister_served(registered)
    out("mock lab stopped")
