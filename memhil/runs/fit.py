"""Device-model fits from runs in the store: the pulse responses of a stored
``pulse_train`` run (``pulse_responses_from_run``, ``pulse_sequence_from_run``) and
``fit_run(db, run_id, model=...)``, what ``memhil fit`` does. Glue above the protocols
(what a ``pulse_train`` run applied) and the calibration fits, hence in ``runs``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from memhil.core.errors import ConfigError
from memhil.runs.protocol_file import META_CONFIG

__all__ = [
    "pulse_responses_from_run",
    "pulse_sequence_from_run",
    "forming_intervals_from_run",
    "fit_run",
    "FIT_MODELS",
]


def pulse_responses_from_run(store: Any, run_id: int):
    """The mean LTP (start + ltp pulses) and LTD (last LTP read + ltd pulses) curves of a
    stored ``pulse_train`` run, as ``PulseResponse``s, and the number of cells averaged."""
    import torch

    from memhil.calibration.pulse_response import PulseResponse

    root = store.chain(run_id)[0]
    md = store.metadata(root)
    cfg = md.get(META_CONFIG) or {}
    if cfg.get("protocol") != "pulse_train":
        raise ConfigError(
            "run",
            f"run {run_id} is not a pulse_train run (protocol {cfg.get('protocol')!r})",
            str(store.db_path) if hasattr(store, "db_path") else None,
        )
    from memhil.core.config import from_mapping
    from memhil.protocols.library.pulse_train import PulseTrainParams

    p = from_mapping(PulseTrainParams, cfg.get("params") or {})
    if p.several:
        raise ConfigError(
            "run",
            f"run {run_id} pulses at several amplitudes: fit it with "
            f"the vteam model (--model vteam)",
        )
    df = store.load(run_id)
    cell_cols = [c for c in ("tile", "row", "col") if c in df.columns]
    n_cells = int(df.groupby(cell_cols).ngroups) if cell_cols else 1

    def stats(phase: str):
        sub = df[df["phase"] == phase].groupby("pulse")["g"]
        return sub.mean(), sub.std(ddof=1).fillna(0.0)

    m0, s0 = stats("start")
    mu, su = stats("ltp")
    md_, sd = stats("ltd")
    if len(mu) != p.n_pulses or len(md_) != p.n_pulses or len(m0) != 1:
        raise ValueError(
            f"run {run_id} is incomplete: {len(mu)} LTP and {len(md_)} LTD pulses of {p.n_pulses}"
        )
    up_m = [float(m0.iloc[0])] + [float(mu[k]) for k in range(1, p.n_pulses + 1)]
    up_s = [float(s0.iloc[0])] + [float(su[k]) for k in range(1, p.n_pulses + 1)]
    dn_m = [up_m[-1]] + [float(md_[k]) for k in range(1, p.n_pulses + 1)]
    dn_s = [up_s[-1]] + [float(sd[k]) for k in range(1, p.n_pulses + 1)]
    t = lambda x: torch.tensor(x, dtype=torch.float64)
    assert not p.several  # refused above: one amplitude per direction
    up = PulseResponse(float(cast(float, p.v_ltp)), p.width_s, t(up_m), t(up_s))
    down = PulseResponse(float(cast(float, p.v_ltd)), p.width_s, t(dn_m), t(dn_s))
    return up, down, n_cells


def pulse_sequence_from_run(store: Any, run_id: int):
    """The mean (and across-cell std) conductance of a stored ``pulse_train`` run after
    every pulse, in the order applied, with each pulse's amplitude and width (from the run's
    protocol config; several amplitudes allowed), as a ``PulseSequence``."""
    import numpy as np

    from memhil.calibration.fit.vteam import PulseSequence
    from memhil.core.config import from_mapping
    from memhil.protocols.library.pulse_train import PulseTrainParams, pulse_schedule

    root = store.chain(run_id)[0]
    cfg = store.metadata(root).get(META_CONFIG) or {}
    if cfg.get("protocol") != "pulse_train":
        raise ConfigError(
            "run", f"run {run_id} is not a pulse_train run (protocol {cfg.get('protocol')!r})"
        )
    p = from_mapping(PulseTrainParams, cfg.get("params") or {})
    schedule = pulse_schedule(p)
    df = store.load(run_id)
    by_n = df.groupby("n")["g"]
    mean, std = by_n.mean(), by_n.std(ddof=1).fillna(0.0)
    if list(mean.index) != list(range(len(schedule) + 1)):
        raise ValueError(f"run {run_id} is incomplete: {len(mean)} reads of {len(schedule) + 1}")
    cell_cols = [c for c in ("tile", "row", "col") if c in df.columns]
    n_cells = int(df.groupby(cell_cols).ngroups) if cell_cols else 1
    return PulseSequence(
        np.array([a for a, _ in schedule]),
        np.array([w for _, w in schedule]),
        mean.to_numpy(float),
        std.to_numpy(float),
        n_cells,
    )


def _protocol_of(store: Any, run_id: int) -> str | None:
    return (store.metadata(store.chain(run_id)[0]).get(META_CONFIG) or {}).get("protocol")


def forming_intervals_from_run(store: Any, run_id: int):
    """Per cell of a stored ``forming`` ramp: the interval (v_low, v_high] holding its
    breakdown voltage (v_high = inf for a cell never formed, v_low = -inf for one formed
    by the first step) and the reads right after forming of the cells below their
    compliance cap. Cells formed before the ramp (the pre-read) have no records."""
    import numpy as np

    if _protocol_of(store, run_id) != "forming":
        raise ConfigError(
            "run", f"run {run_id} is not a forming run (protocol {_protocol_of(store, run_id)!r})"
        )
    df = store.load(run_id).sort_values("step")
    cell_cols = [c for c in ("tile", "row", "col") if c in df.columns]
    lo, hi, g_formed = [], [], []
    for _, cell in df.groupby(cell_cols):  # a loop over a ramp's records, not a hot path
        formed = cell[cell["formed"].astype(bool)]
        if formed.empty:
            lo.append(float(cell["v_pulse"].max()))
            hi.append(math.inf)
            continue
        first = formed.iloc[0]
        before = cell[cell["step"] < first["step"]]
        lo.append(float(before["v_pulse"].max()) if not before.empty else -math.inf)
        hi.append(float(first["v_pulse"]))
        cap_s = float(first["compliance_a"]) / abs(float(first["v_pulse"]))
        if float(first["g"]) < 0.95 * cap_s:
            g_formed.append(float(first["g"]))
    return np.array(lo), np.array(hi), np.array(g_formed)


def _fit_pcm(store: Any, ids: list[int], where: str):
    """Drift from ``retention`` runs, read noise from ``read_noise`` runs (either or both)."""

    from memhil.calibration.fit.neurosim import FitResult
    from memhil.calibration.fit.pcm import fit_drift
    from memhil.runs.twin import read_noise_from_run

    params: dict[str, Any] = {}
    stderr: dict[str, float] = {}
    n_points, rms = 0, float("nan")
    for rid in ids:
        protocol = _protocol_of(store, rid)
        if protocol == "retention":
            from memhil.runs.twin import retention_reads

            fit = fit_drift(*retention_reads(store, rid))
            params.update(fit.params)
            stderr.update(fit.stderr)
            n_points, rms = n_points + fit.n_points, fit.residual_rms
        elif protocol == "read_noise":
            m3, c3 = read_noise_from_run(store, rid)
            params.update({"m3": m3, "c3_s": c3})
            n_points += int(len(store.load(rid)))
        else:
            raise ConfigError(
                "run",
                f"run {rid} ({protocol!r}): the pcm fit takes retention and read_noise runs",
            )
    return FitResult("pcm", params, stderr, rms, n_points, source=where)


FIT_MODELS = ("neurosim", "vteam", "forming", "pcm")


def fit_run(
    db: str | Path,
    run_id: int | list[int],
    *,
    fixed: Mapping[str, Any] | None = None,
    model: str = "neurosim",
):
    """Fit a device model to stored run(s): ``neurosim`` (``fit_neurosim``, one pulse_train
    run with one LTP/LTD amplitude), ``vteam`` (``fit_vteam``, pulse_train runs, each with one
    or several amplitudes), ``forming`` (the breakdown-voltage distribution and formed
    conductance of a forming ramp) or ``pcm`` (drift from retention runs, read noise from
    read_noise runs)."""
    from memhil.store import RunStore

    ids = [int(run_id)] if isinstance(run_id, int) else [int(r) for r in run_id]
    where = f"{Path(db).resolve()} run {', '.join(map(str, ids))}"
    if model == "forming":
        from memhil.calibration.fit.forming import fit_breakdown

        if len(ids) != 1:
            raise ConfigError("run_id", f"the forming fit takes one run, got {ids}")
        with RunStore(db) as store:
            lo, hi, g = forming_intervals_from_run(store, ids[0])
        return fit_breakdown(lo, hi, g_formed_s=g, source=where + " (forming)")
    if model == "pcm":
        with RunStore(db) as store:
            return _fit_pcm(store, ids, where)
    where += " (pulse_train)"
    if model == "vteam":
        from memhil.calibration.fit.vteam import fit_vteam

        with RunStore(db) as store:
            seqs = [pulse_sequence_from_run(store, r) for r in ids]
        return fit_vteam(seqs, fixed=fixed, source=where)
    if model != "neurosim":
        raise ConfigError("model", f"unknown model {model!r} (fits: {list(FIT_MODELS)})")
    if len(ids) != 1:
        raise ConfigError("run_id", f"the neurosim fit takes one run, got {ids}")
    from memhil.calibration.fit.neurosim import fit_neurosim

    with RunStore(db) as store:
        up, down, n = pulse_responses_from_run(store, ids[0])
    return fit_neurosim(up, down, n_cells=n, fixed=fixed, source=where)
