"""MARS inference in memory: the layers' input projections W_in and the trained ridge
readout are programmed (program-and-verify) onto a Backend and evaluated as ``mvm``.

What stays digital: the MF unit update (a volatile device could supply it physically), the
pooling, the standardisation of the readout features ((f - mean) / scale, a per-feature
offset and gain, so device error does not multiply their large common mode and every
weight uses the conductance range alike) and the readout bias. Works on any Backend: the simulator, the
hardware backend over the mock lab, a bench.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import Tensor

from memhil.algorithms.mars.layer import MARS, MARSLayer, Method
from memhil.algorithms.mars.readout import RidgeClassifier
from memhil.analog.linear import AnalogLinear
from memhil.analog.placement import pack_columns
from memhil.analog.program import ProgramProgress, ProgramReport, program_weights_steps, run_to_end
from memhil.backends.base import Backend
from memhil.nn.pooling import Pooling


def place_regions(
    sizes: list[tuple[int, int]], shape: tuple[int, int, int]
) -> list[tuple[int, int]]:
    """(tile, col_offset) for matrices of (rows, cols) ``sizes``, packed left to right on
    a tile and spilling to the next tile; ValueError naming the sizes when they do not fit."""
    return [(r.tile, r.col) for r in pack_columns(sizes, shape)]


def region_size(n_in: int, n_out: int, layout: str, n_devices: int = 1) -> tuple[int, int]:
    """(rows, cols) of devices an (n_out, n_in) matrix takes: a reference column for the
    ``reference`` layout, else ``n_devices`` differential pairs per output."""
    return (n_in, n_out + 1) if layout == "reference" else (n_in, 2 * n_out * n_devices)


@dataclass
class DeployedMARS:
    """A MARS classifier whose projections (where deployed) and readout run in the array."""

    model: MARS
    readout: RidgeClassifier
    readout_layer: AnalogLinear
    projections: list[AnalogLinear | None]
    pool: Pooling
    layers: Literal["all", "last"]
    method: Method = "scan"
    reports: dict[str, ProgramReport] = field(default_factory=dict)

    @torch.no_grad()
    def features(
        self, x: Tensor, lengths: Tensor | None = None, batch_size: int | None = None
    ) -> Tensor:
        """Pooled features with the input projections read from the array."""
        return self.model.features(
            x,
            lengths,
            pool=self.pool,
            layers=self.layers,
            method=self.method,
            batch_size=batch_size,
            projections=self.projections,
        )

    @torch.no_grad()
    def decision_from_features(self, features: Tensor) -> Tensor:
        """Class scores from features: one array read of (f - mean) / scale plus the bias."""
        z = ((features.double() - self.readout.mean) / self.readout.scale).float()
        return self.readout_layer(z).double()

    @torch.no_grad()
    def predict(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.decision_from_features(self.features(x, lengths)).argmax(-1)

    def accuracy(self, x: Tensor, labels: Tensor, lengths: Tensor | None = None) -> float:
        return float((self.predict(x, lengths) == labels).double().mean())

    def accuracy_from_features(self, features: Tensor, labels: Tensor) -> float:
        """Accuracy with float features and the array readout (isolates the readout)."""
        pred = self.decision_from_features(features).argmax(-1)
        return float((pred == labels).double().mean())


def deploy_mars_steps(
    model: MARS,
    readout: RidgeClassifier,
    backend: Backend,
    *,
    pool: Pooling = "mean_last",
    layers: Literal["all", "last"] = "all",
    deploy_projections: bool = True,
    method: Method = "scan",
    program: Literal["verify", "open_loop"] = "verify",
    tolerance_s: float | None = None,
    program_kw: dict[str, Any] | None = None,
    **layer_kw: Any,
) -> Generator[tuple[str, ProgramProgress], None, DeployedMARS]:
    """``deploy_mars`` as a generator of (matrix name, ProgramProgress), one item per
    calibration and verify iteration of each matrix; returns the DeployedMARS.

    Program ``readout`` (and, with ``deploy_projections``, every layer's W_in) onto
    ``backend`` and return the in-memory classifier. ``pool``/``layers`` must be those the
    readout was trained with. Regions are packed onto the tiles in order (projections, then
    the readout); ``layer_kw`` goes to each ``AnalogLinear`` (pulses, v_read, layout, ...).
    ``tolerance_s`` defaults to 2 % of the programmed window (the verify loop's target
    band). Programming reports are kept in ``DeployedMARS.reports``.
    """
    w_std = readout.weight.t()  # (classes, features), acts on standardised features
    mats: list[tuple[str, Tensor, Tensor | None]] = []
    if deploy_projections:
        mats += [
            (f"w_in[{i}]", cast(MARSLayer, layer).w_in, None)
            for i, layer in enumerate(model.layers)
        ]
    mats.append(("readout", w_std, readout.bias))
    layout, n_devices = layer_kw.get("layout", "differential"), layer_kw.get("n_devices", 1)
    sizes = [region_size(w.shape[1], w.shape[0], layout, n_devices) for _, w, _ in mats]
    places = place_regions(sizes, backend.shape)
    reports: dict[str, ProgramReport] = {}
    built: list[AnalogLinear] = []
    for (name, w, b), (tile, col) in zip(mats, places):
        # 2 % inside the device window: the verify loop's band stays off the saturated ends
        layer = AnalogLinear.from_weights(
            w, b, backend, window_margin=0.02, tile=tile, col_offset=col, **layer_kw
        )
        m = layer.weights.mapping
        tol = 0.02 * (m.g_hi_s - m.g_lo_s) if tolerance_s is None else tolerance_s
        steps = program_weights_steps(
            layer.weights,
            layer.weight.detach(),
            method=program,
            tolerance_s=tol,
            **(program_kw or {}),
        )
        while True:
            try:
                yield name, next(steps)
            except StopIteration as done:
                reports[name] = done.value
                break
        built.append(layer)
    projections: list[AnalogLinear | None] = (
        [*built[:-1]] if deploy_projections else [None] * model.depth
    )
    return DeployedMARS(model, readout, built[-1], projections, pool, layers, method, reports)


def deploy_mars(model: MARS, readout: RidgeClassifier, backend: Backend, **kw: Any) -> DeployedMARS:
    """Program ``readout`` (and, by default, every layer's W_in) onto ``backend`` and return
    the in-memory classifier: runs :func:`deploy_mars_steps` (whose docstring gives the
    keywords) to the end."""
    return run_to_end(deploy_mars_steps(model, readout, backend, **kw))
