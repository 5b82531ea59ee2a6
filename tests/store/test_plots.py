"""Static plots read at a glance: one line per cell (no zig-zag through every cell), y
labels with units inside the figure, specific titles, HRS as visible as LRS, colour bars
naming the unit of the values they show."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from memhil.store import plots


def _capture(monkeypatch) -> list[Figure]:
    """The figures the plot functions save (their axes are inspected after the draw)."""
    saved: list[Figure] = []
    real = plots._save

    def keep(fig, path):
        saved.append(fig)
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def _label_inside(fig: Figure, ax) -> bool:
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    box = ax.yaxis.label.get_window_extent(renderer)
    return box.x0 >= 0 and box.y0 >= 0 and box.y1 <= fig.bbox.height


def _cells_frame(n_cells: int = 3, n: int = 8) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for cell in range(n_cells):
        for k in range(n):
            rows.append(
                {
                    "cycle": k // 4,
                    "n": k,
                    "t_s": 10.0 ** (k / 2),
                    "tile": 0,
                    "row": cell,
                    "col": cell,
                    "v": np.sin(k),
                    "i": 1e-6 * np.sin(k),
                    "g": 1e-6 * (1 + cell + 0.1 * rng.random()),
                    "g_lrs": 1e-5 * (1 + 0.1 * rng.random()),
                    "g_hrs": 1e-7 * (1 + 0.1 * rng.random()) if k else 0.0,
                }
            )
    return pd.DataFrame(rows)


def test_multi_cell_runs_draw_one_line_per_cell_with_labels_inside_and_specific_titles(
    monkeypatch, tmp_path
):
    saved = _capture(monkeypatch)
    df = _cells_frame()
    plots.plot_iv(df, tmp_path / "iv.png")
    plots.plot_retention(df, tmp_path / "ret.png")
    plots.plot_pulse_response(df, tmp_path / "ltp.png")
    iv, ret, ltp = (f.axes[0] for f in saved)
    assert len(iv.get_lines()) == 3 * 2  # cells x cycles
    assert len(ret.get_lines()) == 3
    assert len(ltp.get_lines()) == 3 + 1  # cells + the mean
    assert ret.get_xscale() == ret.get_yscale() == "log"
    for fig, ax, ylabel, title in (
        (saved[0], iv, "|I| (A)", "I-V: log |I| vs V, 3 cells, 2 cycles"),
        (saved[1], ret, "G (S)", "Retention: G vs time (log-log), 3 cell(s)"),
        (saved[2], ltp, "G (S)", "LTP/LTD: G vs pulse number, 3 cell(s)"),
    ):
        assert ax.get_ylabel() == ylabel and ax.get_title() == title
        assert _label_inside(fig, ax)


def test_endurance_shows_hrs_and_lrs_per_cell_within_the_axis_range(monkeypatch, tmp_path):
    saved = _capture(monkeypatch)
    plots.plot_endurance(_cells_frame(), tmp_path / "endu.png")
    ax = saved[0].axes[0]
    lines = ax.get_lines()
    assert len(lines) == 2 * 3
    lo, hi = ax.get_ylim()
    hrs = [ln for ln in lines if ln.get_color() == "tab:red"]
    assert len(hrs) == 3
    for ln in hrs:  # every HRS point drawn lies inside the visible range (0 reads left out)
        y = np.asarray(ln.get_ydata())
        assert len(y) == 7 and (y > lo).all() and (y < hi).all()
    assert ax.get_legend().get_title().get_text() == "3 read(s) <= 0 not shown"
    assert ax.get_ylabel() == "G HRS / LRS (S)"


def test_conductance_map_colour_bar_names_the_unit_of_its_values(monkeypatch, tmp_path):
    saved = _capture(monkeypatch)
    g = np.full((4, 4), 2e-6)
    plots.plot_conductance_map(g, tmp_path / "lin.png")
    plots.plot_conductance_map(g, tmp_path / "log.png", log=True)
    lin, log = (f.axes[1] for f in saved)  # the colour bars
    assert lin.get_ylabel() == "G (µS)" and np.allclose(saved[0].axes[0].images[0].get_array(), 2.0)
    assert log.get_ylabel() == "log10(G / S)"
    assert np.allclose(saved[1].axes[0].images[0].get_array(), np.log10(2e-6), atol=1e-6)
