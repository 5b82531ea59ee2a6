"""Global drift compensation (``memhil.calibration.drift``) on a PCM SimBackend.

Program a 16 x 8 PCM tile (random SET counts), take the reference MVM and r0 right after
programming, let one day of virtual time pass and compare the MVM of random inputs against
the outputs at programming time. PCM drift G ~ (t / 38.6 s)^-0.04 loses ~27 % of every
current after a day; the global factor restores the scale, leaving read noise and the
spread of nu.
"""

from __future__ import annotations

import pytest
import torch

from memhil.backends.sim import SimBackend
from memhil.calibration.drift import DriftCompensator, one_hot_probes


def _programmed_pcm(nu_dtod=0.0):
    sim = SimBackend(
        {
            "rows": 16,
            "cols": 8,
            "device": {"model": "pcm", "nu_dtod": nu_dtod},
            "seed": 7,
            "dtype": "float64",
        }
    )
    gen = torch.Generator().manual_seed(0)
    sim.pulse(None, 1.0, 100e-9, torch.randint(1, 15, sim.shape, generator=gen))
    return sim


def _rel_err(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("nu_dtod,per_column", [(0.0, False), (0.2, False), (0.2, True)])
def test_compensation_after_one_day(nu_dtod, per_column):
    sim = _programmed_pcm(nu_dtod)
    x = torch.rand(32, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.2
    target = sim.mvm(x, tile=0)  # the outputs at programming time
    comp = DriftCompensator(per_column=per_column, tile=0)
    r0 = comp.reference(sim)  # one-hot probes at 0.2 V
    assert (r0 > 0).all()
    sim.wait(86400.0)
    raw = sim.mvm(x, tile=0)
    alpha = comp.factor()
    fixed = comp.apply(raw)
    e_raw, e_fix = _rel_err(raw, target), _rel_err(fixed, target)
    assert e_raw > 0.15
    assert e_fix < 0.3 * e_raw
    assert e_fix < 0.08
    assert alpha.shape == ((8,) if per_column else ())


def test_callable_forward_and_serialisation():
    sim = _programmed_pcm()
    g0 = sim.true_conductance()[0].double()
    forward = lambda v: v @ sim.true_conductance()[0].double()  # an exact layer matvec
    probes = one_hot_probes(16, 0.1, torch.float64)
    comp = DriftCompensator()
    comp.reference(forward, probes)
    sim.wait(86400.0)
    alpha = comp.factor()
    # no read noise and uniform nu: alpha undoes the drift exactly
    expected = (86400.0 / 38.6) ** 0.04
    assert float(alpha) == pytest.approx(expected, rel=1e-6)
    assert torch.allclose(comp.apply(forward(probes)), probes @ g0, rtol=1e-6)
    back = DriftCompensator.from_dict(comp.to_dict())
    assert torch.allclose(back.r0, comp.r0) and torch.allclose(back.alpha, comp.alpha)


def test_errors():
    comp = DriftCompensator()
    with pytest.raises(RuntimeError):
        comp.factor()
    with pytest.raises(RuntimeError):
        comp.apply(torch.ones(3))
    with pytest.raises(ValueError):
        comp.reference(lambda v: v)


def test_a_restored_compensator_asks_for_its_forward_instead_of_failing_inside():
    comp = DriftCompensator.from_dict(DriftCompensator().to_dict() | {"r0": 1.0})
    with pytest.raises(RuntimeError, match="give factor\\(\\) the forward"):
        comp.factor()
