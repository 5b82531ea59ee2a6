"""Run an experiment file into the run store: ``run_experiment_file(path, ...) -> run_id``.

The file format: ``memhil.runs.experiment_file``; the algorithm interface:
``memhil.algorithms.experiment``. The order of work is a protocol run's
(``memhil.runs.protocol_run``), with the same pieces: the file is parsed and validated
(ConfigError naming file and key), the experiment built and PRE-FLIGHTED on a dry backend
made from the configuration files alone (``offline_backend``: nothing is contacted, no
database opened), a resume checked against the interrupted run (same file content, same
station: ``check_resume_matches``' rules), then the backend opened, the experiment built
and pre-flighted on it, and only then the run created.

This runner owns what the algorithms do not: progress with ETA (tqdm bars for prepare,
each epoch, the epochs and deployment; none with ``progress=False``), the record, the
checkpoints and the safe state.

Record (one run in the store, long format): keys ``phase`` (``prepare``, ``step``,
``epoch``, ``deploy``, ``backend``, ``float``), ``epoch``, ``step`` and ``metric``, value
``value``. Epoch, prepare and deploy records carry the cumulative pulse tallies
(``set_pulses``, ``reset_pulses``, ``pulse_energy_j``, from ``Backend.tally``); the final
metrics are the ``backend`` and ``float`` phases. Conductance snapshots (``S``, per tile)
are stored as arrays ``g_s.tile<T>`` at each checkpoint (step = epochs done) and
``g_s.tile<T>.deployed`` after deployment (``RunStore.arrays``).

Checkpoints: every ``train.checkpoint_every`` epochs (and after prepare and the last
epoch) the records since the last checkpoint, the checkpoint (the experiment's
``state_dict``, torch's and numpy's global RNG states, the cumulative tallies and, on the
simulator, the device state with its random streams and clock) and the snapshot are ONE
SQLite transaction marking the unit done (``RunWriter.commit_unit``). ``resume`` restores
the last checkpoint into a freshly built experiment and continues: on the simulator the
resumed run is the uninterrupted one (same seed, same final metrics); on a bench or a mock
lab the chip keeps its physical state and the digital state resumes, and the interrupted
unit is listed in ``memhil_reapplied_units`` (its pulses may have been applied twice).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from memhil.algorithms.experiment import Experiment, Step, Work
from memhil.core.errors import ConfigError, LimitError
from memhil.protocols.runner import StopRequested
from memhil.runs.experiment_file import ExperimentFile, load_experiment_file, with_source
from memhil.runs.protocol_file import (
    META_FILE,
    offline_backend,
    plain,
)
from memhil.runs.protocol_run import first_difference
from memhil.runs.run_session import run_session

log = logging.getLogger(__name__)

__all__ = [
    "META_EXPERIMENT",
    "METRIC_KEYS",
    "preflight_offline",
    "run_experiment_file",
    "training_summary",
]

META_EXPERIMENT = "experiment_config"  # run metadata: the experiment file's content
METRIC_KEYS = ("phase", "epoch", "step", "metric")
_TALLY = ("set_pulses", "reset_pulses", "pulse_energy_j")


def _code_version() -> dict:
    """The installed memhil version and, in a git checkout, the commit (``+dirty`` when
    the work tree has changes): the code a run was made with."""
    from importlib import metadata

    import memhil

    out: dict[str, Any] = {}
    try:
        out["memhil"] = metadata.version("memhil")
    except metadata.PackageNotFoundError:
        out["memhil"] = None
    root = Path(memhil.__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if rev.returncode == 0:
            dirty = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            out["git_commit"] = rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass  # no git: the package version is the code version
    return out


def _resolved(ef: ExperimentFile) -> dict:
    """The file's content with every default filled in (so spelling out a default is no
    change to a resumed run), as JSON data."""
    return json.loads(
        json.dumps(
            plain(
                {
                    "algorithm": ef.algorithm,
                    "dataset": ef.dataset,
                    "model": dataclasses.asdict(ef.config.model),
                    "train": dataclasses.asdict(ef.config.train),
                    "deploy": dataclasses.asdict(ef.config.deploy),
                }
            ),
            default=str,
        )
    )


def _check_resume(md: Mapping[str, Any], ef: ExperimentFile, identity: dict, run_id: int) -> None:
    """Refuse to resume run ``run_id`` with a changed experiment or station: ConfigError
    naming the file and the first differing key."""
    src = str(ef.path)
    old = (md.get(META_EXPERIMENT) or {}).get("resolved")
    if old is None:
        raise ConfigError("algorithm", f"run {run_id} is not an experiment run: cannot resume", src)
    new = _resolved(ef)
    key = first_difference(old, new)
    if key is not None:
        raise ConfigError(
            key,
            f"differs from the interrupted run {run_id}: cannot resume a changed experiment",
            src,
        )
    key = first_difference(
        md.get("station_identity"), json.loads(json.dumps(plain(identity), default=str))
    )
    if key is not None:
        raise ConfigError(
            f"backend.{key}",
            f"the station differs from the one of the interrupted run {run_id}: cannot resume",
            src,
        )


def _build(ef: ExperimentFile, backend: Any) -> Experiment:
    """The experiment on ``backend``, seeded and pre-flighted; errors name the file."""
    src = str(ef.path)
    torch.manual_seed(ef.config.train.seed)
    np.random.seed(ef.config.train.seed % 2**32)
    try:
        exp = ef.experiment(ef.config, ef.data, backend)
        exp.preflight()
    except ConfigError as exc:
        raise with_source(exc, src) from None
    except LimitError as exc:
        if exc.param is not None and src in exc.param:
            raise
        raise exc.naming(f"{src}: {exc.param or exc.field or 'request'}") from None
    return exp


class _Bars:
    """Progress with ETA: an epochs bar and a bar per phase (tqdm; silent when quiet)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def drive(self, work: Work, desc: str, on_step: Callable[[Step], None]) -> dict[str, float]:
        bar = None
        try:
            while True:
                try:
                    step = next(work)
                except StopIteration as stop:
                    return dict(stop.value or {})
                if bar is None:
                    bar = tqdm(total=step.total, desc=desc, disable=not self.enabled, leave=False)
                bar.update(1)
                if step.metrics:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in step.metrics.items()}, refresh=False)
                on_step(step)
        finally:
            work.close()
            if bar is not None:
                bar.close()


