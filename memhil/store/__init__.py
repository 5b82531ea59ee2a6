"""Run storage (QCoDeS DataSet on SQLite), export to netCDF and plots."""

from memhil.store.run_store import STATUSES, RunInfo, RunStore, RunWriter

__all__ = ["STATUSES", "RunInfo", "RunStore", "RunWriter"]
