"""Shared pytest options: ``--bench station.yaml`` enables tests that need a real bench."""

import pytest


def pytest_addoption(parser):
    parser.addoption("--bench", action="store", default=None,
                     help="Station YAML of a real bench; enables tests marked 'bench'")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--bench"):
        return
    skip = pytest.mark.skip(reason="needs a real bench: pass --bench station.yaml")
    for item in items:
        if "bench" in item.keywords:
            item.add_marker(skip)
