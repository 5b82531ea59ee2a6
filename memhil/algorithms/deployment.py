"""Pieces the experiment adapters share: the data-kind check, the pre-flight of the pulses
and read voltage a ``deploy:`` section configures, and the progress step of a programming
run (``memhil.analog.program.ProgramProgress``) inside a deployment of several matrices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from memhil.algorithms.experiment import Step
from memhil.analog.program import ProgramProgress, ProgramReport
from memhil.backends.base import Backend
from memhil.core.errors import ConfigError, LimitError
from memhil.datasets.containers import ClassificationData


def sequence_data(data: Any, key: str = "dataset") -> ClassificationData:
    """``data`` when it is a sequence classification set; ConfigError naming ``key`` if not."""
    if not isinstance(data, ClassificationData) or data.train.x.dim() != 3:
        shape = tuple(data.train.x.shape) if isinstance(data, ClassificationData) else None
        raise ConfigError(
            key,
            "needs a sequence classification set (x of shape (N, T, D)), got "
            f"{type(data).__name__}{'' if shape is None else f' with x of shape {shape}'}",
        )
    return data


def check_deploy_settings(
    backend: Backend,
    set_pulse: tuple[float, float] | None,
    reset_pulse: tuple[float, float] | None,
    v_read: float | None = None,
    g_window_s: tuple[float, float] | None = None,
    *,
    section: str = "deploy",
) -> None:
    """Pre-flight of the SET/RESET pulses (given, or the backend's nominal ones where None)
    and the read voltage against ``backend.limits``, and of the conductance window against
    the backend's device window: LimitError / ConfigError naming ``section.set_pulse``
    etc., before any device is touched."""
    caps, limits = backend.capabilities, backend.limits
    if g_window_s is not None:
        lo, hi = caps.conductance_range_s
        if not lo <= g_window_s[0] < g_window_s[1] <= hi:
            raise ConfigError(
                f"{section}.g_window_s",
                f"[{g_window_s[0]:.4g}, {g_window_s[1]:.4g}] S lies outside the backend's "
                f"device window [{lo:.4g}, {hi:.4g}] S",
            )
    for key, given, nominal in (
        ("set_pulse", set_pulse, caps.set_pulse),
        ("reset_pulse", reset_pulse, caps.reset_pulse),
    ):
        pulse = given if given is not None else nominal
        if pulse is None:
            raise ConfigError(f"{section}.{key}", "the backend names no nominal pulse: give one")
        # a nominal pulse outside the station's limits is named by the key that overrides it
        limits.check_pulse_spec(pulse[0], pulse[1], param=f"{section}.{key}")
    if v_read is not None:
        try:
            limits.check_read(torch.tensor([float(v_read)]))
        except LimitError as exc:
            raise exc.naming(f"{section}.v_read") from None


def deploy_step(
    matrix: int, n_matrices: int, progress: ProgramProgress, max_iterations: int
) -> Step:
    """The progress Step of ``progress`` while programming matrix ``matrix`` (0-based) of
    ``n_matrices``: each matrix spans its calibration and up to ``max_iterations`` verify
    iterations, so the ETA assumes the worst case and shortens as matrices finish early."""
    per = max_iterations + 1
    offset = 0 if progress.phase == "calibrate" else 1 + progress.iteration
    return Step(matrix * per + min(offset, per - 1), n_matrices * per)


def deploy_metrics(reports: Sequence[ProgramReport]) -> dict[str, float]:
    """Deployment metrics from the programming reports of every matrix: cells programmed,
    the share within the verify band, the RMS conductance error and the verify iterations."""
    n_cells = sum(int(r.within.numel()) for r in reports)
    errors = torch.cat([r.error_s.double().flatten() for r in reports])
    return {
        "matrices": float(len(reports)),
        "cells": float(n_cells),
        "within_tolerance": sum(float(r.within.double().sum()) for r in reports) / max(n_cells, 1),
        "rms_error_s": float(errors.pow(2).mean().sqrt()) if errors.numel() else 0.0,
        "verify_iterations": float(sum(r.iterations for r in reports)),
    }
