"""The live web view of the run store: ``memhil monitor`` (read-only; docs/monitor.md)."""

from memhil.monitor.plot_kinds import PLOT_KINDS, plot_kind, plots_for
from memhil.monitor.store_view import PointCursor, StoreView

__all__ = ["PLOT_KINDS", "PointCursor", "StoreView", "plot_kind", "plots_for"]
