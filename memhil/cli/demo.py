"""``memhil demo``: the digital-twin loop on the embedded defaults (mock lab + simulator +
a SQLite run store), on a 16x16 virtual chip of a two-die wafer.

1. die (0, 0), pristine RRAM: electroform every cell (AutoFormer ramp) and map it;
2. die (1, 0), LTP/LTD devices: map it and record potentiation/depression pulse trains;
3. fit the NeuroSim LTP/LTD model to the recorded curves (with standard errors) and save
   it as a versioned parameter file;
4. load that file into the simulator, run the same pulse trains there, and compare the
   prediction with the chip.
Every protocol runs through the instruments of the mock lab (Velox prober + array board,
over pyserial and loopback sockets), is stored in the SQLite file and plotted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

# The chip's true LTP/LTD parameters (die 1): the fit must find them from measurements.
TRUE_DEVICE: dict[str, Any] = {
    "model": "neurosim",
    "g_min_s": 1.0e-6,
    "g_max_s": 8.0e-6,
    "a_ltp": 5.0,
    "a_ltd": 9.0,
    "c2c_std": 0.005,
}


@click.command("demo")
@click.option(
    "--size",
    type=click.IntRange(2, 256),
    default=16,
    show_default=True,
    help="array rows and columns",
)
@click.option(
    "--db",
    default="memhil-demo.db",
    show_default=True,
    metavar="PATH",
    help="SQLite run store (created)",
)
@click.option(
    "--out",
    "out_dir",
    default="memhil-demo",
    show_default=True,
    metavar="DIR",
    help="folder for plots, the fit, the station and the protocol files",
)
@click.option("--seed", type=int, default=0, show_default=True)
def command(size: int, db: str, out_dir: str, seed: int) -> int:
    """Form, characterize and fit a virtual chip on the mock lab, then predict it with the
    simulator."""
    run_demo(rows=size, cols=size, db=db, out_dir=out_dir, seed=seed, out=click.echo)
    return 0


def demo_station(rows: int, cols: int, seed: int) -> dict[str, Any]:
    return {
        "name": "demo_bench",
        "chip": {"rows": rows, "cols": cols, "device": "neurosim"},
        "limits": {
            "v_pulse_max_v": 3.0,
            "v_read_max_v": 0.3,
            "compliance_max_a": 1e-3,
            "compliance_default_a": 1e-4,
            "width_min_s": 1e-9,
            "width_max_s": 1e-2,
        },
        "instruments": {
            "prober": {"type": "formfactor_velox", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
            "board": {"type": "memhil_array_board", "address": f"memhilboard://demo{seed}"},
        },
        "mock": {
            "device": TRUE_DEVICE,
            "seed": seed,
            "read": {"read_noise_rel": 0.01},
            "wafer": {
                "dies": [[0, 0], [1, 0]],
                "die_overrides": {"0,0": {"model": "rram_forming"}},
            },
        },
    }


def run_demo(
    rows: int = 16,
    cols: int = 16,
    db: str | Path = "memhil-demo.db",
    out_dir: str | Path = "memhil-demo",
    seed: int = 0,
    n_pulses: int = 30,
    out=print,
) -> dict[str, Any]:
    """Run the demo; returns its figures (and prints a summary table through ``out``).
    Its station and protocol files (each with its ``backend:``) are written to ``out_dir``,
    so ``memhil run out_dir/NAME.yaml`` reruns a step on a fresh mock lab or simulator."""
    import numpy as np
    import yaml

    from memhil.backends.sim import SimBackend
    from memhil.calibration.fit.neurosim import fit_neurosim
    from memhil.mock_hw.lab import MockLab
    from memhil.runs.fit import pulse_responses_from_run
    from memhil.runs.protocol_run import run_protocol_file
    from memhil.store import RunStore, plots

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows_out: list[tuple[str, str]] = []
    results: dict[str, Any] = {}
    out(
        f"memhil demo: {rows}x{cols} virtual chip, two-die wafer, mock lab + simulator, "
        f"run store {db}"
    )
    station_cfg = demo_station(rows, cols, seed)
    (out_dir / "station.yaml").write_text(yaml.safe_dump(station_cfg, sort_keys=False))
    sim_cfg = {
        "rows": rows,
        "cols": cols,
        "seed": seed + 1,
        "device": "fitted_device.yaml",
        "read": {"read_noise_rel": 0.01},
    }
    on_die: dict[tuple[int, int], dict[str, Any]] = {
        (0, 0): {"mock_lab": "station.yaml", "strategy": "parallel"},
        (1, 0): {"mock_lab": "station.yaml", "strategy": "parallel", "die": [1, 0]},
    }

    def protocol_file(name: str, protocol: str, params: dict, backend_cfg: dict) -> Path:
        """The demo's steps are ordinary protocol files: ``memhil run`` reruns one on the
        ``backend:`` written in it (paths relative to the file)."""
        path = out_dir / f"{name}.yaml"
        path.write_text(
            yaml.safe_dump(
                {"protocol": protocol, "params": params, "name": name, "backend": backend_cfg},
                sort_keys=False,
            )
        )
        return path

    backend = MockLab.open_backend(station_cfg, strategy="parallel")
    die_now = [(0, 0)]  # where the prober stands (the backend touched down on the first die)
    station = backend.station
    try:

        def run(name: str, protocol: str, params: dict, on=backend) -> int:
            if on is backend:
                station.prober.contact()  # each run ends in the safe state: separated
                cfg = on_die[die_now[0]]
            else:
                cfg = {"sim": sim_cfg}
            run_id = run_protocol_file(
                protocol_file(name, protocol, params, cfg), backend=on, db=db, progress=False
            )
            results[f"run_{name}"] = run_id
            return run_id

        # 1. form die (0, 0), then map it
        forming = {
            "v_start": 1.2,
            "v_step": 0.1,
            "v_max": 2.8,
            "width_s": 1e-6,
            "compliance_a": 1e-4,
            "i_target_a": 1e-6,
            "v_read": 0.2,
        }
        form_id = run("forming_die0", "forming", forming)
        map_id = run("map_die0", "conductance_map", {"v_read": 0.2})
        with RunStore(db) as store:
            df = store.load(form_id)
            m = store.load(map_id)
        formed = df[df["formed"] > 0.5]
        frac = formed[["row", "col"]].drop_duplicates().shape[0] / (rows * cols)
        v_form = formed["v_pulse"].to_numpy()
        rows_out.append(
            (
                "forming, die (0,0)",
                f"{frac:.1%} of {rows * cols} cells formed, median V_form "
                f"{np.median(v_form):.2f} V (model: V_bd ~ N(2.0, 0.2) V)",
            )
        )
        g0 = np.zeros((rows, cols))
        g0[m["row"].to_numpy(), m["col"].to_numpy()] = m["g"].to_numpy()
        plots.plot_conductance_map(g0, out_dir / "die0_formed_map.png", log=True)
        formed_g = g0[g0 * 0.2 >= forming["i_target_a"]]
        rows_out.append(
            (
                "conductance map, die (0,0)",
                f"formed cells: median {np.median(formed_g) * 1e6:.1f} uS, "
                f"spread (log sd) {np.std(np.log(formed_g)):.2f}",
            )
        )
        results.update(formed_fraction=frac, v_form_median=float(np.median(v_form)))

        # 2. die (1, 0): LTP/LTD pulse trains
        station.prober.step_to((1, 0))
        die_now[0] = (1, 0)
        train = {"n_pulses": n_pulses, "v_ltp": 2.0, "v_ltd": -2.0, "width_s": 80e-9, "v_read": 0.2}
        chip_id = run("pulse_train_die1", "pulse_train", train)
        with RunStore(db) as store:
            up, down, n_cells = pulse_responses_from_run(store, chip_id)
        ltp, ltd = up.g_curve_s.numpy(), down.g_curve_s.numpy()
        rows_out.append(
            (
                "LTP/LTD, die (1,0)",
                f"{n_pulses}+{n_pulses} pulses: mean G {ltp[0] * 1e6:.2f} -> "
                f"{ltp[-1] * 1e6:.2f} -> {ltd[-1] * 1e6:.2f} uS",
            )
        )

        # 3. fit the model and save it, versioned
        fit = fit_neurosim(
            up,
            down,
            n_cells=n_cells,
            fixed={"c2c_std": TRUE_DEVICE["c2c_std"]},
            source=f"{db} run {chip_id}",
        )
        fitted_path = fit.to_yaml(out_dir / "fitted_device.yaml")
        for name, scale, unit in (
            ("g_min_s", 1e6, "uS"),
            ("g_max_s", 1e6, "uS"),
            ("a_ltp", 1, "pulses"),
            ("a_ltd", 1, "pulses"),
        ):
            rows_out.append(
                (
                    f"fit {name}",
                    f"{fit.params[name] * scale:.3f} +/- {fit.stderr.get(name, 0) * scale:.3f} "
                    f"{unit} (true {TRUE_DEVICE[name] * scale:.3f})",
                )
            )
        results["fit"] = fit

        # 4. the simulator, loaded with the fit, runs the same protocol file
        sim = SimBackend({**sim_cfg, "device": str(fitted_path)})
        sim_id = run("pulse_train_simulator", "pulse_train", train, on=sim)
        with RunStore(db) as store:
            s_up, s_down, _ = pulse_responses_from_run(store, sim_id)
        s_ltp, s_ltd = s_up.g_curve_s.numpy(), s_down.g_curve_s.numpy()
        span = TRUE_DEVICE["g_max_s"] - TRUE_DEVICE["g_min_s"]
        err = max(np.abs(s_ltp - ltp).max(), np.abs(s_ltd - ltd).max()) / span
        rows_out.append(
            (
                "simulator vs chip",
                f"fitted simulator predicts the chip's LTP/LTD mean "
                f"curves within {err:.2%} of the range",
            )
        )
        results["prediction_error"] = float(err)
        import pandas as pd

        k = np.arange(2 * n_pulses + 2)
        curves = pd.DataFrame(
            {
                "pulse": np.concatenate([k, k]),
                "g": np.concatenate([ltp, ltd, s_ltp, s_ltd]),
                "phase": ["chip"] * len(k) + ["fitted simulator"] * len(k),
            }
        )
        plots.plot_pulse_response(
            curves, out_dir / "ltp_ltd_chip_vs_simulator.png", pulse="pulse", phase="phase"
        )
    finally:
        backend.close()
    results["seconds"] = time.perf_counter() - t_start
    width = max(len(a) for a, _ in rows_out) + 2
    out("")
    for a, b in rows_out:
        out(f"  {a:<{width}}{b}")
    out("")
    out(
        f"  stored in {db} (memhil runs list --db {db}); plots, the fitted model, the station "
        f"and the protocol files in {out_dir}/; {results['seconds']:.0f} s"
    )
    out(f"  next: memhil run {out_dir / 'pulse_train_simulator.yaml'} --db {db}")
    return results
