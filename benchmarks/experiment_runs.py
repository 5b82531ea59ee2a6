"""The benchmarks' door to the experiment runner: ``--backend`` and ``--db`` options, and
one call that runs an experiment configuration (the mapping an experiment file holds)
through ``memhil.runs.experiment_run`` into a run store and returns its final metrics, so
a benchmark row is reproducible from the stored run (``memhil runs show ID --db DB``)."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from memhil.core.errors import ConfigError, LimitError
from memhil.runs.experiment_run import run_experiment_file
from memhil.store import RunStore

BACKEND_HELP = (
    "where the experiment rows run: 'sim' (the simulator with defaults), "
    "'mock_lab=STATION.yaml' (the mock lab serving that station) or 'station=BENCH.yaml' "
    "(a bench); default: the benchmark's own simulators"
)


def add_run_options(ap: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--db`` on a benchmark's command line."""
    ap.add_argument("--backend", default=None, type=parse_backend, help=BACKEND_HELP)
    ap.add_argument(
        "--db",
        default=None,
        help="run store (SQLite) that keeps every experiment row as a run "
        "(default: a temporary one, discarded)",
    )


def parse_backend(text: str) -> Any:
    """``sim``, ``mock_lab=PATH`` or ``station=PATH`` as an experiment file's ``backend:``."""
    if text == "sim":
        return "sim"
    kind, sep, path = text.partition("=")
    if not sep or kind not in ("mock_lab", "station") or not path:
        raise argparse.ArgumentTypeError(
            f"--backend {text!r}: expected sim, mock_lab=STATION.yaml or station=BENCH.yaml"
        )
    return {kind: str(Path(path).resolve())}


def backend_label(backend: Any) -> str:
    """A short name of a backend entry for a printed table."""
    if backend == "sim":
        return "sim"
    if isinstance(backend, Mapping) and "sim" in backend:
        device = (backend["sim"] or {}).get("device", "pcm")
        return f"sim {device.get('model') if isinstance(device, Mapping) else device}"
    if isinstance(backend, Mapping):
        kind = next(iter(backend))
        return f"{kind} {Path(str(backend[kind])).name}"
    return str(backend)


def run_experiment(
    spec: Mapping[str, Any], *, db: str | Path | None = None, name: str = "benchmark"
) -> tuple[int, dict[str, dict[str, float]]]:
    """Run ``spec`` (an experiment file's mapping, ``backend:`` included) into the run
    store ``db`` (a temporary one when None); returns the run id and the final metrics by
    phase (``backend``, ``float``, ``deploy``)."""
    with tempfile.TemporaryDirectory(prefix="memhil-bench-") as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(yaml.safe_dump(dict(spec), sort_keys=False))
        store_path = Path(db) if db is not None else Path(tmp) / "runs.db"
        run_id = run_experiment_file(path, db=store_path, progress=False)
        with RunStore(store_path) as store:
            df = store.load(run_id)
    out: dict[str, dict[str, float]] = {}
    for phase in ("backend", "float", "deploy"):
        sel = df[df["phase"] == phase]
        out[phase] = {str(k): float(v) for k, v in zip(sel["metric"], sel["value"])}
    return run_id, out


EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "experiments"


def run_example(
    example: str,
    *,
    backend: Any = None,
    db: str | Path | None = None,
    **sections: Mapping[str, Any],
) -> tuple[int | None, dict[str, dict[str, float]], str]:
    """Run the shipped ``examples/experiments/<example>.yaml`` (its ``backend:`` replaced by
    ``backend`` when given, each of ``sections`` merged into its section) through the
    runner into ``db``; returns the run id, the final metrics by phase and one printed line
    (headline on the backend and in float, pulses, energy, the run id). A file the
    pre-flight refuses on that backend (too small a chip, pulses beyond its limits) gives
    run id None and the refusal as the line."""
    spec = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())
    for key, value in sections.items():
        spec[key] = {**(spec.get(key) or {}), **value}
    if backend is not None:
        spec["backend"] = backend
    try:
        run_id, m = run_experiment(spec, db=db, name=example)
    except (ConfigError, LimitError) as exc:  # the pre-flight's refusal: one line, no run
        label = backend_label(spec["backend"])
        return (
            None,
            {},
            f"{spec['algorithm']} experiment ({example}.yaml) on {label}: refused before any pulse: {exc}",
        )
    on_chip, in_float, dep = m["backend"], m["float"], m["deploy"]
    head = "accuracy" if "accuracy" in on_chip else next(iter(on_chip), "")
    line = (
        f"{spec['algorithm']} experiment ({example}.yaml) on {backend_label(spec['backend'])}: "
        f"{head} {on_chip.get(head, float('nan')):.3f}"
        + (" [collapsed]" if on_chip.get("collapsed") else "")  # one class >= 90 % of predictions
        + " on the backend, "
        f"{in_float.get(head, float('nan')):.3f} in float; "
        f"{int(dep.get('set_pulses', 0))} SET / {int(dep.get('reset_pulses', 0))} RESET pulses, "
        f"{dep.get('pulse_energy_j', 0.0):.3g} J (run {run_id}"
        f"{'' if db is None else f' in {db}'})"
    )
    return run_id, m, line