class _Recorder:
    """Points since the last checkpoint, and the checkpoint transaction."""

    def __init__(self, writer: Any, backend: Any, exp: Experiment, tally0: Mapping[str, float]):
        self.writer, self.backend, self.exp = writer, backend, exp
        self.pending: list[dict] = []
        self.tally0 = dict(tally0)  # pulses counted before this process (resume)

    def tally(self) -> dict[str, float]:
        t = self.backend.tally
        return {
            "set_pulses": self.tally0.get("set_pulses", 0) + t.set_pulses,
            "reset_pulses": self.tally0.get("reset_pulses", 0) + t.reset_pulses,
            "pulse_energy_j": self.tally0.get("pulse_energy_j", 0.0) + t.energy_j,
        }

    def add(self, phase: str, epoch: int, step: int, metrics: Mapping[str, float]) -> None:
        for k, v in metrics.items():
            self.pending.append(
                {"phase": phase, "epoch": epoch, "step": step, "metric": str(k), "value": float(v)}
            )

    def snapshot(self) -> list[tuple[int, np.ndarray]]:
        g = self.backend.read_conductance().detach().cpu().double().numpy()
        tiles = self.exp.snapshot_tiles()
        return [(t, g[t]) for t in (range(g.shape[0]) if tiles is None else tiles)]

    def commit(self, unit: str, step: int, state: dict | None, deployed: bool = False) -> None:
        """Store the pending points, a conductance snapshot and (unless None) the
        checkpoint ``state``, and mark ``unit`` done: one transaction."""
        snap = self.snapshot()  # before the state is taken: it includes the reads' effects
        payload = None
        if state is not None:
            state["rng"] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
            state["tally"] = self.tally()
            sd = getattr(self.backend, "state_dict", None)
            state["device"] = sd() if callable(sd) else None
            buf = io.BytesIO()
            torch.save(state, buf)
            payload = buf.getvalue()
        suffix = ".deployed" if deployed else ""
        with self.writer.transaction():
            self.writer.commit_unit(unit, self.pending)
            for t, g in snap:
                self.writer.add_array(f"g_s.tile{t}{suffix}", step, g)
            if payload is not None:
                self.writer.save_checkpoint(step, payload)
        self.pending = []


def _restore(payload: bytes, exp: Experiment, backend: Any) -> tuple[int, dict]:
    """Load a checkpoint into a fresh experiment (and the simulator's device state);
    returns (epochs done, cumulative tallies)."""
    # the run store is the user's own file written by this runner: a full unpickle (numpy
    # RNG state, algorithm dataclasses) is what torch.save stored there
    state = torch.load(io.BytesIO(payload), weights_only=False)
    exp.load_state(state["experiment"])
    device = state.get("device")
    load = getattr(backend, "load_state_dict", None)
    if device is not None and callable(load):
        load(device)
    elif device is not None:
        log.warning(
            "the checkpoint holds a simulator state, this backend takes none: the chip keeps its own"
        )
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    return int(state["epochs_done"]), dict(state["tally"])


