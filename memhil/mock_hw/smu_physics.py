"""Source physics of the emulated source-measure units (the Keithley 2600B and 2450
emulators): the operating point of a voltage or current source with a compliance limit
into the chip, and a reading that holds the drive for its integration time.

Voltage source in compliance: when ``|I| > limit`` the terminal voltage is lowered until
``|I| = limit`` and the reported current is clamped at the limit (current-limit bit).
Current source: the voltage is solved for the programmed current and clamped at the
voltage limit (voltage-limit bit). Nothing here sleeps in wall time: the bench holds the
drive on the chip's virtual clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from memhil.mock_hw.bench import MockBench, SourceTerminal

#: Condition bits of a solved operating point (as the 2600B's
#: ``status.measurement.instrument.smuX.condition`` reports them, and QCoDeS decodes them).
CONDITION_VOLTAGE_LIMIT = 0x01
CONDITION_CURRENT_LIMIT = 0x02

_COMPLIANCE_ITERATIONS = 12
_COMPLIANCE_RTOL = 1e-6


def solve_voltage_source(
    current_at: Callable[[float], float], level: float, limit: float
) -> tuple[float, float, int]:
    """Operating point of a voltage source at ``level`` (V) with current limit ``limit`` (A)
    into a load whose current at a terminal voltage is ``current_at(v)``.

    Returns (terminal voltage, reported current, condition bits). In compliance the source
    lowers its voltage until ``|I| = limit`` (scale by ``limit / |I|`` and re-solve the
    network, a few iterations: exact for a linear load, converging for the sinh-like and
    sneak-path loads of the chip) and the reported current is clamped at the limit, so
    the current returned never exceeds it.
    """
    v = level
    i = current_at(v)
    if abs(i) <= limit:
        return v, i, 0
    for _ in range(_COMPLIANCE_ITERATIONS):
        if i == 0.0:
            break
        v = v * limit / abs(i)
        i = current_at(v)
        if abs(abs(i) - limit) <= _COMPLIANCE_RTOL * limit:
            break
    return v, math.copysign(limit, i if i != 0 else level), CONDITION_CURRENT_LIMIT


def solve_current_source(
    current_at: Callable[[float], float], level: float, limit: float
) -> tuple[float, float, int]:
    """Operating point of a current source at ``level`` (A) with voltage limit ``limit``
    (V): the voltage is solved for the current on [0, ±limit] (Illinois regula falsi,
    Dowell and Jarratt, BIT 11, 1971; |I| is monotonic in |V|); when even the limit cannot
    push the current the voltage sits at the limit and the voltage-limit bit is set.
    Returns (voltage, current, condition)."""
    if level == 0.0:
        return 0.0, current_at(0.0), 0
    sign = 1.0 if level > 0 else -1.0
    v_hi = sign * limit
    i_hi = current_at(v_hi)
    if abs(i_hi) < abs(level) or i_hi * sign <= 0:
        return v_hi, i_hi, CONDITION_VOLTAGE_LIMIT
    a, fa = 0.0, current_at(0.0) - level
    b, fb = v_hi, i_hi - level
    side = 0
    v, fv = b, fb
    for _ in range(80):
        v = (a * fb - b * fa) / (fb - fa) if fb != fa else 0.5 * (a + b)
        fv = current_at(v) - level
        if abs(fv) <= 1e-9 * abs(level):
            break
        if fv * fb > 0:
            b, fb = v, fv
            if side == -1:
                fa *= 0.5
            side = -1
        else:
            a, fa = v, fv
            if side == 1:
                fb *= 0.5
            side = 1
    return v, fv + level, 0


def settle(
    bench: MockBench,
    terminal: SourceTerminal,
    *,
    output_on: bool,
    voltage_mode: bool,
    level: float,
    limit: float,
) -> tuple[float, float, int]:
    """Solve and apply the operating point of ``terminal`` now (no time passes): the
    terminal holds the compliant voltage afterwards. ``level`` and ``limit`` are V and A
    in voltage mode, A and V in current mode. Returns (V, I, condition bits); all zero
    with the output off."""
    key = terminal.key
    with bench.lock:
        terminal.output_on = output_on
        if not output_on:
            terminal.voltage_v = 0.0
            return 0.0, 0.0, 0

        def current_at(v: float) -> float:
            return bench.current(key, override={key: v})

        solve = solve_voltage_source if voltage_mode else solve_current_source
        v, i, condition = solve(current_at, level, limit)
        terminal.voltage_v = v
        return v, i, condition


def integrate(
    bench: MockBench,
    settle_now: Callable[[], tuple[float, float]],
    integration_s: float,
    delay_s: float = 0.0,
) -> tuple[float, float]:
    """One reading: hold the (re-solved) drive for ``delay_s`` and then for the integration
    time ``integration_s`` on the virtual clock, and return the (V, I) of the operating
    point at its end. ``settle_now`` re-solves and applies the operating point; it runs
    before and after every hold, so the drive held on the chip is always the compliant
    one while the cell switches."""
    with bench.lock:
        settle_now()
        if delay_s > 0:
            bench.hold(delay_s)
            settle_now()
        bench.hold(integration_s)
        return settle_now()
