"""Run a sweep: ``run_sweep(FILE, db=...) -> SweepOutcome``.

Order of work: the sweep file is loaded and every trial pre-flighted (``load_sweep_file``);
Ray is started or joined and checked to offer what the trials ask for; the sweep's own
run is created in the store (or, with ``resume``, reopened after checking that the file
still expands to the same trials); then one Ray task per trial still without a completed
run, with the trial's resources. Each task runs its trial into a scratch store and
returns its run as a record (``memhil.sweeps.trial``); this driver is the database's one
writer: it stores each trial's run, tagged ``sweep_trial`` (sweep id, trial, axis values,
seed, start and end time, host, error, final metrics), and appends the trial to the
sweep run's points (``trial``, ``run_id``, ``t_start_s``, ``t_end_s``, ``failed``).

A failed trial is stored as a failed run with its error and the sweep goes on; a driver
that dies loses only the trials in flight, and ``resume`` runs exactly the trials without
a completed run. Progress: trials done, running, failed and the ETA (tqdm).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from memhil.core.errors import ConfigError
from memhil.store.run_records import META_SWEEP, META_SWEEP_TRIAL, RunRecord
from memhil.sweeps.ray_cluster import RaySession, ray_session
from memhil.sweeps.sweep_file import SweepFile, Trial, load_sweep_file
from memhil.sweeps.trial import TrialResult, TrialSpec, TrialStarted, run_trial

log = logging.getLogger(__name__)

__all__ = ["SWEEP_VALUES", "SweepOutcome", "run_sweep"]

#: The sweep run's columns: one point per finished trial (key ``trial``).
SWEEP_VALUES = ["run_id", "t_start_s", "t_end_s", "failed"]


@dataclass
class SweepOutcome:
    """What one call of ``run_sweep`` did."""

    sweep_id: int
    n_trials: int
    where: str
    already_done: list[int] = field(default_factory=list)  # completed before (resume)
    completed: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # trial -> error line
    elapsed_s: float = 0.0
    write_s: float = 0.0  # driver time spent storing trial runs


def _check_resume(sweep: SweepFile, definition: dict, sweep_id: int) -> None:
    """Refuse to resume sweep ``sweep_id`` with a file that no longer expands to its
    trials (ConfigError naming the sweep file and the first difference)."""
    from memhil.runs.protocol_run import first_difference

    def normal(d: dict) -> dict:
        keep = {k: d.get(k) for k in ("base", "kind", "trials")}
        return json.loads(json.dumps(keep, default=str))

    key = first_difference(normal(definition), normal(sweep.definition()))
    if key is not None:
        raise ConfigError(
            "--resume",
            f"sweep {sweep_id} was run from a file that expands differently (first at "
            f"{key}): resume it with the same sweep and base files",
            str(sweep.path),
        )


def _empty_record(sweep: SweepFile, trial: Trial) -> RunRecord:
    """The run of a trial that failed before its own run was created: no points, the
    base file and the trial's content of it as metadata."""
    md = {"run_file": str(sweep.base), "run_config": sweep.trial_data(trial)}
    return RunRecord(sweep.name, [], [], None, md, pd.DataFrame(), "failed")


class _Driver:
    """Stores finished trials (the one writer) and keeps the progress line."""

    def __init__(self, sweep: SweepFile, store: Any, writer: Any, total: int, done: int, bar: bool):
        from tqdm.auto import tqdm

        self.sweep = sweep
        self.store = store
        self.writer = writer
        self.started: dict[int, float] = {}
        self.finished: set[int] = set()
        self.failed: dict[int, str] = {}
        self.completed: list[int] = []
        self.write_s = 0.0
        self.bar = tqdm(
            total=total,
            initial=done,
            desc=f"sweep {writer.root_run}",
            unit="trial",
            disable=not bar,
        )
        self._postfix()

    def _postfix(self) -> None:
        running = len(set(self.started) - self.finished)
        self.bar.set_postfix(running=running, failed=len(self.failed), refresh=True)

    def on_start(self, ev: TrialStarted) -> None:
        self.started[ev.index] = ev.t_start_s
        self._postfix()

    def on_result(self, trial: Trial, res: TrialResult) -> None:
        from memhil.store.run_records import write_run_record

        t0 = time.perf_counter()
        record = res.record or _empty_record(self.sweep, trial)
        status = record.status if res.error is None else "failed"
        metrics = self.sweep.kind.final_metrics(record) if status == "completed" else {}
        tag = {
            "sweep": self.writer.root_run,
            "trial": trial.index,
            "axes": trial.axes,
            "seed": trial.seed,
            "t_start_s": res.t_start_s,
            "t_end_s": res.t_end_s,
            "host": res.host,
            "error": res.error,
            "trace": res.trace,
            "metrics": metrics,
        }
        run_id = write_run_record(
            self.store,
            dataclasses.replace(record, status=status),
            name=f"{self.sweep.name}#{trial.index}",
            metadata={META_SWEEP_TRIAL: tag},
        )
        failed = status != "completed"
        self.writer.add(
            trial=trial.index,
            run_id=run_id,
            t_start_s=res.t_start_s,
            t_end_s=res.t_end_s,
            failed=float(failed),
        )
        self.write_s += time.perf_counter() - t0
        self.finished.add(trial.index)
        if failed:
            self.failed[trial.index] = res.error or f"run ended {status}"
            log.error(
                "sweep %d, %s failed: %s\n%s",
                self.writer.root_run,
                trial.label(),
                self.failed[trial.index],
                res.trace or "",
            )
        else:
            self.completed.append(trial.index)
        self.bar.update(1)
        self._postfix()

    def close(self) -> None:
        self.bar.close()


