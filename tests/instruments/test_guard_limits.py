"""The guard bounds what a source-measure unit delivers through every path: a pulse's time
at its base level, its period, the output after it, and the energy of a DC measurement."""

from __future__ import annotations

import pytest

from memhil.core.errors import LimitError
from memhil.core.limits import Limits
from memhil.instruments.guard import GuardedSourceMeter
from tests.instruments.fakes import FakeSMU

LIMITS = Limits(
    v_pulse_max_v=2.0,
    v_read_max_v=0.3,
    compliance_max_a=1e-3,
    compliance_default_a=1e-4,
    width_min_s=1e-6,
    width_max_s=1.0,
    count_max=1000,
    energy_max_j=1e-6,
    period_max_s=1.0,
)


def guarded(compliance: float = 1e-4) -> tuple[GuardedSourceMeter, FakeSMU]:
    fake = FakeSMU()
    smu = GuardedSourceMeter(fake, LIMITS)
    smu.set_source_mode("voltage")
    smu.set_compliance(compliance)
    fake.calls.clear()
    return smu, fake


def test_the_time_at_the_base_level_counts_in_the_pulse_energy():
    smu, fake = guarded()
    # at the level: 1 V * 1e-4 A * 1e-3 s = 1e-7 J; at base: 1 V * 1e-4 A * 0.099 s ~ 1e-5 J
    with pytest.raises(LimitError, match="level and base"):
        smu.pulse(1.0, 1e-3, 1, base=1.0, period_s=0.1)
    with pytest.raises(LimitError, match="level and base"):  # period None: base for a width
        smu.pulse(1.0, 1e-3, 6, base=1.0)
    assert fake.commands() == []
    smu.pulse(1.0, 1e-3, 5, base=1.0)  # 5 * (1e-7 + 1e-7) J = 1e-6 J: at the limit
    assert fake.commands()[0] == ("pulse", 1.0, 1e-3, 5, 1.0, None)


def test_the_pulse_period_is_bounded():
    smu, fake = guarded()
    with pytest.raises(LimitError, match="pulse period"):
        smu.pulse(1.0, 1e-3, 1, period_s=1e6)
    assert fake.commands() == []


def test_the_output_is_off_and_confirmed_after_a_pulse():
    smu, fake = guarded()
    smu.output(True)
    fake.calls.clear()
    smu.pulse(1.0, 1e-3, 1, base=0.5, period_s=2e-3)
    assert fake.calls[-2:] == [("output", False), ("output_is_on",)]
    assert not fake.on


def test_a_dc_measurement_is_bounded_by_its_integration_time():
    smu, fake = guarded(compliance=1e-3)
    smu.set_nplc(25)
    smu.set_level(2.0)
    smu.output(True)
    fake.calls.clear()
    # 2 V * 1e-3 A * 25 / 50 Hz = 1e-3 J, a thousand times the limit
    with pytest.raises(LimitError, match="one measurement"):
        smu.measure()
    assert ("measure",) not in fake.calls
    smu.set_nplc(0.01)  # 2 V * 1e-3 A * 2e-4 s = 4e-7 J
    smu.measure()
    assert fake.calls[-1] == ("measure",)


def test_an_unknown_integration_time_is_taken_as_the_longest():
    smu, fake = guarded(compliance=1e-3)
    smu.set_level(0.5)
    smu.output(True)
    fake.calls.clear()
    with pytest.raises(LimitError, match="one measurement"):  # 0.5 V * 1e-3 A * 0.5 s
        smu.measure()
    smu.set_level(0.0)  # nothing at the device: always allowed
    smu.measure()
    assert fake.calls[-1] == ("measure",)


def test_on_the_mock_lab_a_pulse_leaves_the_outputs_off(tmp_path):
    from memhil.instruments.station import Station
    from memhil.mock_hw.lab import MockLab
    from tests.backends import _mock_station

    cfg = _mock_station("cell", 4, 6)
    cfg["limits"]["energy_max_j"] = 1e-6
    lab = MockLab(cfg).start()
    st = Station.from_config(lab.station_config())
    try:
        smu = st.smus["smu.smua"]
        st.matrix.connect_many([(1, 1), (2, 5)])
        smu.set_source_mode("voltage")
        smu.set_compliance(1e-4)
        with pytest.raises(LimitError, match="level and base"):
            smu.pulse(1.0, 1e-3, 1, base=1.0, period_s=0.5)
        assert lab.sources_off()
        smu.pulse(1.0, 1e-4, 1, base=0.2)
        assert lab.sources_off() and not smu.output_is_on()
    finally:
        st.close()
        lab.stop()
