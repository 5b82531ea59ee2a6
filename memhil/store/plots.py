"""Matplotlib plots of run data (Agg backend, no display needed).

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas, not pyplot: no
global backend switch, no figure leaks, safe in threads and headless runs.

Every function takes a DataFrame (as returned by :meth:`RunStore.load`) or arrays, writes
a PNG to ``path`` and returns the path.  Column names are configurable; defaults follow
the memhil protocols (``v``, ``i``, ``g``, ``t_s``, ``cycle``, ``pulse`` ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle

__all__ = [
    "DPI",
    "FIGSIZE",
    "plot_chronoamperometry",
    "plot_conductance_map",
    "plot_endurance",
    "plot_iv",
    "plot_multi_bias",
    "plot_multistate",
    "plot_pulse_response",
    "plot_retention",
    "plot_sequence",
    "plot_stdp",
    "plot_switch_seeker",
    "plot_transient",
    "plot_volatility",
    "plot_wafer_map",
]

FIGSIZE = (6.4, 4.8)
DPI = 100
_TINY = 1e-15


def _subplots() -> tuple[Figure, Any]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _first(df: pd.DataFrame, names: Sequence[str]) -> str | None:
    for n in names:
        if n in df.columns:
            return n
    return None


def plot_iv(
    df: pd.DataFrame,
    path: str | Path,
    *,
    v: str = "v",
    i: str = "i",
    cycle: str | None = None,
    title: str = "I-V",
) -> Path:
    """I-V loops, log |I| vs V, one curve per cycle (``cycle`` column, default the
    first of ``cycle``/``step`` present; one curve if none)."""
    cycle = cycle or _first(df, ("cycle", "step"))
    fig, ax = _subplots()
    groups = df.groupby(cycle, sort=True) if cycle else [(None, df)]
    for c, g in groups:
        ax.semilogy(
            g[v].to_numpy(),
            np.abs(g[i].to_numpy()) + _TINY,
            "-",
            lw=1,
            label=None if c is None else f"{cycle} {c}",
        )
    ax.set_xlabel("V (V)")
    ax.set_ylabel("|I| (A)")
    ax.set_title(title)
    if cycle and df[cycle].nunique() <= 12:
        ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def plot_pulse_response(
    df: pd.DataFrame,
    path: str | Path,
    *,
    g: str = "g",
    pulse: str | None = None,
    phase: str | None = None,
    title: str = "Pulse response (LTP/LTD)",
) -> Path:
    """G vs pulse number; one curve per ``phase`` (e.g. "LTP"/"LTD") if present,
    pulse number from ``pulse``/``step`` or the row order."""
    pulse = pulse or _first(df, ("pulse", "step"))
    phase = phase or _first(df, ("phase", "direction"))
    x = df[pulse].to_numpy() if pulse else np.arange(len(df))
    fig, ax = _subplots()
    if phase:
        for p, idx in df.groupby(phase, sort=False).groups.items():
            sel = df.index.get_indexer(idx)
            ax.plot(x[sel], df[g].to_numpy()[sel], ".-", ms=3, label=str(p))
        ax.legend()
    else:
        ax.plot(x, df[g].to_numpy(), ".-", ms=3)
    ax.set_xlabel("pulse number")
    ax.set_ylabel("G (S)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_conductance_map(
    g: Any, path: str | Path, *, title: str = "Conductance map", log: bool = False
) -> Path:
    """Heat map of a 2-D conductance array (rows x cols) or of a DataFrame with
    ``row``, ``col``, ``g`` columns."""
    if isinstance(g, pd.DataFrame):
        g = g.pivot_table(index="row", columns="col", values="g", aggfunc="mean").to_numpy()
    arr = np.asarray(g, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"conductance map needs a 2-D array, got shape {arr.shape}")
    if log:
        arr = np.log10(np.abs(arr) + _TINY)
    fig, ax = _subplots()
    im = ax.imshow(arr, cmap="viridis", origin="upper", aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="log10 G (S)" if log else "G (S)")
    ax.set_xlabel("col")
    ax.set_ylabel("row")
    ax.set_title(title)
    return _save(fig, path)


def plot_retention(
    df: pd.DataFrame,
    path: str | Path,
    *,
    t: str = "t_s",
    g: str = "g",
    group: str | None = None,
    title: str = "Retention",
) -> Path:
    """G vs time (log time axis); one curve per ``group`` (e.g. level/state) if given."""
    fig, ax = _subplots()
    groups = df.groupby(group, sort=True) if group else [(None, df)]
    for k, d in groups:
        tt = d[t].to_numpy(dtype=float)
        keep = tt > 0
        ax.semilogx(
            tt[keep],
            d[g].to_numpy(dtype=float)[keep],
            ".-",
            ms=3,
            label=None if k is None else f"{group} {k}",
        )
    if group:
        ax.legend(fontsize="small")
    ax.set_xlabel("t (s)")
    ax.set_ylabel("G (S)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def plot_endurance(
    df: pd.DataFrame,
    path: str | Path,
    *,
    cycle: str | None = None,
    hrs: str | None = None,
    lrs: str | None = None,
    title: str = "Endurance",
) -> Path:
    """HRS and LRS vs cycle (log y).  Columns: ``cycle`` (or ``step``/row order) and
    either ``r_hrs``/``r_lrs`` (resistances) or ``g_hrs``/``g_lrs`` (conductances)."""
    cycle = cycle or _first(df, ("cycle", "step"))
    hrs = hrs or _first(df, ("r_hrs", "g_hrs", "hrs"))
    lrs = lrs or _first(df, ("r_lrs", "g_lrs", "lrs"))
    if hrs is None or lrs is None:
        raise KeyError("endurance needs HRS and LRS columns (r_hrs/r_lrs or g_hrs/g_lrs)")
    x = df[cycle].to_numpy() if cycle else np.arange(len(df))
    fig, ax = _subplots()
    ax.semilogy(x, np.abs(df[hrs].to_numpy(dtype=float)) + _TINY, ".", ms=3, label=hrs)
    ax.semilogy(x, np.abs(df[lrs].to_numpy(dtype=float)) + _TINY, ".", ms=3, label=lrs)
    unit = "Ω" if hrs.startswith("r") else "S"
    ax.set_xlabel("cycle")
    ax.set_ylabel(f"HRS / LRS ({unit})")
    ax.set_title(title)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def plot_wafer_map(
    values_by_die: Mapping[tuple[int, int], float],
    path: str | Path,
    *,
    title: str = "Wafer map",
    label: str = "value",
) -> Path:
    """Wafer map: ``{(die_col, die_row): value}`` as coloured squares (missing dies
    blank), with the wafer outline."""
    if not values_by_die:
        raise ValueError("no dies to plot")
    cols = [int(c) for c, _ in values_by_die]
    rows = [int(r) for _, r in values_by_die]
    c0, r0 = min(cols), min(rows)
    grid = np.full((max(rows) - r0 + 1, max(cols) - c0 + 1), np.nan)
    for (c, r), v in values_by_die.items():
        grid[int(r) - r0, int(c) - c0] = float(v)
    fig, ax = _subplots()
    im = ax.imshow(
        np.ma.masked_invalid(grid),
        cmap="viridis",
        origin="lower",
        extent=(c0 - 0.5, max(cols) + 0.5, r0 - 0.5, max(rows) + 0.5),
        interpolation="nearest",
    )
    cx, cy = (c0 + max(cols)) / 2, (r0 + max(rows)) / 2
    rad = 0.5 * np.hypot(max(cols) - c0 + 1, max(rows) - r0 + 1)
    ax.add_patch(Circle((cx, cy), rad, fill=False, color="gray", lw=1))
    ax.set_xlim(cx - rad - 0.5, cx + rad + 0.5)
    ax.set_ylim(cy - rad - 0.5, cy + rad + 0.5)
    ax.set_aspect("equal")
    fig.colorbar(im, ax=ax, label=label)
    ax.set_xlabel("die col")
    ax.set_ylabel("die row")
    ax.set_title(title)
    return _save(fig, path)


# -- the characterization library (switch_seeker ... sequence) ---------------------------
_CELL = ["tile", "row", "col"]


def _by_cell(df: pd.DataFrame) -> Any:
    """(label, rows) per cell of a protocol's records (one group when no cell columns)."""
    cols = [c for c in _CELL if c in df.columns]
    if not cols:
        return [("", df)]
    return ((f"cell {k}", d) for k, d in df.groupby(cols, sort=True))


