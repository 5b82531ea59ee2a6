"""Protocol files: ``load_protocol_file(path) -> ProtocolFile``, parsed and validated, and
their pre-flight from the configuration files alone.

A protocol file (YAML)::

    protocol: pulse_train                     # a registered protocol (memhil.protocols)
    params: {n_pulses: 20, v_ltp: 2.0, v_ltd: -2.0, width_s: 8.0e-8}
    backend: {mock_lab: ../mock_wafer_station.yaml}   # relative paths: against this file
    name: ltp_demo                            # optional run name (default: the file stem)
    description: free text                    # optional

Errors name the file and key: a bad entry (ConfigError at load), a request beyond a limit
(``ProtocolLimitError`` naming ``params.<key>``), a cell outside the chip (ConfigError).
``offline_backend`` is a dry stand-in built from the station or simulator configuration
(chip rows/cols, limits, instrument roles), so a file is pre-flighted before any
instrument is contacted or any database opened.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from memhil.core.config import load_yaml
from memhil.core.errors import ConfigError
from memhil.core.types import as_pulse
from memhil.protocols import ProtocolLimitError, build_protocol
from memhil.runs.backend_config import open_backend

__all__ = [
    "ProtocolFile",
    "load_protocol_file",
    "protocol_file_from_mapping",
    "resolve_backend_config",
    "offline_backend",
    "file_errors",
    "PROTOCOL_FILE_KEYS",
    "META_FILE",
    "META_CONFIG",
    "plain",
]

PROTOCOL_FILE_KEYS = ("protocol", "params", "backend", "name", "description")
META_FILE = "protocol_file"  # run metadata: the protocol file's absolute path
META_CONFIG = "protocol_config"  # run metadata: ``ProtocolFile.config()``


@dataclass(frozen=True)
class ProtocolFile:
    path: Path
    protocol: str
    params: dict
    backend: Any  # resolved backend config (paths absolute), or None
    name: str
    description: str
    plan: Any  # the ProtocolPlan

    def config(self) -> dict:
        return {
            "file": str(self.path),
            "protocol": self.protocol,
            "params": self.params,
            "backend": plain(self.backend),
            "name": self.name,
            "description": self.description,
        }


def plain(x: Any) -> Any:
    """``x`` as plain data for run metadata (paths as text, other objects as their repr)."""
    if isinstance(x, Mapping):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return repr(x)


def resolve_backend_config(config: Any, base: Path, source: str | None = None) -> Any:
    """``config`` with its station / mock_lab YAML path (and a sim device file) made
    absolute against ``base``."""
    if config is None or config == "sim":
        return config
    if not isinstance(config, Mapping):
        raise ConfigError("backend", f"expected 'sim' or a mapping, got {config!r}", source)
    out = dict(config)
    for kind in ("station", "mock_lab"):
        v = out.get(kind)
        if isinstance(v, (str, Path)):
            p = Path(v).expanduser()
            out[kind] = str(p if p.is_absolute() else (base / p).resolve())
    sim = out.get("sim")
    if (
        isinstance(sim, Mapping)
        and isinstance(sim.get("device"), str)
        and sim["device"].endswith((".yaml", ".yml"))
    ):
        p = Path(sim["device"]).expanduser()
        out["sim"] = {**sim, "device": str(p if p.is_absolute() else (base / p).resolve())}
    return out


def chosen_backend(file_backend: Any, backend: Any, source: str) -> Any:
    """The backend configuration a run of a file uses: ``backend`` (a configuration, paths
    relative to the working directory) or else the file's ``backend:`` entry; a ConfigError
    naming the command-line options when there is neither."""
    cfg = (
        file_backend
        if backend is None
        else resolve_backend_config(backend, Path.cwd(), "backend argument")
    )
    if cfg is None:
        raise ConfigError(
            "backend",
            "no backend: give one in the file or on the command line (--sim, --station, "
            "--mock-lab)",
            source,
        )
    return cfg


def load_protocol_file(path: str | Path) -> ProtocolFile:
    """Parse and validate a protocol file (no instrument is touched)."""
    path = Path(path).resolve()
    return protocol_file_from_mapping(load_yaml(path), path)


def protocol_file_from_mapping(data: Mapping[str, Any], path: str | Path) -> ProtocolFile:
    """Validate the content ``data`` of protocol file ``path`` (a sweep's trial is its base
    file's content with some keys changed): errors name ``path`` and the key; relative
    paths resolve against ``path``'s folder."""
    path = Path(path).resolve()
    src = str(path)
    unknown = sorted(set(data) - set(PROTOCOL_FILE_KEYS))
    if unknown:
        raise ConfigError(unknown[0], f"unknown key (allowed: {list(PROTOCOL_FILE_KEYS)})", src)
    if "protocol" not in data:
        raise ConfigError("protocol", "missing (a registered protocol name)", src)
    name = data["protocol"]
    if not isinstance(name, str):
        raise ConfigError("protocol", f"expected a protocol name, got {name!r}", src)
    from memhil.protocols.registry import protocol_names

    if name not in protocol_names():
        raise ConfigError("protocol", f"unknown protocol {name!r} (known: {protocol_names()})", src)
    params = data.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError("params", f"expected a mapping, got {type(params).__name__}", src)
    plan = build_protocol(name, params, source=src, prefix="params")
    run_name = data.get("name", path.stem)
    if not isinstance(run_name, str) or not run_name:
        raise ConfigError("name", f"expected a non-empty string, got {run_name!r}", src)
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise ConfigError("description", "expected a string", src)
    backend = resolve_backend_config(data.get("backend"), path.parent, src)
    return ProtocolFile(
        path=path,
        protocol=name,
        params=dict(params),
        backend=backend,
        name=run_name,
        description=desc,
        plan=plan,
    )


def file_limit_error(exc: ProtocolLimitError, pf: ProtocolFile) -> ProtocolLimitError:
    """The pre-flight's limit error, naming the file and its ``params.`` keys."""
    keys = " / ".join(f"params.{p}" for p in exc.params)
    return ProtocolLimitError(exc, exc.protocol, exc.params, param=f"{pf.path}: {keys}")


@contextmanager
def file_errors(pf: ProtocolFile, backend: Any, where: str) -> Iterator[None]:
    """A pre-flight of ``pf`` on ``backend`` whose errors name the protocol file and key:
    limits (ProtocolLimitError), cells outside the chip of ``where`` and parameters the
    plan checks against the chip (ConfigError)."""
    try:
        yield
    except ProtocolLimitError as exc:
        raise file_limit_error(exc, pf) from None
    except ConfigError as exc:  # a parameter the plan checks against the chip (a row)
        if exc.source is not None:
            raise
        raise ConfigError(f"params.{exc.key}", exc.reason, str(pf.path)) from None
    except IndexError as exc:  # a cell outside the chip
        _, rows, cols = backend.shape
        key = "params.cells" if "cells" in pf.params else "params"
        raise ConfigError(
            key, f"{exc} (the chip of {where} has {rows} x {cols} cells)", str(pf.path)
        ) from None


def offline_backend(backend_cfg: Any, source: str | None = None) -> Any:
    """A dry stand-in for the configured backend, from the configuration files alone: the
    station's chip shape, limits, device description and instrument roles (a simulator is
    itself contacts-free and is opened). Nothing is connected."""
    from types import SimpleNamespace

    from memhil.backends.base import Backend, Capabilities
    from memhil.backends.hardware import _device_bipolar, _device_description, cell_path_limits
    from memhil.instruments.registry import get_instrument_type, load_builtin_instruments
    from memhil.instruments.station import load_station_config, pulse_width_floor
    from memhil.protocols.dry import DryBackend

    cfg = {"sim": {}} if backend_cfg == "sim" else dict(backend_cfg)
    if "sim" in cfg:
        sim = open_backend(backend_cfg, source=source)
        try:
            return DryBackend(sim, has_prober=False)
        finally:
            sim.close()
    kind = next((k for k in ("station", "mock_lab") if k in cfg), None)
    if kind is None:
        raise ConfigError(
            "backend", f"needs exactly one of: sim, station, mock_lab (got {sorted(cfg)})", source
        )
    sc = load_station_config(cfg[kind])
    load_builtin_instruments()
    roles = {
        get_instrument_type(i.type, key=f"instruments.{n}.type", source=str(cfg[kind])).role
        for n, i in sc.instruments.items()
    }
    strategy = cfg.get("strategy", "auto")
    if strategy == "auto":
        strategy = "parallel" if "array" in roles else "cell"
    try:
        g, set_pulse, reset_pulse = _device_description(sc.chip)
    except ValueError as exc:
        raise ConfigError("chip", str(exc), str(cfg[kind])) from None
    limits = sc.limits
    if strategy == "cell" and sc.wiring.smu_ports:  # as HardwareBackend: the drive SMU pulses
        drive = cfg.get("drive") or next(iter(sc.wiring.smu_ports))
        floor = pulse_width_floor(sc, drive) if drive.split(".")[0] in sc.instruments else None
        limits, set_pulse, reset_pulse = cell_path_limits(limits, floor, set_pulse, reset_pulse)
    device = sc.chip.device
    caps = Capabilities(
        tiles=1,
        rows=sc.chip.rows,
        cols=sc.chip.cols,
        read_strategy=strategy,
        transpose_read=True,
        per_cell_amplitude=True,
        per_cell_width=True,
        min_pulse_width_s=limits.width_min_s,
        virtual_clock=kind == "mock_lab",
        device_model=str(device or "unknown"),
        bipolar=_device_bipolar(device, sc.source),
        conductance_range_s=g,
        set_pulse=as_pulse(set_pulse),
        reset_pulse=as_pulse(reset_pulse),
    )
    v_read = cfg.get("v_read")  # HardwareBackend's default read voltage when unset

    def device_model() -> Any:  # as HardwareBackend.device_model, without connecting
        from memhil.devices import build_device_model

        return None if device is None else build_device_model(device)

    like = SimpleNamespace(
        device_model=device_model,
        shape=(1, sc.chip.rows, sc.chip.cols),
        limits=limits,
        capabilities=caps,
        read_voltage_v=float(0.5 * sc.limits.v_read_max_v if v_read is None else v_read),
    )
    # a stand-in with the attributes DryBackend reads: nothing here may connect
    return DryBackend(cast(Backend, like), has_prober="prober" in roles)