def preflight_offline(ef: ExperimentFile, backend_cfg: Any = None) -> None:
    """Build and pre-flight ``ef`` on a dry stand-in of ``backend_cfg`` (default: the
    file's own backend) made from the configuration files alone: nothing is contacted,
    no database opened; errors name the file and key."""
    backend_cfg = ef.backend if backend_cfg is None else backend_cfg
    if backend_cfg is None:
        raise ConfigError("backend", "no backend to pre-flight on", str(ef.path))
    _build(ef, offline_backend(backend_cfg, str(ef.path)))


def run_experiment_file(
    experiment_path: str | Path | ExperimentFile,
    *,
    backend: Any = None,
    db: str | Path = "memhil.db",
    resume: bool | int = False,
    progress: bool = True,
    visa_library: str | None = None,
) -> int:
    """Run an experiment file; returns the run id. Arguments as ``run_protocol_file``:
    ``backend`` a configuration (paths relative to the working directory) or an open
    Backend (the caller closes it), default the file's ``backend:``; ``resume`` True for
    the most recent unfinished run of this file, or a run id."""
    ef = (
        experiment_path
        if isinstance(experiment_path, ExperimentFile)
        else load_experiment_file(experiment_path)
    )
    with run_session(
        ef.path,
        ef.backend,
        backend=backend,
        db=db,
        resume=resume,
        visa_library=visa_library,
        preflight_offline=lambda cfg: preflight_offline(ef, cfg),
        check_resume=lambda md, identity, cfg, rid: _check_resume(md, ef, identity, rid),
    ) as session:
        be = session.backend
        exp = _build(ef, be)
        if session.root_id is None:
            md = {
                META_FILE: str(ef.path),
                META_EXPERIMENT: {**ef.as_config(), "resolved": _resolved(ef)},
                "memhil_kind": "experiment",
                "algorithm": ef.algorithm,
                "headline": ef.experiment.headline,
                "dataset": ef.data_identity,
                "seeds": {"train": ef.config.train.seed},
                "code_version": _code_version(),
                **session.provenance(),
            }
            writer = session.store.new_run(
                ef.name,
                keys=list(METRIC_KEYS),
                values=["value"],
                metadata=md,
                key_types={"phase": str, "epoch": int, "step": int, "metric": str},
            )
            checkpoint = None
        else:
            writer = session.store.open_run(session.root_id)
            checkpoint = session.store.last_checkpoint(session.root_id)
        session.attach(writer)
        try:
            _train(ef, exp, be, writer, checkpoint, _Bars(progress), session.stop_requested)
        finally:
            if not session.own_backend:
                be.safe_state()  # a borrowed backend is left in its confirmed safe state
        return int(writer.run_id)


def _train(
    ef: ExperimentFile,
    exp: Experiment,
    be: Any,
    writer: Any,
    checkpoint: tuple[int, bytes] | None,
    bars: _Bars,
    stop_requested: Callable[[], bool],
) -> None:
    """Prepare (fresh runs), train from the last checkpoint, deploy, evaluate; record.
    A stop request is honoured after the epoch in flight: its checkpoint is committed and
    ``StopRequested`` raised, so ``--resume`` continues from the next epoch."""
    epochs = ef.config.train.epochs
    every = ef.config.train.checkpoint_every
    tally0: dict = {}
    start = 0
    if checkpoint is not None:
        start, tally0 = _restore(checkpoint[1], exp, be)
        log.info("%s: resumed from the checkpoint after epoch %d", ef.path, start)
    rec = _Recorder(writer, be, exp, tally0)

    def state(done: int) -> dict:
        return {"epochs_done": done, "experiment": exp.state_dict()}

    if checkpoint is None:
        writer.start_unit(json.dumps(["prepare"]))
        metrics = bars.drive(exp.prepare(), "prepare", lambda s: None)
        rec.add("prepare", -1, -1, {**metrics, **rec.tally()})
        rec.commit(json.dumps(["prepare"]), 0, state(0))
    bar = tqdm(total=epochs, initial=start, desc="train", unit="epoch", disable=not bars.enabled)
    try:
        unit_start = start
        for epoch in range(start, epochs):
            if epoch == unit_start:
                writer.start_unit(json.dumps(["train", unit_start]))

            def on_step(s: Step, epoch: int = epoch) -> None:
                rec.add("step", epoch, s.index, s.metrics)

            metrics = bars.drive(exp.train_epoch(epoch), f"epoch {epoch + 1}/{epochs}", on_step)
            rec.add("epoch", epoch, -1, {**metrics, **rec.tally()})
            if metrics:
                bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
            bar.update(1)
            done = epoch + 1
            stop = done < epochs and stop_requested()
            if done % every == 0 or done == epochs or stop:
                rec.commit(json.dumps(["train", unit_start]), done, state(done))
                unit_start = done
            if stop:
                raise StopRequested(f"stop requested after epoch {done} of {epochs}")
    finally:
        bar.close()
    writer.start_unit(json.dumps(["deploy"]))
    metrics = bars.drive(
        exp.deploy(), "deploy", lambda s: rec.add("deploy", epochs, s.index, s.metrics)
    )
    rec.add("deploy", epochs, -1, {**metrics, **rec.tally()})
    rec.add("backend", epochs, -1, exp.evaluate())
    rec.add("float", epochs, -1, exp.evaluate_float())
    rec.commit(json.dumps(["deploy"]), epochs, None, deployed=True)


