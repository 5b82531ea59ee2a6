"""``SourceMeter`` over PyMeasure's unmodified ``Keithley4200`` (KXCI user mode, 4200A-SCS),
one adapter per SMU the instrument reports (``*OPT?``); pulses through a 4225-PMU channel
whose 4225-RPM shares the SMU's output (``options.rpm``).

* ``set_level``/``output``: the driver's ``voltage_setpoint``/``current_setpoint``
  (``DV``/``DI`` with range auto and the compliance) and ``disable`` (``DVn``); with the
  output off a level is kept and forced when the output goes on;
* ``measure``: ``TI``/``TV`` asked directly, because the driver's ``current``/``voltage``
  drop the reading's status characters and memhil needs its compliance flag (``C``);
* ``sweep``: KXCI user mode has no buffered sweep: the levels are stepped from the host
  and read one by one (slow: one LAN round trip per point);
* ``pulse``: KXCI user mode has no timed SMU pulse. An SMU cabled through a 4225-RPM pulses
  with the PMU channel of that RPM (``options.rpm: {smu1: PMU1-1}``): SMU off, RPM to the
  pulse path, a standard-mode pulse train of the KXCI ``:PMU:`` commands (4200A-SCS KXCI
  programming manual, "KXCI PGU and PMU commands", Clarius >= 1.13; Tektronix's KXCI PMU
  examples), RPM back to the SMU path, SMU at the base level. 10 V range only (its timing
  floors: width >= 40 ns, rise/fall 20 ns, off time > 40 ns, period <= 1 s); the PMU limits
  no current (the compliance is not enforced during a pulse). An SMU without an RPM
  refuses.
* ``output_is_on``: KXCI has no output-state query; the adapter's state (from its own
  commands) is confirmed by a voltage reading: an SMU it switched off that still reads
  more than ``SAFE_VOLTAGE_V`` counts as on; with an RPM, a PMU test still running
  (``:PMU:TEST:STATUS?``) counts as on too.

The PMU commands go through the PyMeasure driver's connection (KXCI serves one client):
py4200a also speaks them, but drives the whole 4200 through its own connection object
(pre-1.0, "work in progress" in its README), while the SMUs here are PyMeasure's.
See docs/bench-bringup.md.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from pymeasure.instruments.keithley.keithley4200 import Keithley4200

from memhil.instruments.capabilities import Measurement, SourceMode, SweepResult
from memhil.instruments.registry import InstrumentRanges, register_instrument

log = logging.getLogger(__name__)

#: |V| an SMU switched off may read and still count as off (the 4200-SMU's offset).
SAFE_VOLTAGE_V = 1e-3
_READING = re.compile(r"([A-Z])([A-Z])([IV])([+-]?\d+(?:\.\d*)?(?:E[+-]?\d+)?)$", re.I)
_RPM_ID = re.compile(r"PMU(\d)-([12])$")

#: 4225-PMU standard pulse on the 10 V range (``:PMU:PULSE:TIMES`` parameter ranges): the
#: shortest width (FWHM), the rise/fall time memhil uses (the shortest), the shortest off
#: time between pulses, and the longest period.
PMU_RANGE_V = 10.0
PMU_WIDTH_MIN_S = 40e-9
PMU_TRANSITION_S = 20e-9
PMU_OFF_MIN_S = 40e-9
PMU_PERIOD_MAX_S = 1.0
#: ``:PMU:RPM:CONFIGURE`` signal paths.
RPM_PULSE, RPM_SMU = 0, 2
#: How long past a train's own duration the adapter polls ``:PMU:TEST:STATUS?``.
PMU_DONE_MARGIN_S = 10.0


class K4200SourceMeter:
    """SMU ``k`` of a ``Keithley4200`` as a ``SourceMeter``."""

    def __init__(self, driver: Keithley4200, k: int, name: str, rpm: str | None = None):
        self.driver = driver
        self.k = int(k)
        self.smu = getattr(driver, f"smu{k}")
        self.name = name
        self.mode: SourceMode = "voltage"
        self.compliance = 1e-3
        self.level = 0.0
        self._on = False
        #: the 4225-RPM on this SMU's output (``PMU<card>-<ch>``) and its KXCI PMU channel
        self.rpm = rpm
        self.pmu_channel = _pmu_channel(rpm) if rpm is not None else None
        self._warned_compliance = False

    def _force(self) -> None:
        setpoint = (0, self.level, self.compliance)  # range 0: autorange
        if self.mode == "voltage":
            self.smu.voltage_setpoint = setpoint
        else:
            self.smu.current_setpoint = setpoint

    def set_source_mode(self, mode: SourceMode) -> None:
        if mode not in ("voltage", "current"):
            raise ValueError(
                f"{self.name}: source mode must be 'voltage' or 'current', got {mode!r}"
            )
        self.mode = mode

    def set_compliance(self, limit: float) -> None:
        self.compliance = float(limit)
        if self._on:
            self._force()

    def set_nplc(self, nplc: float) -> None:
        """KXCI user mode sets integration time only from the 4200's front end (Clarius /
        KCon); accepted for the contract and recorded."""
        if not nplc > 0:
            raise ValueError(f"{self.name}: NPLC must be > 0, got {nplc}")
        self.nplc = float(nplc)

    def set_level(self, value: float) -> None:
        self.level = float(value)
        if self._on:
            self._force()

    def output(self, on: bool) -> None:
        if on:
            self._on = True
            self._force()
        else:
            self.smu.disable()
            self._on = False

    def _reading(self, kind: str) -> tuple[float, bool]:
        reply = self.driver.ask(f"US;T{kind}{self.k}").strip()
        m = _READING.match(reply)
        if m is None:
            raise ValueError(f"{self.name}: cannot parse the KXCI reading {reply[:80]!r}")
        return float(m.group(4)), m.group(1).upper() == "C"

    def output_is_on(self) -> bool:
        if self._on:
            return True
        if self.pmu_channel is not None and self._pmu_running():
            return True
        v, _ = self._reading("V")
        return abs(v) > SAFE_VOLTAGE_V

    def measure(self) -> Measurement:
        voltage = self.mode == "voltage"
        measured, limited = self._reading("I" if voltage else "V")
        sourced = self._reading("V" if voltage else "I")[0] if limited else self.level
        if voltage:
            return Measurement(voltage_v=sourced, current_a=measured, in_compliance=limited)
        return Measurement(voltage_v=measured, current_a=sourced, in_compliance=limited)

    def in_compliance(self) -> bool:
        return self.measure().in_compliance

    def sweep(self, start: float, stop: float, points: int) -> SweepResult:
        if points < 2:
            raise ValueError(f"{self.name}: a sweep needs at least 2 points, got {points}")
        levels = np.linspace(start, stop, points)
        if not self._on:
            self.output(True)
        points_ = []
        for level in levels:
            self.set_level(float(level))
            points_.append(self.measure())
        return SweepResult(
            source=levels,
            voltage_v=np.array([p.voltage_v for p in points_]),
            current_a=np.array([p.current_a for p in points_]),
            in_compliance=np.array([p.in_compliance for p in points_]),
            mode=self.mode,
        )

    def pulse(
        self,
        level: float,
        width_s: float,
        count: int = 1,
        *,
        base: float = 0.0,
        period_s: float | None = None,
    ) -> None:
        """``count`` pulses through the PMU channel of this SMU's RPM (10 V range), output
        left at ``base`` on the SMU. Without ``period_s`` the off time equals the width
        (at least 100 ns)."""
        if self.pmu_channel is None:
            raise NotImplementedError(
                f"{self.name}: the 4200A-SCS SMUs have no timed pulse in KXCI user mode; "
                f"cable the SMU through a 4225-RPM and name it in the station's "
                f"options.rpm (e.g. {{smu{self.k}: PMU1-{self.k}}}) (docs/bench-bringup.md)"
            )
        period = width_s + max(width_s, 100e-9) if period_s is None else float(period_s)
        self._check_pulse(level, base, width_s, period, count)
        if not self._warned_compliance:
            log.warning("%s: the 4225-PMU limits no current on a pulse (compliance)", self.name)
            self._warned_compliance = True
        ch = self.pmu_channel
        if self._on:
            self.smu.disable()  # the RPM switches only with its sources off
        self._set(f":PMU:RPM:CONFIGURE {self.rpm}, {RPM_PULSE}")
        try:
            for command in (
                ":PMU:INIT 0",  # standard pulse mode, channel settings to defaults
                f":PMU:SOURCE:RANGE {ch}, {PMU_RANGE_V:g}",
                f":PMU:PULSE:TIMES {ch}, {period:.9g}, {width_s:.9g}, "
                f"{PMU_TRANSITION_S:g}, {PMU_TRANSITION_S:g}",
                f":PMU:PULSE:TRAIN {ch}, {base:.9g}, {level:.9g}",
                f":PMU:PULSE:BURST:COUNT {int(count)}",
                f":PMU:OUTPUT:STATE {ch}, 1",
                ":PMU:EXECUTE",
            ):
                self._set(command)
            self._wait_for_pmu(count * period + PMU_DONE_MARGIN_S)
            self._set(f":PMU:OUTPUT:STATE {ch}, 0")
        except BaseException:
            self._set(":PMU:ABORT")  # stops the train and turns the PMU outputs off
            raise
        self._set(f":PMU:RPM:CONFIGURE {self.rpm}, {RPM_SMU}")
        self.level = float(base)
        if self._on:
            self._force()

    def _check_pulse(
        self, level: float, base: float, width_s: float, period_s: float, count: int
    ) -> None:
        """The 10 V range's timing and level ranges, refused before anything is sent."""
        if max(abs(level), abs(base)) > PMU_RANGE_V:
            raise ValueError(
                f"{self.name}: pulse level {level:g} V / base {base:g} V beyond the "
                f"4225-PMU's {PMU_RANGE_V:g} V range (the 40 V range is not driven)"
            )
        if not width_s >= PMU_WIDTH_MIN_S:
            raise ValueError(
                f"{self.name}: pulse width {width_s:g} s below the 4225-PMU's {PMU_WIDTH_MIN_S:g} s"
            )
        off_s = period_s - width_s - PMU_TRANSITION_S  # half of each edge lies outside FWHM
        if not (off_s > PMU_OFF_MIN_S and period_s <= PMU_PERIOD_MAX_S):
            raise ValueError(
                f"{self.name}: pulse period {period_s:g} s for width {width_s:g} s: the "
                f"4225-PMU needs an off time > {PMU_OFF_MIN_S:g} s and a period <= "
                f"{PMU_PERIOD_MAX_S:g} s"
            )
        if int(count) != count or count < 1:
            raise ValueError(f"{self.name}: pulse count must be an integer >= 1, got {count}")

    def _set(self, command: str) -> None:
        """A KXCI command acknowledged with ``ACK`` (the driver raises on anything else)."""
        self.driver.write(command)
        self.driver.check_set_errors()

    def _pmu_running(self) -> bool:
        reply = self.driver.ask(":PMU:TEST:STATUS?").strip()
        if reply not in ("0", "1"):
            raise ValueError(f"{self.name}: unexpected :PMU:TEST:STATUS? reply {reply[:80]!r}")
        return reply == "1"

    def _wait_for_pmu(self, deadline_s: float) -> None:
        """Poll ``:PMU:TEST:STATUS?`` until the train is done (1 running, 0 idle)."""
        t_end = time.monotonic() + deadline_s
        while self._pmu_running():
            if time.monotonic() > t_end:
                raise TimeoutError(
                    f"{self.name}: the PMU pulse train still runs after {deadline_s:g} s"
                )
            time.sleep(0.01)

    def safe_state(self) -> None:
        self.level = 0.0
        self.output(False)
        if self.pmu_channel is not None:
            self._set(f":PMU:OUTPUT:STATE {self.pmu_channel}, 0")

    def select_smu_path(self) -> None:
        """SMU off, then its RPM to the SMU path (reads and DC levels reach the device)."""
        self.output(False)
        self._set(f":PMU:RPM:CONFIGURE {self.rpm}, {RPM_SMU}")

    def resync(self) -> None:
        """``Resyncable``: clear the buffer (``BC``, acknowledged) and the identity query
        (``ID``) must name a 4200."""
        self.driver.clear()
        ident = str(self.driver.id)
        if "4200" not in ident:
            from memhil.instruments.session import ResyncError

            raise ResyncError(f"{self.name}: unexpected identity {ident!r}")

    def close(self) -> None:
        self.driver.adapter.close()


