"""``SourceMeter`` over PyMeasure's unmodified ``Keithley4200`` (KXCI user mode, 4200A-SCS),
one adapter per SMU the instrument reports (``*OPT?``).

* ``set_level``/``output``: the driver's ``voltage_setpoint``/``current_setpoint``
  (``DV``/``DI`` with range auto and the compliance) and ``disable`` (``DVn``); with the
  output off a level is kept and forced when the output goes on;
* ``measure``: ``TI``/``TV`` asked directly, because the driver's ``current``/``voltage``
  drop the reading's status characters and memhil needs its compliance flag (``C``);
* ``sweep``: KXCI user mode has no buffered sweep: the levels are stepped from the host
  and read one by one (slow: one LAN round trip per point);
* ``pulse``: KXCI user mode has no instrument-timed pulse, and a host-timed level change
  is no pulse of a known width; pulses on a 4200A-SCS need the 4225-PMU through KULT user
  libraries, which memhil does not drive (docs/bench-bringup.md). ``pulse`` raises.
* ``output_is_on``: KXCI has no output-state query; the adapter's state (from its own
  commands) is confirmed by a voltage reading: an SMU it switched off that still reads
  more than ``SAFE_VOLTAGE_V`` counts as on.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from pymeasure.instruments.keithley.keithley4200 import Keithley4200

from memhil.instruments.capabilities import Measurement, SourceMode, SweepResult
from memhil.instruments.registry import InstrumentRanges, register_instrument

#: |V| an SMU switched off may read and still count as off (the 4200-SMU's offset).
SAFE_VOLTAGE_V = 1e-3
_READING = re.compile(r"([A-Z])([A-Z])([IV])([+-]?\d+(?:\.\d*)?(?:E[+-]?\d+)?)$", re.I)


class K4200SourceMeter:
    """SMU ``k`` of a ``Keithley4200`` as a ``SourceMeter``."""

    def __init__(self, driver: Keithley4200, k: int, name: str):
        self.driver = driver
        self.k = int(k)
        self.smu = getattr(driver, f"smu{k}")
        self.name = name
        self.mode: SourceMode = "voltage"
        self.compliance = 1e-3
        self.level = 0.0
        self._on = False

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
        raise NotImplementedError(
            f"{self.name}: the 4200A-SCS SMUs have no timed pulse in KXCI user mode; pulses "
            f"need the 4225-PMU (KULT), not driven by memhil (docs/bench-bringup.md)"
        )

    def safe_state(self) -> None:
        self.level = 0.0
        self.output(False)

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


def create(address: str, name: str, **options: Any) -> dict[str, K4200SourceMeter]:
    """Open a 4200A-SCS running KXCI at ``address`` (LAN: ``TCPIP0::<ip>::1225::SOCKET``)
    and return its SMUs (``smu1``, ...)."""
    driver = Keithley4200(address, **options)
    ids = sorted(int(o.strip()[-1]) for o in driver.options if "SMU" in o.upper())
    return {f"smu{k}": K4200SourceMeter(driver, k, f"{name}.smu{k}") for k in ids}


# 4200-SMU: +-210 V, 100 mA (4210-SMU: 1 A); 4200A-SCS data sheet
register_instrument(
    "keithley4200a",
    "smu",
    create,
    options=("visa_library", "timeout"),
    visa_option="visa_library",
    ranges=InstrumentRanges(v_max_v=210.0, i_max_a=0.1),
)

__all__ = ["SAFE_VOLTAGE_V", "K4200SourceMeter", "create"]
