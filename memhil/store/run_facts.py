"""Facts about a run read from its metadata alone: which protocol it ran, where it was
measured, what kind of run it is. Shared by ``memhil runs`` and the monitor, which reads
the database without QCoDeS."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["KINDS", "measured_on", "protocol_of", "run_kind"]

#: The kinds of run in a store: a protocol file, an experiment (training) file, a sweep.
KINDS = ("protocol", "experiment", "sweep")


def protocol_of(md: Mapping[str, Any]) -> str:
    """The protocol of a run: a protocol file's ``protocol``, else a ``protocol`` entry;
    for a training run its algorithm."""
    if md.get("memhil_kind") == "experiment":
        return str(md.get("algorithm", "-"))
    cfg = md.get("protocol_config")
    if isinstance(cfg, Mapping) and cfg.get("protocol"):
        return str(cfg["protocol"])
    p = md.get("protocol")
    if isinstance(p, Mapping):
        return str(p.get("name", "-"))
    return str(p) if p else "-"


def measured_on(md: Mapping[str, Any]) -> str:
    """Where the run was measured: sim, mock_lab or station (``-`` when unrecorded)."""
    ident = md.get("station_identity")
    if isinstance(ident, Mapping) and ident.get("kind"):  # an open backend gives its class
        kind = str(ident["kind"])
        return "sim" if kind == "SimBackend" else kind
    cfg = md.get("backend_config")
    if cfg == "sim":
        return "sim"
    if isinstance(cfg, Mapping):
        return next((k for k in ("sim", "mock_lab", "station") if k in cfg), "-")
    return "-"


def run_kind(md: Mapping[str, Any]) -> str:
    """``protocol``, ``experiment`` or ``sweep``: the metadata entry ``memhil_kind`` when a
    writer set it, else told by the configuration the run records."""
    kind = md.get("memhil_kind")
    if kind in KINDS:
        return str(kind)
    if any(k in md for k in ("sweep", "sweep_config")):
        return "sweep"
    if any(k in md for k in ("experiment", "experiment_config", "algorithm")):
        return "experiment"
    return "protocol"
