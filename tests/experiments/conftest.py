"""Experiment files for the tests: the shipped examples, shortened, written to tmp."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "experiments"
MOCK_STATION = ROOT / "examples" / "mock_station.yaml"


@pytest.fixture
def experiment_file(tmp_path):
    """``experiment_file(example, **sections)``: the example file with top-level sections
    updated (``train={"epochs": 2}`` merges into ``train:``; ``backend=...`` replaces),
    written to tmp; returns its path."""

    def make(example: str, name: str = "exp.yaml", **sections) -> Path:
        data = yaml.safe_load((EXAMPLES / example).read_text())
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict) and key != "backend":
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return make
