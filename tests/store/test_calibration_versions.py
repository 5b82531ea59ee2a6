"""The run store's ``calibration_versions`` metadata: every fitted device-parameter file a
run's backend uses is recorded with its path, content hash and version; a run on built-in
models records nothing."""

from __future__ import annotations

import copy
import hashlib

import yaml

from memhil.calibration.fit.neurosim import FitResult
from memhil.runs.protocol_run import run_protocol_file
from memhil.store import RunStore
from tests.backends import _mock_station

PARAMS = {"g_min_s": 1e-6, "g_max_s": 9e-6, "a_ltp": 5.0, "a_ltd": 7.0, "p_max": 31.0}


def _fit_file(tmp_path, name="fitted.yaml", **change) -> tuple:
    fit = FitResult(
        model="neurosim",
        params={**PARAMS, **change},
        stderr={"a_ltp": 0.1},
        residual_rms=1e-8,
        n_points=80,
        source="test",
    )
    path = fit.to_yaml(tmp_path / name)
    return fit, path


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(tmp_path, backend_line: str, backend=None) -> dict:
    proto = tmp_path / "map.yaml"
    proto.write_text("protocol: conductance_map\n" + backend_line)
    db = tmp_path / "runs.db"
    rid = run_protocol_file(proto, db=db, progress=False, backend=backend)
    with RunStore(db) as store:
        return store.metadata(rid)["calibration_versions"]


def test_simulator_with_fitted_device_file(tmp_path):
    fit, path = _fit_file(tmp_path)
    versions = _run(tmp_path, "backend: {sim: {rows: 2, cols: 2, device: fitted.yaml}}\n")
    assert versions == {
        "sim.device": {
            "path": str(path.resolve()),
            "sha256": _sha(path),
            "version": fit.version,
            "fit_source": "test",
            "model": "neurosim",
        }
    }


def test_mock_lab_with_fitted_chip_and_mock_device(tmp_path):
    fit, path = _fit_file(tmp_path)
    other, other_path = _fit_file(tmp_path, "chip.yaml", a_ltp=6.0)
    assert other.version != fit.version
    st = copy.deepcopy(_mock_station("parallel", 2, 2))
    st["instruments"]["board"]["address"] = "memhilboard://calversions"
    st["chip"]["device"] = str(other_path.resolve())  # absolute: read by the backend
    st["mock"]["device"] = "fitted.yaml"  # relative to the station file
    (tmp_path / "station.yaml").write_text(yaml.safe_dump(st))
    versions = _run(tmp_path, "backend: {mock_lab: station.yaml}\n")
    assert versions["mock.device"]["version"] == fit.version
    assert versions["mock.device"]["sha256"] == _sha(path)
    assert versions["mock.device"]["path"] == str(path.resolve())
    assert versions["chip.device"]["version"] == other.version
    assert versions["chip.device"]["sha256"] == _sha(other_path)


def test_builtin_models_record_nothing(tmp_path):
    assert _run(tmp_path, "backend: {sim: {rows: 2, cols: 2, device: pcm}}\n") == {}
