"""The third-party client scripts of ``tests/mock_hw/clients/`` (PyMeasure Keithley2600,
Keithley2450 and Velox, QCoDeS Keithley2636B and B2201, raw pyvisa), each run unchanged
against ``memhil mock-lab serve clients/station.yaml`` in its own process, reached
through the bench addresses of the station file and the ``@memhil`` VISA library; every
script ends by asserting that no error is left in any instrument's error queue."""

from __future__ import annotations

import importlib

import pytest
from qcodes.instrument import Instrument

from memhil.mock_hw import visa as mock_visa
from tests.mock_hw.clients.common import STATION
from tests.served_lab import serve_mock_lab

CLIENTS = [
    "pymeasure_velox",
    "pymeasure_keithley2600",
    "pymeasure_keithley2450",
    "qcodes_keithley2636b",
    "qcodes_b220x",
    "raw_pyvisa",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    live = tmp_path_factory.mktemp("clients") / "live.yaml"
    with serve_mock_lab(STATION, live) as lab:
        yield lab
    assert lab.returncode == 0, lab.out
    assert mock_visa.served_resources(STATION) is None  # unregistered when it stopped


@pytest.mark.slow  # a served lab in its own process, and six lab scripts
@pytest.mark.parametrize("client", CLIENTS)
def test_client_script_runs_unchanged_against_the_served_lab(served, client):
    module = importlib.import_module(f"tests.mock_hw.clients.{client}")
    try:
        module.main(f"{STATION}@memhil")
    finally:
        Instrument.close_all()
    assert not mock_visa._labs  # the served lab answered: none was started in this process
