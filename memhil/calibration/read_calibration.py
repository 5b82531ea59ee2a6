"""Read-path calibration: per-column offset and gain of the MVM readout, on any backend.

Raw column currents of a real read path are ``I_raw = gain_c * I_true + offset_c`` to first
order (TIA/ADC gain spread, input offsets, leakage). ``calibrate_read_path`` measures

* offsets: ``mvm`` of all-zero inputs (every row at 0 V), averaged over ``n_repeats``;
* gains: one-hot row drives at each of ``v_levels`` on rows that hold reference cells; in
  column c the current of reference cell (r, c) is regressed (through the origin, after the
  offset) against ``v * G_ref[r, c]``. With known ``reference_g_s`` the gain is absolute;
  without, the reference cells are taken to share one (unknown) conductance, so only
  relative gains are known and they are normalised to mean 1 per tile ("relative" mode).

Only reference cells enter a column's regression, but a one-hot row drive also puts the
other cells of that row on the other columns; those points are simply not used there. A
column with no reference cell keeps gain 1.

``ReadCalibration.apply(currents)`` returns ``(I_raw - offset) / gain``. Results are
versioned data (``to_dict`` / ``from_dict``, ``version`` = content hash @ UTC time).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from memhil.backends.base import Backend

FORMAT = 1


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class ReadCalibration:
    """Per-tile, per-column ``offset_a`` (A) and ``gain`` (dimensionless), shape
    ``(tiles, cols)``; ``mode`` "absolute" or "relative" (gains normalised to mean 1)."""

    offset_a: Tensor
    gain: Tensor
    mode: str = "absolute"
    v_levels: tuple[float, ...] = ()
    version: str = ""
    date: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    path: str | None = field(default=None, compare=False)  # the file it was loaded from

    def __post_init__(self) -> None:
        self.offset_a = torch.as_tensor(self.offset_a, dtype=torch.float64).cpu()
        self.gain = torch.as_tensor(self.gain, dtype=torch.float64).cpu()
        if self.offset_a.shape != self.gain.shape or self.gain.dim() != 2:
            raise ValueError(
                f"offset {tuple(self.offset_a.shape)} and gain "
                f"{tuple(self.gain.shape)} must both be (tiles, cols)"
            )
        if not bool((self.gain > 0).all()):
            raise ValueError("read-path gains must be > 0")
        if not self.date:
            self.date = _now_iso()
        if not self.version:
            blob = json.dumps(
                {"offset": self.offset_a.tolist(), "gain": self.gain.tolist(), "mode": self.mode}
            )
            self.version = f"{hashlib.sha256(blob.encode()).hexdigest()[:12]}@{self.date}"

    def apply(self, currents: Tensor, *, tile: int | None = None) -> Tensor:
        """Correct raw column currents: ``(tiles, batch, cols)`` (all tiles) or
        ``(batch, cols)`` / ``(cols,)`` with ``tile`` (or a single-tile calibration)."""
        i = torch.as_tensor(currents)
        off = self.offset_a.to(i.device, i.dtype if i.is_floating_point() else torch.float64)
        gain = self.gain.to(off.device, off.dtype)
        if tile is not None or (self.gain.shape[0] == 1 and i.dim() <= 2):
            t = 0 if tile is None else tile
            return (i - off[t]) / gain[t]
        if i.dim() != 3 or i.shape[0] != self.gain.shape[0]:
            raise ValueError(
                f"currents of shape {tuple(i.shape)}: expected (tiles={self.gain.shape[0]}"
                ", batch, cols) or pass tile="
            )
        return (i - off[:, None, :]) / gain[:, None, :]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": "read_calibration",
            "version": self.version,
            "date": self.date,
            "mode": self.mode,
            "v_levels": list(self.v_levels),
            "offset_a": self.offset_a.tolist(),
            "gain": self.gain.tolist(),
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReadCalibration:
        if data.get("kind", "read_calibration") != "read_calibration":
            raise ValueError(f"not a read calibration: kind={data.get('kind')!r}")
        return cls(
            offset_a=torch.tensor(data["offset_a"], dtype=torch.float64),
            gain=torch.tensor(data["gain"], dtype=torch.float64),
            mode=data.get("mode", "absolute"),
            v_levels=tuple(data.get("v_levels", ())),
            version=data.get("version", ""),
            date=data.get("date", ""),
            extra=dict(data.get("extra", {})),
        )

    def to_file(self, path: str | Path) -> Path:
        """Write the calibration as JSON (the versioned file a run records)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        self.path = str(path.resolve())
        return path

    @classmethod
    def load(cls, path: str | Path) -> ReadCalibration:
        """Read a file written by ``to_file``; ``path`` is kept (``calibration_versions``
        records it with the file's content hash)."""
        cal = cls.from_dict(json.loads(Path(path).read_text()))
        cal.path = str(Path(path).resolve())
        return cal


