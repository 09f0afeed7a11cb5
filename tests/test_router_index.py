"""The least-work router's incremental index picks exactly the node a full scan picks, tie-breaks included."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scenarios import make_scenario

import sim.runner.simulation
from sim.fleet.fleet import FleetManager
from sim.fleet.router import LeastWork, make_router
from sim.runner.simulation import simulate
from sim.traffic.request import Request


def full_scan(nodes) -> int:
    """The definition: the first node with the fewest outstanding tokens, every node evaluated."""
    works = [n.outstanding_tokens() for n in nodes]
    return works.index(min(works))


class CheckedLeastWork(LeastWork):
    """The index forced on (any fleet size), checked against the scan at every arrival."""

    picks = 0

    def __init__(self, nodes):
        super().__init__(nodes, index_min_nodes=1, low_nodes=2)  # most nodes above the level: every path taken

    def pick(self, req):
        got = super().pick(req)
        want = full_scan(self.nodes)
        works = [n.outstanding_tokens() for n in self.nodes]
        assert got == want, f"t={self.nodes[0].env.now}: index picked {got}, scan {want}; work {works}"
        if self._indexed:
            CheckedLeastWork.picks += 1
        return got


@pytest.fixture
def checked(monkeypatch):
    def make(policy, nodes, rng, spec=None, env=None, speed=None):
        return CheckedLeastWork(nodes) if policy == "least_work" else make_router(policy, nodes, rng, spec, env, speed)

    # the fleet takes its router factory as an argument (sim.fleet.fleet is compiled by `make native`: a patched
    # module attribute would not be seen)
    monkeypatch.setattr(sim.runner.simulation, "FleetManager", functools.partial(FleetManager, router_factory=make))
    CheckedLeastWork.picks = 0
    return CheckedLeastWork


CASES = {
    "busy, 6 nodes": {"fleet.nodes": 6, "traffic.rate_rps": 40.0},
    "tight KV, preemptions, small blocks": {"fleet.nodes": 4, "traffic.rate_rps": 30.0,
                                            "fleet.engine": {"num_gpu_blocks_override": 600, "block_size": 4}},
    "priority queue, reserve_kv": {"fleet.nodes": 3, "traffic.rate_rps": 25.0,
                                   "fleet.engine": {"scheduling_policy": "priority", "reserve_kv": True,
                                                    "max_num_seqs": 8}},
    "spot evictions and an autoscaler (nodes come and go)": {
        "fleet.nodes": 1, "traffic.rate_rps": 20.0, "duration_s": 120,
        "fleet.spot": {"nodes": 3, "evictions_per_node_hour": 90.0, "notice_s": 2.0, "replace": True},
        "fleet.on_demand": {"max_nodes": 3, "provision_s": 5.0, "model_load_s": 5.0},
        "fleet.autoscaler": {"policy": "queue", "interval_s": 5.0, "scale_up_queue": 1.0, "scale_down_queue": 0.1,
                             "scale_down_cooldown_s": 10.0}},
    "client timeouts (queued and running requests withdrawn) and retries": {
        "fleet.nodes": 3, "traffic.rate_rps": 40.0, "duration_s": 40,
        "traffic.classes": [{"name": "chat", "share": 1.0,
                             "input_tokens": {"dist": "lognormal", "median": 300, "p95": 1500, "max": 8000},
                             "output_tokens": {"dist": "lognormal", "median": 100, "p95": 400, "max": 2000},
                             "client": {"timeout_s": 3.0, "stream": False, "retries": 1}}]},
    "light load (idle nodes, ties at zero)": {"fleet.nodes": 5, "traffic.rate_rps": 2.0},
    "step-time jitter (some decode steps shorter than the first)": {
        "fleet.nodes": 4, "traffic.rate_rps": 30.0, "fleet.engine": {"step_jitter": {"cv": 0.3}}},
}


@pytest.mark.parametrize("case", list(CASES))
def test_index_picks_what_the_scan_picks(checked, case):
    result = simulate(make_scenario(**CASES[case]))
    assert checked.picks >= 0.9 * result.counts()["arrived"]  # the index did answer (nearly) every arrival


def test_index_and_scan_give_identical_runs(monkeypatch):
    sc = make_scenario(**{"fleet.nodes": 5, "traffic.rate_rps": 30.0, "duration_s": 30})
    monkeypatch.setattr(sim.fleet.router, "INDEX_MIN_NODES", 1)
    indexed = simulate(sc)
    monkeypatch.setattr(sim.fleet.router, "INDEX_MIN_NODES", 10**9)
    scanned = simulate(sc)
    key = lambda r: (r.node, r.first_token_s, r.finish_s)
    assert [key(r) for r in indexed.requests] == [key(r) for r in scanned.requests]


class FakeNode:
    """Work that jumps at reported changes, and falls by ``step`` tokens per ``dt`` in between (a decode run)."""

    def __init__(self, node_id, env):
        self.node_id, self.env = node_id, env
        self.work_changed = None
        self.set(0, 0, 1.0, 0)

    def set(self, work, step, dt, steps):  # work never falls below 0, as a node's cannot
        self.w0, self.step, self.dt, self.steps, self.t0 = work, step, dt, steps, self.env.now
        if self.work_changed is not None:
            self.work_changed(self)

    def _done(self):
        return min(self.steps, int((self.env.now - self.t0) / self.dt)) if self.step else 0

    def outstanding_tokens(self):
        return self.w0 - self.step * self._done()

    def work_floor(self):
        return self.w0 - self.step * self.steps if self.step else self.outstanding_tokens()

    def work_level(self, level):
        m = self._done()
        if not self.step or m >= self.steps:
            return self.outstanding_tokens(), float("inf")
        w = self.w0 - self.step * m
        j = m + 1 if w <= level else -((level - self.w0) // self.step)
        return w, float("inf") if j > self.steps else self.t0 + j * self.dt - 1e-6


class FakeEnv:
    now = 0.0


@pytest.mark.parametrize("low_nodes", [1, 3, 64])
@pytest.mark.parametrize("seed", range(6))
def test_index_matches_scan_on_random_sequences(seed, low_nodes):
    rng = np.random.default_rng(seed)
    env = FakeEnv()
    nodes = [FakeNode(i, env) for i in range(int(rng.integers(2, 40)))]
    router = LeastWork(nodes, index_min_nodes=1, low_nodes=low_nodes)
    for _ in range(1500):
        env.now += float(rng.exponential(0.004))  # picks between, at and after step ends
        for node in rng.choice(nodes, size=int(rng.integers(0, 3)), replace=False):
            if rng.random() < 0.3:
                node.set(int(rng.integers(0, 20)) * 10, 0, 1.0, 0)  # idle or stepping: constant work
            else:  # decode runs whose work crosses the others' (many ties)
                work, step = int(rng.integers(60, 200)), int(rng.integers(1, 6))
                node.set(work, step, float(rng.uniform(0.005, 0.03)), int(rng.integers(1, work // step + 1)))
        assert router.pick(Request()) == full_scan(nodes)
        if rng.random() < 0.01:  # a node leaves or comes back
            if len(nodes) > 2 and rng.random() < 0.5:
                nodes.pop(int(rng.integers(len(nodes))))
            else:
                nodes.append(FakeNode(max(n.node_id for n in nodes) + 1, env))
            router.nodes_changed()

