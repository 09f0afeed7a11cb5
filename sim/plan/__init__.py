"""``capsim plan``: the cheapest fleet that meets the SLO, over GPU type × GPUs per node × precision ×
max_num_seqs × pricing (method in :mod:`sim.plan.search`; candidates in :mod:`sim.plan.candidates`; closed-form
bounds in :mod:`sim.plan.bounds`; prices in :mod:`sim.plan.pricing`; outputs in :mod:`sim.plan.report`). A fleet with
``fleet.pools`` is planned per model over layouts of pools: :func:`sim.plan.pools.plan_pools` (space in
:mod:`sim.plan.pool_space`, outputs in :mod:`sim.plan.pool_report`).

    from sim.plan import plan
    result = plan(scenario)          # a PlanResult: result.table(), result.winner_scenario_yaml(), ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.core.config import Scenario
    from sim.plan.search import PlanResult


def plan(scenario: Scenario, **options: Any) -> PlanResult:
    """Search the candidate space of ``scenario`` (its ``plan:`` section, overridden by ``options``: the keyword
    arguments of :func:`sim.plan.search.run_plan`) and return the ranked result."""
    from sim.plan.search import run_plan

    return run_plan(scenario, **options)
