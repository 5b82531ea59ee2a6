"""``SwitchMatrix`` adapter over the unmodified QCoDeS Keysight B2200/B2201 driver.

Ports are the matrix inputs (1..14, where the SMUs plug in), lines its outputs (1..48,
the array lines). ``connect_many`` closes a whole channel list in one transaction
(``connect_paths``); ``connections`` is the set the instrument reports (``:CLOS:CARD?``,
parsed by the driver); ``open_all`` is ``disconnect_all``. Every driver call clears the
status first and polls ``*ESR?`` after; a non-zero status byte (the instrument rejected
the command) is raised here as ``SwitchMatrixError`` with the error queue's contents,
instead of the driver's warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

from qcodes.instrument_drivers.Keysight import KeysightB2201
from qcodes.instrument_drivers.Keysight.keysight_b220x import KeysightB220X

from memhil.instruments.registry import QCODES_VISA_OPTIONS, InstrumentRanges, register_instrument
from memhil.instruments.session import idn_matches, resync_qcodes


class SwitchMatrixError(RuntimeError):
    """The matrix rejected a command (its error queue is in the message)."""


class B220xMatrix:
    """A Keysight B2200/B2201 as a memhil ``SwitchMatrix``."""

    def __init__(self, driver: KeysightB220X | str, name: str = "matrix", **driver_kwargs: Any):
        if isinstance(driver, str):
            driver = KeysightB2201(name, driver, **driver_kwargs)
        self.driver = driver
        self.name = name

    def connect(self, port: int, line: int) -> None:
        self._checked(self.driver.connect, int(port), int(line))

    def disconnect(self, port: int, line: int) -> None:
        self._checked(self.driver.disconnect, int(port), int(line))

    def connect_many(self, pairs: Sequence[tuple[int, int]]) -> None:
        pairs = [(int(p), int(o)) for p, o in pairs]
        for p, o in pairs:
            KeysightB220X._available_input_ports.validate(p)
            KeysightB220X._available_output_ports.validate(o)
        if pairs:
            self._checked(self.driver.connect_paths, pairs)

    def disconnect_many(self, pairs: Sequence[tuple[int, int]]) -> None:
        pairs = [(int(p), int(o)) for p, o in pairs]
        if pairs:
            self._checked(self.driver.disconnect_paths, pairs)

    def connections(self) -> set[tuple[int, int]]:
        return set(self.driver.connections())

    def open_all(self) -> None:
        self._checked(self.driver.disconnect_all)

    def safe_state(self) -> None:
        """All relays open (bias and ground modes off first, so no output stays tied to
        the bias or ground port)."""
        self.driver.bias_mode(False)
        self.driver.gnd_mode(False)
        self.open_all()

    def resync(self) -> None:
        """``Resyncable``: drain, ``*CLS``, ``*IDN?`` must name the model and serial the
        driver connected to; re-open the VISA session if that fails. Relays are left as
        they are."""
        drv = self.driver
        resync_qcodes(
            drv,
            identify=lambda: drv.ask("*IDN?"),
            expected=lambda r: idn_matches(r, drv.IDN.cache.get(get_if_invalid=False)),
        )

    def close(self) -> None:
        self.driver.close()

    def _checked(self, fn: Callable[..., Any], *args: Any) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn(*args)
        status = [w for w in caught if "status byte" in str(w.message)]
        for w in caught:
            if w not in status:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if status:
            errors = []
            for _ in range(32):
                err = str(self.driver.get_error())
                if err.lstrip("+").split(",")[0].strip() == "0":
                    break
                errors.append(err)
            raise SwitchMatrixError(
                f"{self.name}: {fn.__name__}{args} rejected: "
                f"{'; '.join(errors) or 'status byte set'}"
            )


def create(address: str, name: str, **options: Any) -> B220xMatrix:
    """Open a B2201 at ``address`` (``options`` go to the QCoDeS driver)."""
    return B220xMatrix(address, name, **options)


# B2201A relays: 200 V, 1 A (Keysight B2200A/B2201A data sheet)
register_instrument(
    "keysight_b2201",
    "matrix",
    create,
    options=QCODES_VISA_OPTIONS,
    visa_option="visalib",
    ranges=InstrumentRanges(v_max_v=200.0, i_max_a=1.0),
)
