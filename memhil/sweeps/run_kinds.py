"""The one seam between sweeps and the run files they sweep: a ``RunKind`` per kind of
file (a protocol file today), found from the file's content by ``kind_of``.

A sweep needs five things of its base file, and nothing else:

* ``load(data, path)``: the file's content (with the trial's keys changed) validated into
  a run object, errors naming ``path`` and the dotted key;
* ``preflight(obj)``: every check the files allow, with no instrument contacted and no
  database opened;
* ``station(obj)``: the station the run holds exclusively (trials on one station are
  serialized), or None where runs may go in parallel (the simulator, an in-process mock
  lab);
* ``run(obj, db)``: the run itself, into the run store at ``db``; returns the run id;
* ``final_metrics(record)``: the stored run summarised as a few numbers.

Two kinds: protocol files (``protocol:``) and experiment files (``algorithm:``); a new kind
of run file joins a sweep by adding its ``RunKind`` to ``RUN_KINDS``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

from memhil.core.errors import ConfigError
from memhil.store.run_records import RunRecord

__all__ = [
    "RUN_KINDS",
    "ExperimentRunKind",
    "ProtocolRunKind",
    "RunKind",
    "kind_of",
    "station_resource",
]


def station_resource(name: str) -> str:
    """The Ray custom resource that stands for station ``name`` (capacity 1: one trial at
    a time on it). A cluster node wired to the station offers it:
    ``ray start ... --resources='{"station:NAME": 1}'``."""
    return f"station:{name}"


class RunKind(Protocol):
    """What a sweep asks of one kind of run file (module docstring)."""

    name: ClassVar[str]
    #: The dotted key a sweep's ``seeds`` set when the sweep file names none.
    seed_key: ClassVar[str]

    def matches(self, data: Mapping[str, Any]) -> bool: ...

    def normalize(self, data: Mapping[str, Any]) -> dict: ...

    def load(self, data: Mapping[str, Any], path: Path) -> Any: ...

    def preflight(self, obj: Any) -> None: ...

    def station(self, obj: Any) -> str | None: ...

    def run(self, obj: Any, db: Path) -> int: ...

    def final_metrics(self, record: RunRecord) -> dict[str, float]: ...


#: Keys that name one cell of a protocol's records (the others name a step of it).
_CELL_KEYS = ("die_col", "die_row", "subsite", "tile", "row", "col")


def _spelled_out(data: Mapping[str, Any]) -> dict:
    """``data`` with ``backend: sim`` spelled ``{sim: {}}``, so a sweep reaches
    ``backend.sim.<key>``."""
    out = copy.deepcopy(dict(data))
    if out.get("backend") == "sim":
        out["backend"] = {"sim": {}}
    return out


def _station(backend_cfg: Any) -> str | None:
    """The station resource of a ``{station: file}`` backend; None for the simulator or
    a mock lab of the run's own."""
    if isinstance(backend_cfg, Mapping) and "station" in backend_cfg:
        from memhil.instruments.station import load_station_config

        return station_resource(load_station_config(backend_cfg["station"]).name)
    return None


class ProtocolRunKind:
    """Protocol files (``memhil.runs.protocol_file``), run by ``run_protocol_file``."""

    name: ClassVar[str] = "protocol"
    seed_key: ClassVar[str] = "backend.sim.seed"

    def matches(self, data: Mapping[str, Any]) -> bool:
        return "protocol" in data

    def normalize(self, data: Mapping[str, Any]) -> dict:
        return _spelled_out(data)

    def load(self, data: Mapping[str, Any], path: Path) -> Any:
        from memhil.runs.protocol_file import protocol_file_from_mapping

        return protocol_file_from_mapping(data, path)

    def preflight(self, obj: Any) -> None:
        from memhil.runs.protocol_run import preflight_offline

        if obj.backend is None:
            raise ConfigError("backend", "a swept protocol file names its backend", str(obj.path))
        preflight_offline(obj)

    def station(self, obj: Any) -> str | None:
        return _station(obj.backend)

    def run(self, obj: Any, db: Path) -> int:
        from memhil.runs.protocol_run import run_protocol_file

        return run_protocol_file(obj, db=db, progress=False)

    def final_metrics(self, record: RunRecord) -> dict[str, float]:
        """For each value column ``c``: ``c``, the mean over cells of each cell's last
        recorded value, and ``c_cell_sd``, their standard deviation (device-to-device
        spread); where no key names a cell, the run's last point."""
        df = record.points
        values = [v for v in record.values if v in df and v != "open_circuit"]
        if df.empty or not values:
            return {}
        cells = [k for k in _CELL_KEYS if k in record.keys]
        last = df.groupby(cells, sort=False).tail(1) if cells else df.tail(1)
        out: dict[str, float] = {}
        for v in values:
            col = last[v].astype(float)
            out[v] = float(col.mean())
            if cells:
                out[f"{v}_cell_sd"] = float(col.std(ddof=0))
        return out


class ExperimentRunKind:
    """Experiment files (``memhil.runs.experiment_file``: ``algorithm:``), run by
    ``run_experiment_file``; a seed sets ``train.seed``."""

    name: ClassVar[str] = "experiment"
    seed_key: ClassVar[str] = "train.seed"

    def matches(self, data: Mapping[str, Any]) -> bool:
        from memhil.runs.experiment_file import is_experiment_file

        return is_experiment_file(data)

    def normalize(self, data: Mapping[str, Any]) -> dict:
        return _spelled_out(data)

    def load(self, data: Mapping[str, Any], path: Path) -> Any:
        from memhil.runs.experiment_file import experiment_file_from_mapping

        return experiment_file_from_mapping(data, path)

    def preflight(self, obj: Any) -> None:
        from memhil.runs.experiment_run import preflight_offline

        if obj.backend is None:
            raise ConfigError("backend", "a swept experiment file names its backend", str(obj.path))
        preflight_offline(obj)

    def station(self, obj: Any) -> str | None:
        return _station(obj.backend)

    def run(self, obj: Any, db: Path) -> int:
        from memhil.runs.experiment_run import run_experiment_file

        return run_experiment_file(obj, db=db, progress=False)

    def final_metrics(self, record: RunRecord) -> dict[str, float]:
        """The metrics evaluated after deployment: on the backend (``accuracy`` ...) and
        in float (``accuracy_float`` ...), and the pulse tallies at the end of deployment
        (``set_pulses``, ``reset_pulses``, ``pulse_energy_j``)."""
        df = record.points
        if df.empty or "phase" not in df:
            return {}
        out: dict[str, float] = {}
        for phase, suffix in (("backend", ""), ("float", "_float")):
            sel = df[df["phase"] == phase]
            out.update({f"{m}{suffix}": float(v) for m, v in zip(sel["metric"], sel["value"])})
        deploy = df[(df["phase"] == "deploy") & (df["step"] == -1)]
        tally = ("set_pulses", "reset_pulses", "pulse_energy_j")
        out.update({m: float(v) for m, v in zip(deploy["metric"], deploy["value"]) if m in tally})
        return out


RUN_KINDS: dict[str, RunKind] = {k.name: k for k in (ProtocolRunKind(), ExperimentRunKind())}


def kind_of(data: Mapping[str, Any], path: Path) -> RunKind:
    """The kind of run file ``data`` (the content of ``path``) is."""
    for kind in RUN_KINDS.values():
        if kind.matches(data):
            return kind
    raise ConfigError(
        "<root>",
        "not a run file a sweep can use: expected a protocol file (protocol:) or an "
        "experiment file (algorithm:)",
        str(path),
    )
