"""Training diagnostics of the memory-unit family: which units switch on blank input steps,
how large the states grow, and gradient norms per parameter group.

A counter (ε = 1) unit whose candidate beats its threshold on a blank step switches on every
blank step, so |s_T| grows with T and the following LayerNorm drowns the stored cue; such a
model sits at the constant-predictor accuracy until those units switch off. These numbers
expose that at once (``docs/algorithms.md#cell``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from memhil.algorithms.cmru.units import MemoryRecurrentUnit

#: Parameter groups of a :class:`~memhil.algorithms.cmru.backbone.RecurrentBackbone` by name:
#: the recurrent cell, the rest of the residual block, the input side, the readout side.
GROUPS = ("cell", "block", "input", "head")


def parameter_group(name: str) -> str:
    """The group of parameter ``name`` (see :data:`GROUPS`)."""
    if ".cell." in name:
        return "cell"
    if name.startswith("blocks."):
        return "block"
    if name.startswith(("encoder.", "positional_mlp.")):
        return "input"
    return "head"


def gradient_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of the current gradients per parameter group (before clipping)."""
    sq: dict[str, Tensor] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            g = parameter_group(name)
            sq[g] = sq.get(g, torch.zeros(())) + p.grad.detach().float().pow(2).sum()
    return {f"grad_norm_{g}": float(v.sqrt()) for g, v in sq.items()}


def blank_steps(x: Tensor) -> Tensor:
    """(B, T) mask of input steps that carry no signal (all features zero)."""
    return x.abs().amax(-1) == 0


@torch.no_grad()
def memory_unit_statistics(
    cell: MemoryRecurrentUnit, cell_input: Tensor, blank: Tensor
) -> dict[str, float]:
    """For one memory unit layer fed ``cell_input`` (B, T, d): the fraction of (unit, blank
    step) pairs that switch, the fraction of units that switch on every blank step of a
    sequence (the ones that count up without input), and mean and max |s_T|."""
    z, _ = cell.gates(cell_input)
    s_last = cell.states(cell_input)[:, -1].abs()
    m = blank.unsqueeze(-1).to(z.dtype)  # (B, T, 1)
    n_blank = m.sum(1)  # (B, 1)
    switched = (z * m).sum(1)  # (B, d_state): blank steps on which each unit switched
    has_blank = n_blank.squeeze(-1) > 0
    out = {"abs_s_T_mean": float(s_last.mean()), "abs_s_T_max": float(s_last.max())}
    if bool(has_blank.any()):
        frac = switched[has_blank] / n_blank[has_blank]
        out["blank_switch_fraction"] = float(frac.mean())
        out["units_switching_every_blank"] = float((frac >= 1.0).float().mean(0).sum())
    return out


class CellInputRecorder:
    """Forward hooks that keep the latest input of every memory unit layer in ``model``
    (the tensor the cell equations see), while ``active``."""

    def __init__(self, model: nn.Module):
        self.cells = [m for m in model.modules() if isinstance(m, MemoryRecurrentUnit)]
        self.inputs: list[Tensor | None] = [None] * len(self.cells)
        self.active = False
        self._handles = [c.register_forward_hook(self._hook(i)) for i, c in enumerate(self.cells)]

    def _hook(self, i: int):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            if self.active:
                self.inputs[i] = args[0].detach()

        return hook

    def statistics(self, x: Tensor) -> dict[str, float]:
        """Memory-unit statistics of the recorded inputs for the model input ``x`` (layer k's
        keys get a ``_k`` suffix after the first layer)."""
        blank = blank_steps(x)
        out: dict[str, float] = {}
        for i, (cell, inp) in enumerate(zip(self.cells, self.inputs, strict=True)):
            if inp is None:
                continue
            suffix = "" if i == 0 else f"_{i}"
            stats = memory_unit_statistics(cell, inp, blank)
            out.update({k + suffix: v for k, v in stats.items()})
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
