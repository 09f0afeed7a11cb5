"""Sweeps: run a grid of scenarios × seeds in parallel (local cores or Dask), resumably, into tidy tables.

See ``docs/sweeps.md``. Entry points: :func:`load_experiment`, :func:`run_sweep`.
"""

from sim.sweep.experiment import Experiment, Point, load_experiment, point_key
from sim.sweep.results import aggregates_table, results_table
from sim.sweep.runner import PointTask, SweepReport, run_point, run_sweep
from sim.sweep.store import PointStore

__all__ = ["Experiment", "Point", "PointStore", "PointTask", "SweepReport", "aggregates_table", "load_experiment",
           "point_key", "results_table", "run_point", "run_sweep"]