#: metrics.PredictionSummary.metrics(): shown as a flag beside the headline, not as numbers
_COLLAPSE = ("collapsed", "top_class_fraction", "majority_fraction", "classes_never_predicted")


def training_summary(df: Any, md: Mapping[str, Any]) -> list[str]:
    """A training run in a few lines with units: algorithm, dataset, epochs, the headline
    metric on the backend and in float, the learning curve's ends, pulses and energy."""
    head = str(md.get("headline") or "accuracy")
    cfg = md.get(META_EXPERIMENT) or {}
    ds = md.get("dataset") or {}

    def final(phase: str) -> dict[str, float]:
        sel = df[df["phase"] == phase]
        return dict(zip(sel["metric"], sel["value"]))

    def fmt(name: str, v: float) -> str:
        if name == "accuracy" or name.endswith("_accuracy"):
            return f"{100 * v:.1f} %"
        from memhil.store.columns import unit_of

        u = unit_of(name)
        return f"{v:.4g}{' ' + u if u else ''}"

    ep = df[df["phase"] == "epoch"]
    n_epochs = int(ep["epoch"].max()) + 1 if len(ep) else 0
    lines = [
        f"  algorithm {cfg.get('algorithm', md.get('algorithm', '-'))} on dataset "
        f"{ds.get('name', '-')} (sha256 {str(ds.get('sha256', ''))[:12]}), "
        f"{n_epochs} epoch(s), seed {(md.get('seeds') or {}).get('train', '-')}"
    ]
    b, f = final("backend"), final("float")
    if b or f:
        parts = [f"{head} {fmt(head, b[head])} on the backend" if head in b else ""]
        if b.get("collapsed"):  # a constant predictor's accuracy never stands unflagged
            parts[0] += (
                f" [COLLAPSED: one class takes {100 * b['top_class_fraction']:.0f} % of the test "
                f"predictions; a constant predictor scores {100 * b['majority_fraction']:.1f} %]"
            )
        elif b.get("classes_never_predicted", 0) >= 1:  # a partial collapse, flagged too
            n = int(b["classes_never_predicted"])
            parts[0] += f" [PARTIAL COLLAPSE: {n} class{'es' if n > 1 else ''} never predicted]"
        if head in f:
            parts.append(f"{fmt(head, f[head])} in float")
        others = [f"{k} {fmt(k, v)}" for k, v in b.items() if k != head and k not in _COLLAPSE]
        lines.append(
            "  final     "
            + ", ".join(p for p in parts if p)
            + ("; " + ", ".join(others) if others else "")
        )
    curve = ep[~ep["metric"].isin(_TALLY)]
    for metric in dict.fromkeys(curve["metric"]):
        vals = curve[curve["metric"] == metric].sort_values("epoch")["value"].tolist()
        lines.append(
            f"  {metric:<9} {fmt(metric, vals[0])} -> {fmt(metric, vals[-1])} over {len(vals)} epoch(s)"
        )
    t = final("deploy") or {}
    if not t:
        last = ep[ep["metric"].isin(_TALLY)]
        t = dict(zip(last["metric"], last["value"]))
    if "set_pulses" in t:
        lines.append(
            f"  pulses    {int(t['set_pulses'])} SET, {int(t['reset_pulses'])} RESET, "
            f"worst-case energy {t['pulse_energy_j']:.3g} J"
        )
    return lines