def calibrate_read_path(
    backend: Backend,
    *,
    reference_cells: Tensor | None = None,
    reference_g_s: Tensor | None = None,
    v_levels: Sequence[float] = (0.05, 0.1, 0.15, 0.2),
    n_repeats: int = 4,
) -> ReadCalibration:
    """Measure per-column offset and gain of ``backend.mvm``.

    ``reference_cells``: boolean mask broadcastable to ``(tiles, rows, cols)`` (None: every
    cell). ``reference_g_s``: their known conductances (S), either a full
    ``(tiles, rows, cols)`` tensor or a 1-D tensor in row-major mask order; None: the
    reference cells share one conductance and the gains come out relative (mean 1).
    ``v_levels`` (V) must lie within the backend's read limits. Costs
    ``n_repeats * (1 + len(v_levels))`` mvm calls.
    """
    tiles, rows, cols = backend.shape
    mask = (
        torch.ones(backend.shape, dtype=torch.bool)
        if reference_cells is None
        else backend.cell_mask(reference_cells).cpu()
    )
    if not bool(mask.any()):
        raise ValueError("calibrate_read_path: no reference cells selected")
    levels = [float(v) for v in v_levels]
    if not levels or any(v == 0 for v in levels):
        raise ValueError("calibrate_read_path: v_levels must be non-empty and non-zero")
    if reference_g_s is None:
        g_ref = torch.ones(backend.shape, dtype=torch.float64)
        mode = "relative"
    else:
        g = torch.as_tensor(reference_g_s, dtype=torch.float64).cpu()
        if g.dim() == 1:
            if g.numel() != int(mask.sum()):
                raise ValueError(
                    f"reference_g_s has {g.numel()} values for {int(mask.sum())} reference cells"
                )
            g_ref = torch.zeros(backend.shape, dtype=torch.float64)
            g_ref[mask] = g
        else:
            g_ref = torch.broadcast_to(g, backend.shape).clone()
        mode = "absolute"

    # offsets: all rows at 0 V
    zeros = torch.zeros(1, rows, dtype=backend.dtype)
    offset = torch.stack(
        [backend.mvm(zeros).double().cpu()[:, 0, :] for _ in range(n_repeats)]
    ).mean(0)  # (tiles, cols)

    # gains: one-hot drives of every row that holds a reference cell, at every level
    ref_rows = [r for r in range(rows) if bool(mask[:, r, :].any())]
    drives, meta = [], []
    for r in ref_rows:
        for v in levels:
            x = torch.zeros(rows, dtype=torch.float64)
            x[r] = v
            drives.append(x)
            meta.append((r, v))
    v_in = torch.stack(drives).to(backend.dtype)
    currents = torch.stack([backend.mvm(v_in).double().cpu() for _ in range(n_repeats)]).mean(0)
    currents = currents - offset[:, None, :]  # (tiles, n_drives, cols)
    r_idx = torch.tensor([m[0] for m in meta])
    v_val = torch.tensor([m[1] for m in meta], dtype=torch.float64)
    x = v_val[None, :, None] * g_ref[:, r_idx, :]  # expected current, (tiles, n, cols)
    used = mask[:, r_idx, :].to(torch.float64)
    sxx = (used * x * x).sum(1)
    sxy = (used * x * currents).sum(1)
    has_ref = sxx > 0
    gain = torch.where(has_ref, sxy / sxx.clamp_min(1e-300), torch.ones_like(sxx))
    if mode == "relative":
        for t in range(tiles):
            sel = has_ref[t]
            if bool(sel.any()):
                gain[t] = torch.where(sel, gain[t] / gain[t][sel].mean(), gain[t])
    if not bool((gain > 0).all()):
        raise ValueError(
            "calibrate_read_path: a column's measured gain is <= 0 (reference "
            "cells too weak for the read noise, or wiring reversed)"
        )
    return ReadCalibration(
        offset_a=offset,
        gain=gain,
        mode=mode,
        v_levels=tuple(levels),
        extra={"n_repeats": n_repeats, "columns_without_reference": int((~has_ref).sum())},
    )


__all__ = ["ReadCalibration", "calibrate_read_path"]
