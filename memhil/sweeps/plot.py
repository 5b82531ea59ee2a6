"""A sweep's final metric against one axis, one line per value of the other axes, with
the standard deviation over seeds as error bars (``memhil runs plot SWEEP``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from memhil.core.errors import ConfigError
from memhil.store.columns import unit_of

__all__ = ["plot_sweep"]


def _numeric(values: pd.Series) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _with_unit(name: str, unit: str) -> str:
    return f"{name} [{unit}]" if unit else name


def plot_sweep(
    table: pd.DataFrame,
    axes: list[str],
    metric: str,
    path: str | Path,
    *,
    x: str | None = None,
    title: str = "",
) -> Path:
    """Draw ``metric`` (mean ± sd over seeds, from ``sweep_table``) against axis ``x``
    (default: the first axis); each combination of the other axes is one line. A numeric
    axis spanning more than two decades is drawn on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if f"{metric}_mean" not in table:
        raise ConfigError("--metric", f"no metric {metric!r} in this sweep")
    if not axes:
        raise ConfigError("SWEEP", "the sweep has no axes (only seeds) to plot against")
    x = x or axes[0]
    if x not in axes:
        raise ConfigError("--x", f"{x!r} is not an axis of the sweep (axes: {axes})")
    others = [a for a in axes if a != x]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    groups = (
        table.groupby([table[a].map(repr) for a in others], sort=False) if others else [((), table)]
    )
    numeric_x = _numeric(table[x])
    labels = list(dict.fromkeys(map(repr, table[x])))
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        xs = list(part[x]) if numeric_x else [labels.index(repr(v)) for v in part[x]]
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        label = ", ".join(f"{a.rsplit('.', 1)[-1]}={k}" for a, k in zip(others, key)) or None
        ax.errorbar(
            [xs[i] for i in order],
            [part[f"{metric}_mean"].iloc[i] for i in order],
            yerr=[part[f"{metric}_sd"].fillna(0.0).iloc[i] for i in order],
            marker="o",
            capsize=3,
            label=label,
        )
    if numeric_x:
        lo, hi = min(table[x]), max(table[x])
        if lo > 0 and hi / lo > 100:
            ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_xlabel(x)  # a configuration key: its unit is the base file's
    ax.set_ylabel(_with_unit(metric, unit_of(metric)))
    ax.set_title(title)
    if others:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
