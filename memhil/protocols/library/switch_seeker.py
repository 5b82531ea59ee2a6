"""SwitchSeeker: the switching threshold and polarity of each cell, by a ramp of pulse
amplitude with a read after every pulse (the SwitchSeeker module of ArC ONE, ArC Instruments' characterization
software; ``docs/protocols.md``).

Per polarity in ``polarities`` order: a reference read, then pulses of amplitude
``v_start_v, v_start_v + v_step_v, ... <= v_stop_v`` (the sign of the polarity), a read
after each; a cell whose conductance moved more than ``rel_threshold`` from its reference
has switched at that amplitude and receives no further pulse of this polarity. One unit
per polarity. Records: ``record = "step"`` per pulse and cell still ramping (``v_pulse_v``,
the read), and ``record = "result"`` per cell: ``v_switch_v`` (signed; NaN when the cell
never switched), ``direction`` (+1 G rose, -1 G fell, 0 none), ``g_before``/``g_after``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from memhil.core.config import require
from memhil.protocols.common import check_cells, positive, read_columns, resolve_cells
from memhil.protocols.plan import Pulse, Read, cell_records, keys, unit

Polarity = Literal["positive", "negative"]


@dataclass(frozen=True)
class SwitchSeekerParams:
    v_start_v: float = 0.05  # magnitude of the first pulse
    v_stop_v: float = 1.0  # largest magnitude of the ramp
    v_step_v: float = 0.05  # ramp step
    width_s: float = 1e-6
    polarities: tuple[Polarity, ...] = ("positive", "negative")
    rel_threshold: float = 0.1  # |G - G_ref| / G_ref that counts as switched
    compliance_a: float = 1e-3
    v_read_v: float = 0.05
    cells: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        positive(
            self,
            "v_start_v",
            "v_stop_v",
            "v_step_v",
            "width_s",
            "rel_threshold",
            "compliance_a",
            "v_read_v",
        )
        require(
            self.v_start_v <= self.v_stop_v,
            "v_stop_v",
            f"must be >= v_start_v ({self.v_start_v} V), got {self.v_stop_v} V",
        )
        require(len(self.polarities) > 0, "polarities", "must name at least one polarity")
        for pol in self.polarities:
            require(
                pol in ("positive", "negative"),
                "polarities",
                f"each is 'positive' or 'negative', got {pol!r}",
            )
        require(
            len(set(self.polarities)) == len(self.polarities),
            "polarities",
            f"lists a polarity twice: {list(self.polarities)}",
        )
        check_cells(self.cells)

    def amplitudes(self) -> list[float]:
        """The ramp magnitudes (V), v_start_v to v_stop_v inclusive (1e-9 V slack)."""
        n = int(math.floor((self.v_stop_v - self.v_start_v) / self.v_step_v + 1e-9)) + 1
        return [self.v_start_v + k * self.v_step_v for k in range(n)]


def plan(p: SwitchSeekerParams, caps):
    cells = resolve_cells(p.cells, caps)
    ramp = p.amplitudes()
    for pol in p.polarities:
        sign = 1.0 if pol == "positive" else -1.0

        def body(pol=pol, sign=sign):
            ref = yield Read(cells, f"{pol}_ref", p.v_read_v, keys(v_read="v_read_v"))
            g_ref = ref.g_s.double()
            n = len(cells)
            v_switch = torch.full((n,), math.nan, dtype=torch.float64)
            g_after = torch.full((n,), math.nan, dtype=torch.float64)
            active = torch.ones(n, dtype=torch.bool)
            steps = 0
            for k, v in enumerate(ramp):
                idx = active.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                sub = tuple(cells[i] for i in idx.tolist())
                yield Pulse(
                    sub,
                    sign * v,
                    p.width_s,
                    1,
                    p.compliance_a,
                    keys(amplitude="v_stop_v", width="width_s", compliance="compliance_a"),
                )
                r = yield Read(sub, pol, p.v_read_v, keys(v_read="v_read_v"))
                steps = k + 1
                yield from cell_records(
                    "switch_seeker",
                    sub,
                    {"polarity": pol, "record": "step", "step": k + 1},
                    {"v_pulse_v": [sign * v] * len(sub), **read_columns(r)},
                )
                g = r.g_s.double()
                rel = (g - g_ref[idx]).abs() / g_ref[idx].abs().clamp_min(1e-30)
                hit = rel > p.rel_threshold
                v_switch[idx[hit]] = sign * v
                g_after[idx[hit]] = g[hit]
                active[idx[hit]] = False
            switched = ~torch.isnan(v_switch)
            direction = torch.where(switched, torch.sign(g_after - g_ref), torch.zeros_like(g_ref))
            yield from cell_records(
                "switch_seeker",
                cells,
                {"polarity": pol, "record": "result", "step": steps},
                {
                    "v_switch_v": v_switch,
                    "direction": direction,
                    "switched": switched,
                    "g_before": g_ref,
                    "g_after": g_after,
                },
            )

        yield from unit(("switch_seeker", pol), body())