def _events_inline(specs: list[TrialSpec]) -> Iterator[TrialStarted | TrialResult]:
    for spec in specs:
        yield from run_trial(spec)


def _events_ray(
    specs: list[TrialSpec], sweep: SweepFile, trials: dict[int, Trial]
) -> Iterator[TrialStarted | TrialResult]:
    """One Ray task per trial (a generator task: it reports its start, then its result);
    events as they come. A task that dies (its worker crashed) is a failed result."""
    import ray

    remote = ray.remote(max_retries=0)(run_trial)
    gens: dict[Any, int] = {}  # ObjectRefGenerator -> trial
    for spec in specs:
        opts = sweep.resources.ray_options(trials[spec.index].station)
        gens[remote.options(**opts).remote(spec)] = spec.index
    started: dict[int, float] = {}
    pending: list[Any] = list(gens)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            gen: Any
            for gen in ready:
                index = gens[gen]
                try:
                    ref = next(gen)
                except StopIteration:
                    continue
                try:
                    ev = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the task or its worker died
                    now = time.time()
                    lines = str(exc).strip().splitlines() or [""]
                    line = f"{type(exc).__name__}: {lines[-1]}"
                    yield TrialResult(
                        index, None, line, str(exc), started.get(index, now), now, "-"
                    )
                    continue
                if isinstance(ev, TrialStarted):
                    started[index] = ev.t_start_s
                yield ev
                pending.append(gen)
    finally:
        for gen in pending:  # interrupted: stop what still runs or waits
            try:
                ray.cancel(gen, force=True)
            except Exception:  # already finished or gone: nothing to stop
                log.debug("cancelling a trial task", exc_info=True)


def run_sweep(
    sweep: SweepFile | str | Path,
    *,
    db: str | Path = "memhil.db",
    address: str | None = None,
    resume: int | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    executor: Literal["ray", "inline"] = "ray",
    on_ready: Any = None,
) -> SweepOutcome:
    """Run (or, with ``resume`` = a sweep id, continue) the sweep of ``sweep`` into the run
    store ``db``; see the module docstring. ``address``: join that Ray cluster instead of
    starting a local instance of ``num_cpus`` CPUs (default: this machine's).
    ``executor="inline"`` runs the trials one after the other in this process (no Ray).
    ``on_ready(sweep_id, where, n_todo)`` is called once the sweep run exists."""
    from memhil.store import RunStore
    from memhil.sweeps.results import completed_trials, sweep_definition

    t_begin = time.perf_counter()
    if not isinstance(sweep, SweepFile):
        sweep = load_sweep_file(sweep)
    done: set[int] = set()
    if resume is not None:
        if not Path(db).is_file():
            raise ConfigError("--resume", f"no run store {db}", str(sweep.path))
        with RunStore(db) as store:
            try:
                definition = sweep_definition(store, resume)
            except ConfigError as exc:
                raise ConfigError("--resume", exc.reason, str(sweep.path)) from None
            _check_resume(sweep, definition, resume)
            done = completed_trials(store, resume)
    todo = [t for t in sweep.trials if t.index not in done]
    if resume is not None and not todo:
        where = "nothing to run: every trial has a completed run"
        return SweepOutcome(resume, len(sweep.trials), where, already_done=sorted(done))
    trials = {t.index: t for t in sweep.trials}
    specs = [
        TrialSpec(t.index, sweep.kind.name, str(sweep.base), sweep.trial_data(t)) for t in todo
    ]
    needs: dict[str, float] = {}
    for t in todo:
        opts = sweep.resources.ray_options(t.station)
        for name, amount in [
            ("CPU", opts["num_cpus"]),
            ("GPU", opts["num_gpus"]),
            ("memory", opts.get("memory", 0.0)),
            *opts.get("resources", {}).items(),
        ]:
            if amount:
                needs[name] = max(needs.get(name, 0.0), float(amount))
    session_cm: Any
    if executor == "inline":
        from contextlib import nullcontext

        session_cm = nullcontext(RaySession("this process, one trial after the other", {}))
    else:
        session_cm = ray_session(
            address=address,
            num_cpus=num_cpus,
            stations=sweep.stations(),
            needs=needs,
            source=str(sweep.path),
        )
    with session_cm as session, RunStore(db) as store:
        if resume is None:
            writer = store.new_run(
                sweep.name,
                keys=["trial"],
                values=SWEEP_VALUES,
                metadata={META_SWEEP: sweep.definition()},
                key_types={"trial": int},
            )
        else:
            writer = store.open_run(resume)
        out = SweepOutcome(
            writer.root_run, len(sweep.trials), session.where, already_done=sorted(done)
        )
        if on_ready is not None:
            on_ready(out.sweep_id, session.where, len(todo))
        driver = _Driver(sweep, store, writer, len(sweep.trials), len(done), progress)
        status = "failed"
        try:
            events = (
                _events_inline(specs) if executor == "inline" else _events_ray(specs, sweep, trials)
            )
            for ev in events:
                if isinstance(ev, TrialStarted):
                    driver.on_start(ev)
                else:
                    driver.on_result(trials[ev.index], ev)
            all_done = len(done) + len(driver.completed) == len(sweep.trials)
            status = "completed" if all_done else "failed"
        except KeyboardInterrupt as exc:
            status = "interrupted"
            exc.memhil_sweep_id = out.sweep_id  # type: ignore[attr-defined]  # for --resume
            raise
        except BaseException as exc:
            exc.memhil_sweep_id = out.sweep_id  # type: ignore[attr-defined]  # for --resume
            raise
        finally:
            driver.close()
            writer.close(status)
            out.completed = sorted(driver.completed)
            out.failed = dict(sorted(driver.failed.items()))
            out.write_s = driver.write_s
            out.elapsed_s = time.perf_counter() - t_begin
    return out
