"""Pools of a fleet (``fleet.pools``, docs/pools.md): which slots belong to which pool, which pools serve which
model, and what each pool's nodes are (:class:`~sim.runner.simulation.NodeModel` per pool).

A scenario without ``fleet.pools`` is one ``mixed`` pool made of the fleet-level fields, so every function here
also describes today's single fleet. Slots are numbered pool by pool, each pool's reserved, then spot, then
on-demand slots (the single-pool numbering is unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.core.config import Pool, Scenario, model_key
from sim.core.errors import ConfigError

RESERVED, SPOT, ON_DEMAND = "reserved", "spot", "on_demand"


@dataclass(frozen=True)
class PoolLayout:
    """The slots of each pool and the model group each pool and request class belongs to.

    ``slot_pool[s]``: pool index of slot ``s``; ``slot_kind[s]``: reserved / spot / on_demand; ``pool_group[p]``:
    model-group index of pool ``p`` (pools serving the same model share a group, numbered in order of first
    appearance); ``class_group[k]``: model-group index of request class ``k``; ``group_models[g]``: the model
    name of group ``g`` as the first pool serving it spells it."""

    pools: tuple[Pool, ...]
    slot_pool: tuple[int, ...]
    slot_kind: tuple[str, ...]
    pool_group: tuple[int, ...]
    class_group: tuple[int, ...]
    group_models: tuple[str, ...]

    def pool_slots(self, pool: int) -> list[int]:
        return [s for s, p in enumerate(self.slot_pool) if p == pool]

    def group_pools(self, group: int) -> list[int]:
        return [p for p, g in enumerate(self.pool_group) if g == group]


def pool_layout(scenario: Scenario) -> PoolLayout:
    """The :class:`PoolLayout` of ``scenario`` (class models are checked at load time: an unknown one here is
    a ConfigError too)."""
    fleet = scenario.fleet
    pools = fleet.pool_list()
    slot_pool: list[int] = []
    slot_kind: list[str] = []
    for i, p in enumerate(pools):
        kinds = [RESERVED] * p.nodes + [SPOT] * p.spot.nodes + [ON_DEMAND] * p.on_demand.max_nodes
        slot_pool += [i] * len(kinds)
        slot_kind += kinds
    keys: list[str] = []
    models: list[str] = []
    pool_group = []
    for p in pools:
        k = model_key(p.model)
        if k not in keys:
            keys.append(k)
            models.append(p.model)
        pool_group.append(keys.index(k))
    class_group = []
    for i, c in enumerate(scenario.traffic.classes):
        want = model_key(c.model if c.model is not None else fleet.model)
        if want not in keys:
            raise ConfigError(scenario.source, f"traffic.classes.{i}.model",
                              f"no pool serves model '{c.model or fleet.model}' (pools serve: {', '.join(models)})")
        class_group.append(keys.index(want))
    return PoolLayout(tuple(pools), tuple(slot_pool), tuple(slot_kind), tuple(pool_group), tuple(class_group),
                      tuple(models))
