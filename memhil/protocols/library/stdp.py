"""STDP: conductance change vs the delay between a pre- and a post-synaptic spike whose
overlap is the voltage across the device (Linares-Barranco & Serrano-Gotarredona, Nature
Precedings 2009; Zamarreño-Ramos et al., Front. Neurosci. 5, 26 (2011), Fig. 2).

Each spike is a rectangular peak ``a_plus_v`` for ``width_s`` followed by a tail
``-a_minus_v exp(-t / tau_s)`` lasting ``tail_s``. The post spike drives the top
electrode and the pre spike the bottom one, so the device sees
``V(t) = spike(t - delay) - spike(t)`` (``delay`` = t_post - t_pre): for a causal pair the
post peak rides on the pre tail, ``a_plus + a_minus exp(-(delay - width) / tau)``, and
potentiates where that exceeds the device threshold; an anti-causal pair depresses. The
waveform is applied as consecutive rectangular pulses sampled every ``dt_s`` (equal
neighbours merged); samples with ``|V| < v_floor_v`` are left out (0: none is), which is
exact for a threshold device whose threshold lies above ``v_floor_v``.

For a device whose rate is linear above its threshold ``v_th`` (VTEAM with alpha = 1) and
``a_plus = v_th``, the change of state is ``prop. exp(-|delay| / tau_s)``: the STDP time
constant is the tail's. Per delay, ``pairs`` spike pairs between two reads; records
``record = "delay"`` (``delay_s``, ``g_before``, ``g_after``, ``g_change``) and per cell
``record = "fit"``: ``tau_plus_s``/``tau_minus_s`` from a straight-line fit of
``log|g_change|`` against ``|delay|`` on each side (NaN with fewer than two changes of the
expected sign). One unit (the fit needs every delay).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from memhil.core.config import require
from memhil.protocols.common import check_cells, positive, resolve_cells
from memhil.protocols.plan import Pulse, Read, cell_records, keys, unit


@dataclass(frozen=True)
class STDPParams:
    delays_s: tuple[float, ...] = (-8e-6, -4e-6, -2e-6, -1e-6, 1e-6, 2e-6, 4e-6, 8e-6)
    a_plus_v: float = 0.2
    a_minus_v: float = 0.1
    width_s: float = 1e-6
    tau_s: float = 2e-6
    tail_s: float | None = None  # None: 5 tau_s
    dt_s: float | None = None  # waveform sample step; None: width_s / 4
    v_floor_v: float = 0.0
    pairs: int = 1
    compliance_a: float = 1e-3
    v_read_v: float = 0.05
    cells: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        positive(self, "a_plus_v", "a_minus_v", "width_s", "tau_s", "pairs", "compliance_a")
        positive(self, "v_read_v")
        require(len(self.delays_s) > 0, "delays_s", "must list at least one delay")
        for d in self.delays_s:
            require(
                abs(d) >= self.width_s,
                "delays_s",
                f"|delay| must be >= width_s ({self.width_s} s) so the peaks do not "
                f"overlap, got {d} s",
            )
        for name in ("tail_s", "dt_s"):
            v = getattr(self, name)
            require(v is None or v > 0, name, f"must be > 0 s or null, got {v}")
        require(self.v_floor_v >= 0, "v_floor_v", f"must be >= 0 V, got {self.v_floor_v}")
        check_cells(self.cells)

    @property
    def tail_length_s(self) -> float:
        return 5 * self.tau_s if self.tail_s is None else self.tail_s

    @property
    def step_s(self) -> float:
        return self.width_s / 4 if self.dt_s is None else self.dt_s

    def spike(self, t: torch.Tensor) -> torch.Tensor:
        """The spike voltage at times ``t`` (s) after its onset."""
        peak = (t >= 0) & (t < self.width_s)
        tail = (t >= self.width_s) & (t < self.width_s + self.tail_length_s)
        v_tail = -self.a_minus_v * torch.exp(-(t - self.width_s) / self.tau_s)
        return torch.where(peak, self.a_plus_v, torch.where(tail, v_tail, 0.0))

    def waveform(self, delay_s: float) -> list[tuple[float, float]]:
        """(amplitude V, width s) of the rectangular pulses that sample the device voltage
        of one pair, in order; equal neighbours merged, ``|V| < v_floor_v`` left out."""
        dt = self.step_s
        t0 = min(0.0, delay_s)
        t1 = max(0.0, delay_s) + self.width_s + self.tail_length_s
        n = int(math.ceil((t1 - t0) / dt - 1e-9))
        t = t0 + (torch.arange(n, dtype=torch.float64) + 0.5) * dt  # sample midpoints
        v = self.spike(t - delay_s) - self.spike(t)
        v = torch.where(v.abs() < self.v_floor_v, 0.0, v)
        out: list[tuple[float, float]] = []
        for amp in v.tolist():
            if out and out[-1][0] == amp:
                out[-1] = (amp, out[-1][1] + dt)
            else:
                out.append((amp, dt))
        return [(a, w) for a, w in out if a != 0.0]


def fit_tau(delay_s: torch.Tensor, dg: torch.Tensor, sign: float) -> torch.Tensor:
    """Per cell (columns of ``dg``), the time constant of ``|dg| = A exp(-|delay| / tau)``
    from a least-squares line through ``log|dg|`` over the delays (rows) whose change has
    the sign ``sign``; NaN where fewer than two do."""
    x = delay_s.abs().unsqueeze(1).expand_as(dg)
    ok = (dg * sign) > 0
    y = torch.where(ok, dg.abs().clamp_min(1e-300).log(), 0.0)
    w = ok.double()
    n = w.sum(0)
    mx = (w * x).sum(0) / n.clamp_min(1)
    my = (w * y).sum(0) / n.clamp_min(1)
    sxy = (w * (x - mx) * (y - my)).sum(0)
    sxx = (w * (x - mx) ** 2).sum(0)
    slope = sxy / sxx.clamp_min(1e-300)
    tau = -1.0 / slope
    return torch.where((n >= 2) & (sxx > 0), tau, torch.full_like(tau, math.nan))


def plan(p: STDPParams, caps):
    cells = resolve_cells(p.cells, caps)

    def body():
        dgs = []
        for k, delay in enumerate(p.delays_s):
            before = yield Read(cells, "stdp_before", p.v_read_v, keys(v_read="v_read_v"))
            for _ in range(p.pairs):
                for amp, width in p.waveform(delay):
                    yield Pulse(
                        cells,
                        amp,
                        width,
                        1,
                        p.compliance_a,
                        keys(amplitude="a_plus_v", width="dt_s", compliance="compliance_a"),
                    )
            after = yield Read(cells, "stdp_after", p.v_read_v, keys(v_read="v_read_v"))
            dg = after.g_s.double() - before.g_s.double()
            dgs.append(dg)
            yield from cell_records(
                "stdp",
                cells,
                {"record": "delay", "index": k},
                {
                    "delay_s": [delay] * len(cells),
                    "g_before": before.g_s,
                    "g_after": after.g_s,
                    "g_change": dg,
                },
            )
        d = torch.tensor(p.delays_s, dtype=torch.float64)
        dg = torch.stack(dgs)
        causal = d > 0
        tau_plus = fit_tau(d[causal], dg[causal], +1.0)
        tau_minus = fit_tau(d[~causal], dg[~causal], -1.0)
        yield from cell_records(
            "stdp",
            cells,
            {"record": "fit", "index": len(p.delays_s)},
            {"tau_plus_s": tau_plus, "tau_minus_s": tau_minus},
        )

    yield from unit(("stdp",), body())
