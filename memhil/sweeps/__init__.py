"""Sweeps: one run file (a protocol file; experiment files through the same seam) run
over a grid, random points and seeds of its keys, one Ray task per trial, every trial a
run in the run store tagged with the sweep and its axis values. ``load_sweep_file``,
``run_sweep``; the file format in ``memhil.sweeps.sweep_file``, the seam in
``memhil.sweeps.run_kinds``, how to use a cluster in docs/sweeps.md."""

from memhil.sweeps.engine import SweepOutcome, run_sweep
from memhil.sweeps.sweep_file import SweepFile, Trial, TrialResources, load_sweep_file

__all__ = ["SweepFile", "SweepOutcome", "Trial", "TrialResources", "load_sweep_file", "run_sweep"]