def _pmu_channel(rpm: str) -> int:
    """KXCI's PMU channel number of an RPM id: ``PMU<card>-<ch>`` -> 2 (card - 1) + ch."""
    m = _RPM_ID.match(str(rpm))
    if m is None:
        raise ValueError(f"options.rpm: {rpm!r} is no RPM id (PMU<card>-<1|2>, e.g. PMU1-1)")
    return 2 * (int(m.group(1)) - 1) + int(m.group(2))


def create(
    address: str, name: str, rpm: Mapping[str, str] | None = None, **options: Any
) -> dict[str, K4200SourceMeter]:
    """Open a 4200A-SCS running KXCI at ``address`` (LAN: ``TCPIP0::<ip>::1225::SOCKET``)
    and return its SMUs (``smu1``, ...). ``rpm``: SMU -> the 4225-RPM on its output
    (``{smu1: PMU1-1}``); those SMUs pulse through the PMU and start on the SMU path."""
    driver = Keithley4200(address, **options)
    ids = sorted(int(o.strip()[-1]) for o in driver.options if "SMU" in o.upper())
    rpm = dict(rpm or {})
    unknown = sorted(set(rpm) - {f"smu{k}" for k in ids})
    if unknown:
        driver.adapter.close()
        raise ValueError(f"options.rpm: {unknown} not among the 4200's SMUs {ids}")
    smus = {
        f"smu{k}": K4200SourceMeter(driver, k, f"{name}.smu{k}", rpm.get(f"smu{k}")) for k in ids
    }
    for smu in smus.values():
        if smu.rpm is not None:
            smu.select_smu_path()
    return smus


# 4200-SMU: +-210 V, 100 mA (4210-SMU: 1 A); 4200A-SCS data sheet
register_instrument(
    "keithley4200a",
    "smu",
    create,
    options=("visa_library", "timeout", "rpm"),
    visa_option="visa_library",
    # 4225-PMU 10 V range: the shortest pulse of a 4200 with a PMU (SMUs alone refuse)
    ranges=InstrumentRanges(v_max_v=210.0, i_max_a=0.1, width_min_s=PMU_WIDTH_MIN_S),
)

__all__ = ["PMU_WIDTH_MIN_S", "SAFE_VOLTAGE_V", "K4200SourceMeter", "create"]