def _records(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The rows whose ``record`` key is ``kind`` (all rows when there is no such key)."""
    return df[df["record"] == kind] if "record" in df.columns else df


def _finish(fig: Figure, ax: Any, path: str | Path, xlabel: str, ylabel: str, title: str) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(ax.get_lines()) <= 12 and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def plot_switch_seeker(df: pd.DataFrame, path: str | Path, *, title: str = "SwitchSeeker") -> Path:
    """G vs pulse amplitude per cell and polarity (``record = "step"`` rows); the
    switching voltages (``record = "result"``) as vertical marks."""
    steps, results = _records(df, "step"), _records(df, "result")
    fig, ax = _subplots()
    for label, d in _by_cell(steps):
        for pol, dp in d.groupby("polarity", sort=False):
            ax.semilogy(dp["v_pulse_v"], dp["g"], ".-", ms=3, label=f"{label} {pol}")
    for v in results["v_switch_v"].dropna():
        ax.axvline(float(v), color="gray", lw=0.5, ls="--")
    return _finish(fig, ax, path, "pulse amplitude (V)", "G (S)", title)


def plot_multistate(df: pd.DataFrame, path: str | Path, *, title: str = "MultiStateSeeker") -> Path:
    """Level means with +-z sigma bars vs target, per cell; counted levels filled."""
    levels = _records(df, "level")
    z = float(_records(df, "result")["z"].iloc[0]) if "z" in df.columns else 3.0
    fig, ax = _subplots()
    for label, d in _by_cell(levels):
        bars = ax.errorbar(
            d["g_target"],
            d["g_mean"],
            yerr=z * d["g_std"],
            fmt="o",
            ms=3,
            mfc="none",
            capsize=2,
            label=label,
        )
        kept = d[d["counted"].astype(bool)]
        ax.plot(kept["g_target"], kept["g_mean"], "o", ms=4, color=bars[0].get_color())
    return _finish(fig, ax, path, "target G (S)", f"read G (S), ±{z:.3g} σ", title)


def plot_stdp(df: pd.DataFrame, path: str | Path, *, title: str = "STDP") -> Path:
    """Conductance change vs spike delay (t_post - t_pre), per cell."""
    fig, ax = _subplots()
    for label, d in _by_cell(_records(df, "delay")):
        d = d.sort_values("delay_s")
        ax.plot(d["delay_s"], d["g_change"], "o-", ms=3, label=label)
    ax.axhline(0.0, color="gray", lw=0.5)
    return _finish(fig, ax, path, "delay t_post - t_pre (s)", "ΔG (S)", title)


def plot_transient(
    df: pd.DataFrame,
    path: str | Path,
    *,
    y: str = "g",
    title: str = "Transient",
) -> Path:
    """``y`` vs time since programming or bias onset (``t_s``, log axis), per cell: the
    volatility and chronoamperometry records (their fit rows carry no time)."""
    d0 = _records(df, "read")
    d0 = d0[d0["t_s"] > 0]
    fig, ax = _subplots()
    for label, d in _by_cell(d0):
        ax.semilogx(d["t_s"], d[y], ".-", ms=3, label=label)
    return _finish(fig, ax, path, "t (s)", "I (A)" if y.startswith("i") else "G (S)", title)


def plot_volatility(df: pd.DataFrame, path: str | Path) -> Path:
    return plot_transient(df, path, y="g", title="Volatility")


def plot_chronoamperometry(df: pd.DataFrame, path: str | Path) -> Path:
    return plot_transient(df, path, y="i_read_a", title="Chronoamperometry")


def plot_multi_bias(df: pd.DataFrame, path: str | Path, *, title: str = "MultiBias") -> Path:
    """Mean column current of the driven row vs column (bars: min..max of the repeats)."""
    stats = df.groupby("col")["i_a"].agg(["mean", "min", "max"])
    fig, ax = _subplots()
    ax.errorbar(
        stats.index,
        stats["mean"],
        yerr=[stats["mean"] - stats["min"], stats["max"] - stats["mean"]],
        fmt="o",
    )
    return _finish(fig, ax, path, "column", "I (A)", title)


def plot_sequence(df: pd.DataFrame, path: str | Path, *, title: str = "Sequence") -> Path:
    """G of every stored read in record order, per cell (any sequence's reads)."""
    fig, ax = _subplots()
    for label, d in _by_cell(df[df["g"].notna()] if "g" in df.columns else df):
        ax.plot(np.arange(len(d)), d["g"], ".-", ms=3, label=label)
    return _finish(fig, ax, path, "read", "G (S)", title)
