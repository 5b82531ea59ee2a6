"""Which plots a run gets, as data: one entry per kind of run in ``PLOT_KINDS``.

A kind is the run's protocol name (``iv_sweep``, ``pulse_train`` ...) or, for training runs
and sweeps, ``experiment`` / ``sweep``; adding a kind is one entry here. Each plot is a
dict the page draws with Plotly (``memhil/monitor/static/app.js``):

* ``lines``: ``y`` (one column or several) vs ``x``, one trace per ``group`` (``"cell"``
  stands for the cell's key columns: die, subsite, tile, row, col), coloured by the
  ``color`` column when given; ``logx`` / ``logy``; ``abs`` plots |y|; ``mean`` adds the
  mean over cells at each x; ``filter``: ``[column, regex, keep]`` rows select points;
* ``heatmap``: ``z`` over ``x`` x ``y`` key columns, filling in as points arrive;
* ``wafer``: the mean of ``z`` per die (``die_x``, ``die_y``), filling in die by die.

Axis labels carry the unit read from the column name (:func:`memhil.store.columns.unit_of`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memhil.store.columns import unit_of
from memhil.store.run_facts import protocol_of, run_kind

__all__ = ["CELL_KEYS", "PLOT_KINDS", "TALLY", "label", "plot_kind", "plots_for"]

#: The key columns that name one device (``"cell"`` in a plot's ``group``).
CELL_KEYS = ("die_x", "die_y", "die_col", "die_row", "subsite", "tile", "row", "col")

_CONDUCTANCE = {"type": "heatmap", "x": "col", "y": "row", "z": "g", "title": "Conductance map"}

PLOT_KINDS: dict[str, list[dict[str, Any]]] = {
    "iv_sweep": [
        {
            "type": "lines",
            "x": "v",
            "y": "i",
            "abs": True,
            "logy": True,
            "group": ["cell", "cycle"],
            "color": "cycle",
            "title": "I-V: log |I| vs V per cell, coloured by cycle",
        }
    ],
    "pulse_train": [
        {
            "type": "lines",
            "x": "n",
            "y": "g",
            "group": ["cell", "train"],
            "mean": True,
            "title": "LTP/LTD: G vs pulse per cell, with the mean",
        }
    ],
    "conductance_map": [_CONDUCTANCE],
    "retention": [
        {
            "type": "lines",
            "x": "t_s",
            "y": "g",
            "group": ["cell"],
            "logx": True,
            "logy": True,
            "mean": True,
            "title": "Retention: G vs time per cell (log-log)",
        }
    ],
    "read_noise": [
        {
            "type": "lines",
            "x": "t_s",
            "y": "g",
            "group": ["cell"],
            "title": "Read noise: G vs time per cell",
        }
    ],
    "endurance": [
        {
            "type": "lines",
            "x": "cycle",
            "y": ["g_lrs", "g_hrs"],
            "group": ["cell"],
            "logy": True,
            "markers": True,
            "title": "Endurance: LRS and HRS conductance vs cycle per cell",
        }
    ],
    "forming": [
        {
            "type": "lines",
            "x": "v_pulse",
            "y": "g",
            "group": ["cell"],
            "logy": True,
            "markers": True,
            "title": "Forming: G after each pulse vs pulse amplitude per cell",
        }
    ],
    "wafer_campaign": [
        {"type": "wafer", "z": "g", "title": "Wafer map: mean G per die"},
        {
            "type": "lines",
            "x": "n",
            "y": "g",
            "group": ["cell"],
            "mean": True,
            "title": "Pulse response of every die's cells, with the mean",
        },
    ],
    # a training run stores one point per (phase, epoch, step, metric): ``value``
    "experiment": [
        {
            "type": "lines",
            "x": "epoch",
            "y": "value",
            "group": ["metric"],
            "filter": [["phase", "^epoch$", True], ["metric", "<tally>", False]],
            "markers": True,
            "title": "Learning curves: each metric per epoch",
        },
        {
            "type": "lines",
            "x": "epoch",
            "y": "value",
            "group": ["metric"],
            "filter": [["phase", "^epoch$", True], ["metric", "<tally>", True]],
            "markers": True,
            "logy": True,
            "ylabel": "pulses (count) / energy (J)",
            "title": "Pulse tallies (SET, RESET, energy), cumulative",
        },
    ],
}
#: Metrics of a training run that count pulses or their energy (the rest are learning curves).
TALLY = r"(pulse|set|reset|energy|_j$|count)"
_X_FALLBACK = ("epoch", "step", "n", "pulse", "cycle", "index_", "point")


def plot_kind(md: Mapping[str, Any]) -> str:
    """The ``PLOT_KINDS`` entry of a run with metadata ``md``: its protocol name, else
    ``experiment`` / ``sweep`` / ``default``."""
    kind = run_kind(md)
    if kind != "protocol":
        return kind
    proto = protocol_of(md)
    return proto if proto in PLOT_KINDS else "default"


def label(column: str) -> str:
    """An axis label with the column's unit: ``g`` -> ``G (S)``, ``t_s`` -> ``t (s)``."""
    names = {"g": "G", "v": "V", "i": "I", "t_s": "t", "n": "pulse number", "v_pulse": "V pulse"}
    unit = unit_of(column)
    name = names.get(column, column.rstrip("_"))
    if column.startswith("g_") and column[2:] in ("lrs", "hrs"):
        name = f"G {column[2:].upper()}"
    return f"{name} ({unit})" if unit else name


