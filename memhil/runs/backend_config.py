"""Pick the backend an experiment runs on from its configuration, so the same experiment
YAML runs unchanged on the simulator, the mock lab or a bench::

    backend: sim                                # SimBackend with defaults
    backend: {sim: {rows: 64, cols: 64, device: pcm}}
    backend: {station: bench.yaml}              # HardwareBackend on a real bench (wall clock)
    backend: {mock_lab: station.yaml}           # HardwareBackend over an in-process mock lab
    backend: {mock_lab: station.yaml, strategy: cell}   # extra keys go to HardwareBackend

Glue above ``backends`` and ``mock_hw`` (neither imports the other's side).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memhil.backends.base import Backend
from memhil.core.config import load_yaml
from memhil.core.errors import ConfigError


def open_backend(
    config: str | Mapping[str, Any] | Path,
    *,
    source: str | None = None,
    visa_library: str | None = None,
) -> Backend:
    """A ready backend from an experiment configuration (its ``backend`` entry, or the
    entry itself); close it (or use ``with``) to leave instruments safe and stop a lab.
    ``visa_library``: the VISA library of a ``station`` bench (a path: command line only)."""
    if isinstance(config, Path) or (isinstance(config, str) and config.endswith((".yaml", ".yml"))):
        source = str(config)
        config = load_yaml(config)
    if isinstance(config, Mapping) and "backend" in config:
        config = config["backend"]
    if config == "sim":
        config = {"sim": {}}
    if not isinstance(config, Mapping):
        raise ConfigError("backend", f"expected 'sim' or a mapping, got {config!r}", source)
    kinds = [k for k in ("sim", "station", "mock_lab") if k in config]
    if len(kinds) != 1:
        raise ConfigError(
            "backend",
            f"needs exactly one of: sim, station, mock_lab (got {sorted(config)})",
            source,
        )
    kind = kinds[0]
    extra = {k: v for k, v in config.items() if k != kind}
    if kind == "sim":
        from memhil.backends.sim import SimBackend

        if extra:
            raise ConfigError(f"backend.{sorted(extra)[0]}", "unknown key next to 'sim'", source)
        return SimBackend(config["sim"] or {})
    if kind == "station":
        from memhil.backends.hardware import HardwareBackend
        from memhil.instruments.station import Station

        station = Station.from_config(config["station"], visa_library=visa_library)
        try:
            # closing the backend (safe state) also closes the station opened for it: its
            # connections and QCoDeS names, so the bench can be opened again in this process
            return HardwareBackend(station, on_close=station.close, **extra)
        except BaseException:
            station.close()
            raise
    from memhil.mock_hw.lab import MockLab

    return MockLab.open_backend(config["mock_lab"], **extra)
