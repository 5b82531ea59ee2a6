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

import matplotlib
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
#: Key columns that name one device: a run of several cells is drawn one line per cell.
CELL_KEYS = ("die_x", "die_y", "die_col", "die_row", "subsite", "tile", "row", "col")


def _subplots() -> tuple[Figure, Any]:
    # constrained layout keeps axis labels and colour bars inside the figure (not clipped)
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
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


def _cells(df: pd.DataFrame) -> list[str]:
    """The key columns of ``df`` that name a cell and take more than one value."""
    return [c for c in CELL_KEYS if c in df.columns and df[c].nunique() > 1]


def _groups(df: pd.DataFrame, by: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per distinct value of ``by`` in first-seen order; one group if none."""
    if not by:
        return [("", df)]
    return [
        (", ".join(f"{k} {v}" for k, v in zip(by, key if isinstance(key, tuple) else (key,))), g)
        for key, g in df.groupby(by, sort=False)
    ]


def _n_cells(df: pd.DataFrame) -> int:
    cells = _cells(df)
    return int(df.groupby(cells).ngroups) if cells else 1


def _positive(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points a log axis can show (y > 0 and finite)."""
    keep = np.isfinite(y) & (y > 0)
    return x[keep], y[keep]


def plot_iv(
    df: pd.DataFrame,
    path: str | Path,
    *,
    v: str = "v",
    i: str = "i",
    cycle: str | None = None,
    title: str | None = None,
) -> Path:
    """I-V loops as log |I| vs V: one line per cell and cycle (``cycle`` column, default
    the first of ``cycle``/``step`` present), coloured by cycle."""
    cycle = cycle or _first(df, ("cycle", "step"))
    cells = _cells(df)
    fig, ax = _subplots()
    cycles = sorted(df[cycle].unique()) if cycle else [None]
    cmap = matplotlib.colormaps["viridis"]
    colour = {c: cmap(k / max(1, len(cycles) - 1)) for k, c in enumerate(cycles)}
    for _, g in _groups(df, cells + ([cycle] if cycle else [])):
        x, y = _positive(g[v].to_numpy(dtype=float), np.abs(g[i].to_numpy(dtype=float)))
        ax.semilogy(x, y, "-", lw=1, color=colour[g[cycle].iloc[0] if cycle else None])
    if cycle and len(cycles) > 1:
        sm = matplotlib.cm.ScalarMappable(
            cmap=cmap, norm=matplotlib.colors.Normalize(min(cycles), max(cycles))
        )
        fig.colorbar(sm, ax=ax, label=cycle)
    ax.set_xlabel("V (V)")
    ax.set_ylabel("|I| (A)")
    n = _n_cells(df)
    ax.set_title(
        title
        or f"I-V: log |I| vs V, {n} cell{'s' * (n > 1)}, {len(cycles)} cycle"
        f"{'s' * (len(cycles) > 1)}"
    )
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def plot_pulse_response(
    df: pd.DataFrame,
    path: str | Path,
    *,
    g: str = "g",
    pulse: str | None = None,
    phase: str | None = None,
    title: str | None = None,
) -> Path:
    """G vs pulse number (LTP then LTD): one line per cell over the cumulative pulse
    number ``n`` (else ``pulse``/``step``), with the mean over cells; without cell keys,
    one line per ``phase`` (e.g. measured vs simulated)."""
    pulse = pulse or _first(df, ("n", "pulse", "step"))
    phase = phase or _first(df, ("phase", "direction"))
    cells = _cells(df)
    fig, ax = _subplots()
    x_all = df[pulse].to_numpy() if pulse else np.arange(len(df))
    if cells:
        trains = [c for c in ("train",) if c in df.columns and df[c].nunique() > 1]
        for _, d in _groups(df, cells + trains):
            xs = d[pulse].to_numpy() if pulse else np.arange(len(d))
            ax.plot(xs, d[g].to_numpy(dtype=float), "-", lw=0.8, alpha=0.5)
        mean = df.assign(_x=x_all).groupby("_x", sort=True)[g].mean()
        ax.plot(mean.index, mean.to_numpy(), "k-", lw=2, label=f"mean of {_n_cells(df)} cells")
        ax.legend(fontsize="small")
    elif phase:
        for p, d in _groups(df, [phase]):
            xs = d[pulse].to_numpy() if pulse else np.arange(len(d))
            ax.plot(xs, d[g].to_numpy(dtype=float), ".-", ms=3, label=p.split(" ", 1)[1])
        ax.legend(fontsize="small")
    else:
        ax.plot(x_all, df[g].to_numpy(dtype=float), ".-", ms=3)
    ax.set_xlabel("pulse number")
    ax.set_ylabel("G (S)")
    ax.set_title(title or f"LTP/LTD: G vs pulse number, {_n_cells(df)} cell(s)")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_conductance_map(
    g: Any,
    path: str | Path,
    *,
    title: str | None = None,
    log: bool = False,
    unit: str = "S",
) -> Path:
    """Heat map of a 2-D conductance array (rows x cols, values in ``unit``) or of a
    DataFrame with ``row``, ``col``, ``g`` (siemens). The colour bar names what it shows:
    ``G (µS)`` (siemens are shown in µS), or ``log10(G / unit)``."""
    if isinstance(g, pd.DataFrame):
        g = g.pivot_table(index="row", columns="col", values="g", aggfunc="mean").to_numpy()
        unit = "S"
    arr = np.asarray(g, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"conductance map needs a 2-D array, got shape {arr.shape}")
    if log:
        arr = np.log10(np.abs(arr) + _TINY)
        label = f"log10(G / {unit})"
    elif unit == "S":
        arr, label = arr * 1e6, "G (µS)"
    else:
        label = f"G ({unit})"
    fig, ax = _subplots()
    im = ax.imshow(arr, cmap="viridis", origin="upper", aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, label=label)
    ax.set_xlabel("col")
    ax.set_ylabel("row")
    ax.set_title(title or f"Conductance map, {arr.shape[0]} x {arr.shape[1]} cells")
    return _save(fig, path)


def plot_retention(
    df: pd.DataFrame,
    path: str | Path,
    *,
    t: str = "t_s",
    g: str = "g",
    group: str | None = None,
    title: str | None = None,
) -> Path:
    """G vs time in log-log: one line per cell (or per ``group``, e.g. level)."""
    by = [group] if group else _cells(df)
    fig, ax = _subplots()
    for label, d in _groups(df, by):
        x, y = _positive(d[t].to_numpy(dtype=float), d[g].to_numpy(dtype=float))
        keep = x > 0
        ax.loglog(x[keep], y[keep], ".-", ms=3, lw=1, label=label or None)
    if len(by) and df.groupby(by).ngroups <= 12:
        ax.legend(fontsize="small")
    ax.set_xlabel("t (s)")
    ax.set_ylabel("G (S)")
    ax.set_title(title or f"Retention: G vs time (log-log), {_n_cells(df)} cell(s)")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def plot_endurance(
    df: pd.DataFrame,
    path: str | Path,
    *,
    cycle: str | None = None,
    hrs: str | None = None,
    lrs: str | None = None,
    title: str | None = None,
) -> Path:
    """LRS and HRS vs cycle (log y), one line per cell each: LRS filled, HRS open
    markers in another colour, so neither hides the other. Columns: ``cycle`` (or
    ``step``/row order) and ``r_hrs``/``r_lrs`` (resistances) or ``g_hrs``/``g_lrs``."""
    cycle = cycle or _first(df, ("cycle", "step"))
    hrs = hrs or _first(df, ("r_hrs", "g_hrs", "hrs"))
    lrs = lrs or _first(df, ("r_lrs", "g_lrs", "lrs"))
    if hrs is None or lrs is None:
        raise KeyError("endurance needs HRS and LRS columns (r_hrs/r_lrs or g_hrs/g_lrs)")
    fig, ax = _subplots()
    hidden = 0
    for k, (_, d) in enumerate(_groups(df, _cells(df))):
        x = d[cycle].to_numpy(dtype=float) if cycle else np.arange(len(d), dtype=float)
        for col, colour, marker in ((lrs, "tab:blue", "o"), (hrs, "tab:red", "s")):
            y = np.abs(d[col].to_numpy(dtype=float))
            xs, ys = _positive(x, y)
            hidden += len(y) - len(ys)
            ax.semilogy(
                xs,
                ys,
                "-",
                marker=marker,
                ms=3.5,
                lw=0.7,
                color=colour,
                mfc="none" if col == hrs else colour,
                label=("LRS" if col == lrs else "HRS") if k == 0 else None,
            )
    unit = "Ω" if hrs.startswith("r") else "S"
    quantity = "R" if unit == "Ω" else "G"
    ax.set_xlabel("cycle")
    ax.set_ylabel(f"{quantity} HRS / LRS ({unit})")
    n = _n_cells(df)
    ax.set_title(title or f"Endurance: LRS and HRS vs cycle, {n} cell(s)")
    ax.legend(title=f"{hidden} read(s) <= 0 not shown" if hidden else None, fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def plot_wafer_map(
    values_by_die: Mapping[tuple[int, int], float],
    path: str | Path,
    *,
    title: str = "Wafer map: one value per die",
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
        np.ma.masked_invalid(grid),  # dies not measured yet stay blank
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
