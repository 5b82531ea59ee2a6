"""A small run store written with the RunStore API: an I-V run of two cells (completed), a
pulse train still running, a run continued in a second dataset, and a sweep that records
one point per trial."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from memhil.store import RunStore


def write_store(db: Path) -> dict[str, int]:
    ids: dict[str, int] = {}
    with RunStore(db) as store:
        iv = store.new_run(
            "iv",
            keys=["cycle", "tile", "row", "col"],
            values=["v", "i"],
            metadata={
                "protocol_config": {"protocol": "iv_sweep", "params": {}},
                "backend_config": "sim",
                "preflight": {"records": 6, "units": 1},
            },
        )
        for k, v in enumerate((0.0, 0.5, 1.0)):
            for cell in ((0, 0, 0), (0, 1, 1)):
                iv.add(cycle=0, tile=cell[0], row=cell[1], col=cell[2], v=v, i=1e-6 * v * (k + 1))
        iv.close("completed")
        ids["iv"] = iv.run_id

        running = store.new_run(
            "ltp",
            keys=["phase", "n", "tile", "row", "col"],
            values=["g"],
            metadata={
                "protocol_config": {"protocol": "pulse_train"},
                "backend_config": {"mock_lab": "bench.yaml"},
                "preflight": {"records": 40, "units": 2},
            },
        )
        running.start_unit('["ltp"]')
        running.commit_unit(
            '["ltp"]',
            [
                {"phase": "ltp", "n": n, "tile": 0, "row": 0, "col": 0, "g": 1e-6 * n}
                for n in range(10)
            ],
        )
        ids["running"] = running.run_id  # left open: "running"

        first = store.new_run(
            "chained",
            keys=["index_"],
            values=["t_s", "g"],
            metadata={"protocol_config": {"protocol": "retention"}},
        )
        first.add(index_=0, t_s=1.0, g=float("nan"))
        first.close("completed")
        cont = store.open_run(first.run_id)  # completed in QCoDeS: a continuation run
        cont.add(index_=1, t_s=10.0, g=2e-6)
        cont.close("interrupted")
        ids["chained"], ids["continuation"] = first.run_id, cont.run_id

        sweep = store.new_run(
            "sweep",
            keys=["status"],
            values=["v_ltp_v", "accuracy"],
            metadata={"memhil_kind": "sweep", "sweep_config": {"axes": ["v_ltp_v"]}},
        )
        for k, (v, acc) in enumerate(((1.0, 0.8), (1.5, 0.9), (2.0, float("nan")))):
            sweep.add(status="completed" if k < 2 else "running", v_ltp_v=v, accuracy=acc)
        ids["sweep"] = sweep.run_id

        # a training run as memhil.runs.experiment_run stores it: one point per metric
        exp = store.new_run(
            "train",
            keys=["phase", "epoch", "step", "metric"],
            values=["value"],
            metadata={"memhil_kind": "experiment", "algorithm": "mars"},
            key_types={"phase": str, "epoch": int, "step": int, "metric": str},
        )
        for epoch in range(2):
            for metric, v in (("loss", 1.0 / (epoch + 1)), ("accuracy", 0.5 + 0.2 * epoch)):
                exp.add(phase="epoch", epoch=epoch, step=-1, metric=metric, value=v)
            exp.add(phase="epoch", epoch=epoch, step=-1, metric="set_pulses", value=100 * epoch)
            exp.add(phase="train", epoch=epoch, step=0, metric="loss", value=2.0)
        exp.close("completed")
        ids["experiment"] = exp.run_id

        # a sweep as memhil.sweeps stores it: its own run, and one run per trial tagged
        tagged = store.new_run(
            "lr_sweep", keys=["trial"], values=[], metadata={"sweep": {"axes": ["lr"]}}
        )
        tagged.close("completed")
        ids["tagged_sweep"] = tagged.run_id
        for trial, (lr, acc) in enumerate(((0.1, 0.7), (0.01, 0.85))):
            tag = {
                "sweep": tagged.run_id,
                "trial": trial,
                "axes": {"lr": lr},
                "metrics": {"accuracy": acc},
            }
            t = store.new_run(
                "trial", keys=["epoch"], values=["accuracy"], metadata={"sweep_trial": tag}
            )
            t.add(epoch=0, accuracy=acc)
            t.close("completed" if trial == 0 else "failed")
            ids[f"trial{trial}"] = t.run_id
    return ids


@pytest.fixture(scope="session")
def _store_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    db = tmp_path_factory.mktemp("monitor_template") / "runs.db"
    return db, write_store(db)  # QCoDeS commits take ~1 s here: written once, copied


@pytest.fixture()
def store_db(_store_template, tmp_path: Path) -> tuple[Path, dict[str, int]]:
    template, ids = _store_template
    db = tmp_path / "runs.db"
    shutil.copyfile(template, db)
    return db, dict(ids)