def plots_for(kind: str, keys: list[str], values: list[str]) -> list[dict[str, Any]]:
    """The plot definitions of ``kind`` resolved against a run's columns: ``cell`` made
    the key columns present, ``<metrics>``/``<tallies>`` the training run's columns,
    labels with units; a plot whose columns the run lacks is left out (a table of points
    is always shown)."""
    cols = set(keys) | set(values) | {"point"}
    out = []
    for spec in PLOT_KINDS.get(kind, _default(keys, values)):
        s = dict(spec)
        if s["type"] == "lines":
            y = s["y"]
            ys = [y] if isinstance(y, str) else list(y)
            ys = [c for c in ys if c in cols]
            x = s["x"] if s["x"] in cols else next(c for c in _X_FALLBACK if c in cols)
            if not ys:
                continue
            group: list[str] = []
            for g in s.get("group", []):
                group += [c for c in CELL_KEYS if c in keys] if g == "cell" else [g]
            s.update(
                x=x,
                y=ys,
                group=[g for g in dict.fromkeys(group) if g in cols],
                xlabel=label(x),
                ylabel=("|" + label(ys[0]) + "|")
                if s.get("abs")
                else label(ys[0])
                if len(ys) == 1
                else " / ".join(label(c) for c in ys),
            )
            if s.get("color") not in cols:
                s.pop("color", None)
            # keep a point when its column matches the pattern (True) or does not (False)
            filters = [
                [c, TALLY if p == "<tally>" else p, keep] for c, p, keep in s.get("filter", [])
            ]
            if any(c not in cols for c, _, _ in filters):
                continue
            s["filter"] = filters
            if "ylabel" in spec:
                s["ylabel"] = spec["ylabel"]
        elif s["type"] == "heatmap":
            if not {s["x"], s["y"], s["z"]} <= cols:
                continue
            s.update(xlabel=s["x"], ylabel=s["y"], zlabel=label(s["z"]))
        elif s["type"] == "wafer":
            die: list[str] = [c for c in ("die_x", "die_y") if c in keys]
            die = die or [c for c in ("die_col", "die_row") if c in keys]
            if len(die) != 2 or s["z"] not in cols:
                continue
            s.update(x=die[0], y=die[1], xlabel="die x", ylabel="die y", zlabel=label(s["z"]))
        out.append(s)
    return out


def _default(keys: list[str], values: list[str]) -> list[dict[str, Any]]:
    """A run of a kind without an entry: its first value vs the first index key."""
    if not values:
        return []
    x = next((c for c in _X_FALLBACK if c in keys), "point")
    return [
        {
            "type": "lines",
            "x": x,
            "y": values[0],
            "group": ["cell"],
            "markers": True,
            "title": f"{label(values[0])} vs {label(x)} per cell",
        }
    ]
