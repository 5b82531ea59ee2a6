"""Plots of a training run (the long-format record of ``memhil.runs.experiment_run``:
columns ``phase``, ``epoch``, ``step``, ``metric``, ``value``): learning curves, pulse
counts and conductance snapshots. Agg canvas, one PNG per call, as ``memhil.store.plots``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from memhil.store.plots import DPI, _save

__all__ = ["TALLY_METRICS", "plot_conductance", "plot_learning_curve", "plot_pulse_counts"]

#: Metrics the runner records with every epoch: cumulative pulse tallies, not learning.
TALLY_METRICS = ("set_pulses", "reset_pulses", "pulse_energy_j")


def _figure(n_rows: int = 1, n_cols: int = 1, height: float = 3.2) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(6.4 if n_cols == 1 else 3.6 * n_cols, height * n_rows), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False)).reshape(-1)
    return fig, axes


def _require(df: pd.DataFrame, phase: str) -> pd.DataFrame:
    if "phase" not in df.columns:
        raise KeyError("phase (not a training run)")
    sel = df[df["phase"] == phase]
    if sel.empty:
        raise ValueError(f"the run records no {phase!r} phase")
    return sel


def plot_learning_curve(df: pd.DataFrame, path: str | Path) -> Path:
    """Each per-epoch metric against the epoch (one panel per metric), with the final
    test value on the backend (o) and in float (x) half an epoch after the last where the
    run has them (``accuracy`` on the ``val_accuracy`` panel)."""
    ep = _require(df, "epoch")
    ep = ep[~ep["metric"].isin(TALLY_METRICS)]
    metrics = list(dict.fromkeys(ep["metric"]))
    if not metrics:
        raise ValueError("the run records no per-epoch metrics")
    fig, axes = _figure(len(metrics))
    for ax, m in zip(axes, metrics):
        s = ep[ep["metric"] == m].sort_values("epoch")
        ax.plot(s["epoch"] + 1, s["value"], "-o", ms=3, label="training")
        for phase, marker in (("backend", "o"), ("float", "x")):
            # a validation curve (val_accuracy) ends with the final test value (accuracy)
            final = m[4:] if m.startswith("val_") and m[4:] not in metrics else m
            fin = df[(df["phase"] == phase) & (df["metric"] == final)]
            if len(fin):
                x = int(fin["epoch"].iloc[0]) + 0.5
                ax.plot([x], [fin["value"].iloc[0]], marker, ms=8, label=f"test {final}, {phase}")
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[len(metrics) - 1].set_xlabel("epoch")
    fig.tight_layout()
    return _save(fig, path)


def plot_pulse_counts(df: pd.DataFrame, path: str | Path) -> Path:
    """Cumulative SET and RESET pulses (and worst-case energy, J, right axis) after
    prepare (epoch 0), each epoch and deployment."""
    if "phase" not in df.columns:
        raise KeyError("phase (not a training run)")
    rows = df[df["phase"].isin(["prepare", "epoch", "deploy"]) & df["metric"].isin(TALLY_METRICS)]
    if rows.empty:
        raise ValueError("the run records no pulse tallies")
    wide = rows.pivot_table(index=["phase", "epoch"], columns="metric", values="value")
    wide = wide.reset_index()
    # prepare at 0, epoch e at e + 1, deployment half an epoch after the last epoch
    wide["x"] = [
        0.0 if p == "prepare" else e + 1.0 if p == "epoch" else e + 0.5
        for p, e in zip(wide["phase"], wide["epoch"])
    ]
    wide = wide.sort_values("x", kind="stable")
    fig, (ax,) = _figure()
    ax.step(wide["x"], wide["set_pulses"], where="post", label="SET")
    ax.step(wide["x"], wide["reset_pulses"], where="post", label="RESET")
    ax.set_xlabel("epoch (0: after prepare; last: after deploy)")
    ax.set_ylabel("device pulses (cumulative)")
    ax2 = ax.twinx()
    ax2.plot(wide["x"], wide["pulse_energy_j"], "k:", label="energy")
    ax2.set_ylabel("worst-case energy (J)")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_conductance(
    arrays: Sequence[tuple[str, int, np.ndarray]], path: str | Path, unit_s: float = 1e-3
) -> Path:
    """Conductance snapshots (``RunStore.arrays``): the map of each tile at the last
    snapshot (deployed where stored), and the histogram of the first and the last."""
    snaps = [(n, k, a) for n, k, a in arrays if n.startswith("g_s.tile")]
    if not snaps:
        raise ValueError("the run stores no conductance snapshots")
    tiles = sorted({n.split(".")[1] for n, _, _ in snaps})

    def last(tile: str) -> tuple[str, int, np.ndarray]:
        mine = [s for s in snaps if s[0].split(".")[1] == tile]
        return max(mine, key=lambda s: (s[0].endswith("deployed"), s[1]))

    def first(tile: str) -> tuple[str, int, np.ndarray]:
        return min((s for s in snaps if s[0] == f"g_s.{tile}"), key=lambda s: s[1])

    fig, axes = _figure(1, len(tiles) + 1, height=3.6)
    for ax, tile in zip(axes, tiles):
        name, step, g = last(tile)
        im = ax.imshow(g / unit_s, cmap="viridis", interpolation="nearest")
        fig.colorbar(im, ax=ax, label="G (mS)")
        ax.set_title(f"{tile}, {'deployed' if name.endswith('deployed') else f'epoch {step}'}")
        ax.set_xlabel("column")
        ax.set_ylabel("row")
    ax = axes[len(tiles)]
    g0 = np.concatenate([first(t)[2].ravel() for t in tiles])
    g1 = np.concatenate([last(t)[2].ravel() for t in tiles])
    bins = np.linspace(min(g0.min(), g1.min()), max(g0.max(), g1.max()), 30) / unit_s
    ax.hist(g0 / unit_s, bins=bins, alpha=0.6, label="first snapshot")
    ax.hist(g1 / unit_s, bins=bins, alpha=0.6, label="last snapshot")
    ax.set_xlabel("G (mS)")
    ax.set_ylabel("cells")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
