"""The one error of the TSP subset: what the instrument queues in ``errorqueue``, and the
error numbers of the Series 2600 error list that the emulators raise.

Numbers and messages: the "Error summary" table of the Series 2600 System SourceMeter
reference manual ("Error and Status Messages" appendix), as transcribed in qkit's
Keithley 2636A driver (github.com/qkitgroup/qkit, ``src/qkit/drivers/Keithley.py``,
``err_msg``). The table gives no per-error severity; the emulator queues every error as
RECOVERABLE (see ``k2600.SEVERITY_RECOVERABLE``).
"""

from __future__ import annotations

#: -222 "Parameter data out of range": a value outside a set of allowed choices.
PARAMETER_DATA_OUT_OF_RANGE = -222
#: -221 "Settings conflict": e.g. ``initiate()`` while that channel still sweeps.
SETTINGS_CONFLICT = -221
#: 1101 "Parameter too big" / 1102 "Parameter too small": a number beyond its bounds.
PARAMETER_TOO_BIG = 1101
PARAMETER_TOO_SMALL = 1102
#: 5005 "Value too big for range": a source level beyond a fixed source range.
VALUE_TOO_BIG_FOR_RANGE = 5005
#: 5059 "trigger.source.action enabled without configuration".
TRIGGER_SOURCE_UNCONFIGURED = 5059


class TspError(Exception):
    """A TSP error: queued in ``errorqueue`` (code, message) instead of a reply."""

    def __init__(self, message: str, code: int = -286):
        super().__init__(message)
        self.code = code


def beyond(x: float, lo: float | None, hi: float | None, what: str) -> TspError:
    """The error for ``x`` outside [``lo``, ``hi``] (None: that side open): 1101
    "Parameter too big" above ``hi``, else 1102 "Parameter too small"; names the bound
    and ``what`` (a NaN counts as too big)."""
    if lo is not None and x < lo:
        return TspError(f"Parameter too small: {x:g} < {lo:g} for {what}", PARAMETER_TOO_SMALL)
    bound = "" if hi is None else f" > {hi:g}"
    return TspError(f"Parameter too big: {x:g}{bound} for {what}", PARAMETER_TOO_BIG)


def not_a_choice(x: float, choices: object, what: str) -> TspError:
    """-222 "Parameter data out of range" for ``x`` not among the allowed ``choices``."""
    return TspError(
        f"Parameter data out of range: {x:g} for {what} (allowed: {choices})",
        PARAMETER_DATA_OUT_OF_RANGE,
    )
