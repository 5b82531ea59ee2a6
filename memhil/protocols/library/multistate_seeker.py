"""MultiStateSeeker: how many distinct, stable conductance levels each cell holds (ArC
ONE's MultiStateSeeker; ``docs/protocols.md#multistate_seeker``).

For each target of a ladder, ``trials`` times: program-and-verify every cell to it (the
``Program`` message), ``n_reads`` reads at once and ``n_reads`` after ``hold_s`` (the
retention check). A level's read distribution pools every read of every trial, so its
spread holds read noise, programming noise (the trial-to-trial spread of the programmed
state) and any relaxation over the hold. Walking the levels upward, a level counts when
its mean lies at least ``z (sigma + sigma_last)`` above the last counted level, ``z`` the
two-sided normal quantile of ``confidence``: the number of distinguishable levels.

For a ladder of step ``dg`` and level spread ``sigma = sqrt(sigma_read^2 + sigma_prog^2)``
the same for all levels, every ``m = ceil(2 z sigma / dg)``-th target counts, hence
``n_levels = floor((n_targets - 1) / m) + 1``.

Records: ``record = "level"`` per (target, cell): ``g_target``, ``g_mean``, ``g_std``,
``g_std_read``, ``g_std_prog``, ``g_drift`` (mean after the hold minus mean at once),
``counted``; ``record = "result"`` per cell: ``n_levels``, ``z``. The whole seek is one
unit (the count needs every level): an interrupted seek is measured again on resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch

from memhil.core.config import require
from memhil.protocols.common import check_cells, positive, resolve_cells
from memhil.protocols.library.converge import ConvergeParams, program_message
from memhil.protocols.plan import Read, Wait, cell_records, keys, unit


@dataclass(frozen=True)
class MultiStateParams(ConvergeParams):
    g_targets_s: tuple[float, ...] = ()  # explicit ladder (S); empty: g_low_s..g_high_s
    g_low_s: float = 10e-6
    g_high_s: float = 90e-6
    n_targets: int = 9
    trials: int = 3
    n_reads: int = 10  # reads per trial, at once and again after hold_s
    n_verify_reads: int = 4  # verify reads averaged per program-and-verify iteration
    hold_s: float = 1.0
    confidence: float = 0.997
    v_read_v: float = 0.2

    def __post_init__(self) -> None:
        positive(
            self,
            "g_tolerance_s",
            "set_v",
            "set_width_s",
            "reset_width_s",
            "max_iterations",
            "n_reads",
            "n_verify_reads",
            "compliance_a",
            "trials",
            "v_read_v",
        )
        require(self.reset_v < 0, "reset_v", f"must be < 0 (RESET polarity), got {self.reset_v}")
        require(self.hold_s >= 0, "hold_s", f"must be >= 0 s, got {self.hold_s}")
        require(self.n_reads >= 2, "n_reads", f"must be >= 2 (a spread), got {self.n_reads}")
        require(
            0.5 < self.confidence < 1.0,
            "confidence",
            f"must lie in (0.5, 1), got {self.confidence}",
        )
        if not self.g_targets_s:
            require(self.n_targets >= 2, "n_targets", f"must be >= 2, got {self.n_targets}")
            require(
                0 < self.g_low_s < self.g_high_s,
                "g_high_s",
                f"need 0 < g_low_s ({self.g_low_s}) < g_high_s ({self.g_high_s})",
            )
        for g in self.g_targets_s:
            require(g > 0, "g_targets_s", f"each target must be > 0 S, got {g}")
        check_cells(self.cells)

    def ladder(self) -> list[float]:
        """The targets (S), ascending."""
        if self.g_targets_s:
            return sorted(float(g) for g in self.g_targets_s)
        step = (self.g_high_s - self.g_low_s) / (self.n_targets - 1)
        return [self.g_low_s + k * step for k in range(self.n_targets)]

    @property
    def z(self) -> float:
        """Two-sided normal quantile of ``confidence`` (3.0 for 0.997)."""
        return NormalDist().inv_cdf(0.5 + self.confidence / 2)


def count_levels(mean: torch.Tensor, std: torch.Tensor, z: float) -> torch.Tensor:
    """Per cell (columns), which levels (rows, ascending targets) count: walking upward, a
    level whose mean lies ``z (std + std_last)`` above the last counted one."""
    n_levels, n_cells = mean.shape
    counted = torch.zeros_like(mean, dtype=torch.bool)
    counted[0] = True
    last_mu, last_sd = mean[0].clone(), std[0].clone()
    for k in range(1, n_levels):  # a walk over levels, vectorized over cells
        ok = mean[k] - last_mu >= z * (std[k] + last_sd)
        counted[k] = ok
        last_mu = torch.where(ok, mean[k], last_mu)
        last_sd = torch.where(ok, std[k], last_sd)
    return counted


def plan(p: MultiStateParams, caps):
    cells = resolve_cells(p.cells, caps)
    ladder = p.ladder()
    verify = ConvergeParams(
        g_targets_s=(ladder[0],),
        g_tolerance_s=p.g_tolerance_s,
        set_v=p.set_v,
        set_width_s=p.set_width_s,
        reset_v=p.reset_v,
        reset_width_s=p.reset_width_s,
        max_iterations=p.max_iterations,
        n_reads=p.n_verify_reads,
        compliance_a=p.compliance_a,
    )

    def reads():
        out = []
        for _ in range(p.n_reads):
            r = yield Read(cells, "level", p.v_read_v, keys(v_read="v_read_v"))
            out.append(r.g_s.double())
        return torch.stack(out)  # (n_reads, cells)

    def body():
        n = len(cells)
        # (levels, trials, 2 [at once, after hold], n_reads, cells)
        g = torch.zeros(len(ladder), p.trials, 2, p.n_reads, n, dtype=torch.float64)
        for k, target in enumerate(ladder):
            for t in range(p.trials):
                yield program_message(verify, cells, [target] * n)
                g[k, t, 0] = yield from reads()
                if p.hold_s > 0:
                    yield Wait(p.hold_s)
                g[k, t, 1] = yield from reads()
        pooled = g.reshape(len(ladder), -1, n)
        mean, std = pooled.mean(1), pooled.std(1)
        std_read = g.var(3).mean((1, 2)).sqrt()
        std_prog = g[:, :, 0].mean(2).std(1) if p.trials > 1 else torch.zeros_like(mean)
        drift = (g[:, :, 1] - g[:, :, 0]).mean((1, 2))
        counted = count_levels(mean, std, p.z)
        for k, target in enumerate(ladder):
            yield from cell_records(
                "multistate_seeker",
                cells,
                {"record": "level", "level": k},
                {
                    "g_target": [target] * n,
                    "g_mean": mean[k],
                    "g_std": std[k],
                    "g_std_read": std_read[k],
                    "g_std_prog": std_prog[k],
                    "g_drift": drift[k],
                    "counted": counted[k],
                },
            )
        yield from cell_records(
            "multistate_seeker",
            cells,
            {"record": "result", "level": len(ladder)},
            {"n_levels": counted.sum(0), "z": [p.z] * n},
        )

    yield from unit(("multistate_seeker",), body())


def closed_form_levels(n_targets: int, dg_s: float, sigma_s: float, z: float) -> int:
    """Levels counted on an evenly spaced ladder of step ``dg_s`` whose levels all spread
    ``sigma_s``: every ``ceil(2 z sigma / dg)``-th target."""
    m = max(1, math.ceil(2 * z * sigma_s / dg_s))
    return (n_targets - 1) // m + 1
