"""Hardware-aware deployment of the recurrent backbone, and its noise-injection evaluation.

Deployment (``docs/algorithms.md#deployment``): the memory units' input projections [W_c;
W_β], their output maps W_out and the model's final readout Linear become
:class:`AnalogLinear` layers on any Backend (simulator, mock lab, bench), programmed to the
trained weights; the states s_t stay digital (a latch or counter per unit). Everything else
(LayerNorm, gates, MLPs) stays in float, as it would in a mixed-signal deployment.

Noise injection: Gaussian noise on the candidate (c_t for the memory units, h̃_t for minGRU,
the input drive for the LRU), relative to its RMS, and on every weight matrix, relative to
each matrix's largest |w|; :func:`noise_robustness` tabulates accuracy against both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from memhil.algorithms.cmru.backbone import RecurrentBackbone
from memhil.algorithms.cmru.training import evaluate
from memhil.algorithms.cmru.units import CandidatePerturbation, MemoryRecurrentUnit
from memhil.analog.linear import AnalogLinear
from memhil.analog.placement import pack_columns
from memhil.analog.program import (
    ProgramProgress,
    ProgramReport,
    program_weights_steps,
    run_to_end,
)
from memhil.backends.base import Backend
from memhil.datasets.containers import Split

if TYPE_CHECKING:
    from memhil.analog.program import Method


# ---------------------------------------------------------------------------------------
# Deployment on a backend
# ---------------------------------------------------------------------------------------
@dataclass
class Placement:
    """Where one deployed matrix sits: its name, (out, in) shape, tile and column offset."""

    name: str
    out_features: int
    in_features: int
    tile: int
    col_offset: int


def _analog_copy(
    weight: Tensor, bias: Tensor | None, backend: Backend, place: Placement, seed: int, **analog_kw
) -> AnalogLinear:
    """An AnalogLinear holding ``weight`` (``w_max`` = its largest |w|) at ``place``, 1 %
    inside the device window (targets at the exact edges can round outside it in float32)."""
    return AnalogLinear.from_weights(
        weight,
        bias,
        backend,
        window_margin=0.01,
        tile=place.tile,
        col_offset=place.col_offset,
        seed=seed,
        **analog_kw,
    )


def plan_placement(
    model: RecurrentBackbone,
    backend: Backend | tuple[int, int, int],
    *,
    readout: bool = True,
    outputs: bool = True,
) -> list[Placement]:
    """Lay the deployed matrices side by side along the columns of the backend's tiles
    (differential pairs: two columns per output), starting a new tile when one is full:
    every memory unit's input projection, its output map (with ``outputs``) and the final
    readout (with ``readout``). ``backend`` may be the (tiles, rows, cols) shape alone.

    Raises ValueError naming the matrix and the array size when a matrix does not fit.
    """
    shapes: list[tuple[str, int, int]] = []
    for i, cell in enumerate(model.cells):
        if not isinstance(cell, MemoryRecurrentUnit):
            raise TypeError(f"block {i} holds a {type(cell).__name__}; only memory units deploy")
        w, _ = cell.projection_weights()
        shapes.append((f"blocks.{i}.cell.input_projection", w.shape[0], w.shape[1]))
        if outputs and cell.out is not None:
            shapes.append((f"blocks.{i}.cell.out", cell.out.out_features, cell.out.in_features))
    if readout:
        last = cast("nn.Linear | AnalogLinear", model.head[-1])
        shapes.append(("head.readout", last.out_features, last.in_features))
    regions = pack_columns(
        [(n_in, 2 * n_out) for _, n_out, n_in in shapes],
        backend if isinstance(backend, tuple) else backend.shape,
        names=[name for name, _, _ in shapes],
    )
    return [
        Placement(name, n_out, n_in, r.tile, r.col)
        for (name, n_out, n_in), r in zip(shapes, regions)
    ]


def deploy_to_backend_steps(
    model: RecurrentBackbone,
    backend: Backend,
    *,
    readout: bool = True,
    outputs: bool = True,
    program_method: Method = "verify",
    seed: int = 0,
    program_kw: dict | None = None,
    **analog_kw,
) -> Generator[tuple[str, ProgramProgress], None, list[tuple[AnalogLinear, ProgramReport]]]:
    """``deploy_to_backend`` as a generator of (matrix name, ProgramProgress), one item per
    calibration and verify iteration of each matrix; returns each AnalogLinear layer with
    the report of its programming."""
    layers = []
    for k, place in enumerate(plan_placement(model, backend, readout=readout, outputs=outputs)):
        parts = place.name.split(".")
        if place.name == "head.readout":
            last = cast("nn.Linear | AnalogLinear", model.head[-1])
            layer = _analog_copy(last.weight, last.bias, backend, place, seed + k, **analog_kw)
            model.head[-1] = layer
        else:
            cell = model.blocks[int(parts[1])].cell
            assert isinstance(cell, MemoryRecurrentUnit)  # plan_placement checked every cell
            if parts[-1] == "input_projection":
                w, b = cell.projection_weights()
                layer = _analog_copy(w, b, backend, place, seed + k, **analog_kw)
                cell.input_projection = layer
            else:
                assert cell.out is not None  # planned only where the unit has an output map
                layer = _analog_copy(
                    cell.out.weight, cell.out.bias, backend, place, seed + k, **analog_kw
                )
                cell.out = layer
        steps = program_weights_steps(
            layer.weights, layer.weight.detach(), method=program_method, **(program_kw or {})
        )
        while True:
            try:
                yield place.name, next(steps)
            except StopIteration as done:
                layers.append((layer, done.value))
                break
    return layers


def deploy_to_backend(model: RecurrentBackbone, backend: Backend, **kw) -> list[AnalogLinear]:
    """Move the memory units' projections (with ``outputs``, their output maps; with
    ``readout``, the final readout) of ``model`` onto ``backend`` in place and program
    the devices to the trained weights: runs :func:`deploy_to_backend_steps` to the end.

    Returns the AnalogLinear layers (their ``weights.tally`` counts the pulses).
    ``analog_kw`` goes to :class:`AnalogLinear` (e.g. ``set_pulse``, ``v_read``),
    ``program_kw`` to the programming routine.
    """
    return [layer for layer, _ in run_to_end(deploy_to_backend_steps(model, backend, **kw))]


# ---------------------------------------------------------------------------------------
# Noise injection
# ---------------------------------------------------------------------------------------
def gaussian_candidate_noise(rel_std: float, generator: torch.Generator) -> CandidatePerturbation:
    """A perturbation adding N(0, (rel_std · RMS(c))²) to a candidate tensor c (complex: the
    same total variance split over real and imaginary parts)."""
    if rel_std < 0:
        raise ValueError(f"rel_std={rel_std} must be >= 0")

    def perturb(c: Tensor) -> Tensor:
        if rel_std == 0:
            return c
        rms = c.detach().abs().pow(2).mean().sqrt()
        noise = torch.randn(c.shape, generator=generator, dtype=c.dtype)
        return c + rel_std * rms * noise

    return perturb


@contextlib.contextmanager
def perturbed_weights(
    model: nn.Module, rel_std: float, generator: torch.Generator
) -> Iterator[None]:
    """Inside the block, every weight matrix (parameters with ≥ 2 dims) carries additive
    N(0, (rel_std · max|W|)²) noise; the trained values are restored on exit."""
    if rel_std < 0:
        raise ValueError(f"rel_std={rel_std} must be >= 0")
    saved = []
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2 and rel_std > 0:
                saved.append((p, p.detach().clone()))
                scale = p.detach().abs().max()
                p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * (rel_std * scale))
    try:
        yield
    finally:
        with torch.no_grad():
            for p, value in saved:
                p.copy_(value)


def noise_robustness(
    model: nn.Module,
    split: Split,
    *,
    candidate_stds: Sequence[float] = (0.0, 0.1, 0.3),
    weight_stds: Sequence[float] = (0.0, 0.02, 0.05),
    n_draws: int = 3,
    seed: int = 0,
) -> dict[tuple[str, float], float]:
    """Mean accuracy over ``n_draws`` noise draws for each candidate-noise level
    (key ("candidate", std)) and each weight-noise level (key ("weight", std))."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[tuple[str, float], float] = {}
    for std in candidate_stds:
        draws = 1 if std == 0 else n_draws
        out[("candidate", std)] = (
            sum(
                evaluate(model, split, perturb=gaussian_candidate_noise(std, gen))
                for _ in range(draws)
            )
            / draws
        )
    for std in weight_stds:
        draws = 1 if std == 0 else n_draws
        acc = 0.0
        for _ in range(draws):
            with perturbed_weights(model, std, gen):
                acc += evaluate(model, split)
        out[("weight", std)] = acc / draws
    return out
