"""`capsim run`'s first line does not call an autoscaled fleet by its reserved node count alone."""

from __future__ import annotations

import dataclasses

from scenarios import make_scenario

from sim.cli.run import _print_summary
from sim.report.run_report import write_report
from sim.runner.pipeline import run_scenario


def test_autoscaled_head_names_reserved_and_mean_nodes_up(capsys, tmp_path):
    out = run_scenario(make_scenario(duration_s=5, **{"traffic.rate_rps": 2.0}))
    s = out.summary
    _print_summary(s, None)
    assert "autoscaled" not in capsys.readouterr().out.splitlines()[0]
    scaled = dataclasses.replace(
        s, cost=dataclasses.replace(s.cost, gpu_hours_by_kind={"reserved": 1.0, "on_demand": 1.6}),
        utilisation=dataclasses.replace(s.utilisation, nodes_up_mean=2.6))
    _print_summary(scaled, None)
    head = capsys.readouterr().out.splitlines()[0]
    assert f"{s.fleet.nodes} reserved node(s) + autoscaled (mean 2.6 up)" in head
    write_report(tmp_path, scaled, out.requests, out.timeseries, out.timeseries_nodes, 5.0, "x")
    assert f"{s.fleet.nodes} reserved + autoscaled (mean 2.6 up) × " in (tmp_path / "report.html").read_text()


def test_requests_line_names_the_arrivals_after_warm_up(capsys):
    """The requests line counts every arrival, the SLO and model lines those after warm-up: the line says both."""
    s = run_scenario(make_scenario(**{"duration_s": 30, "warmup_s": 10, "traffic.rate_rps": 4.0})).summary
    after = sum(c.arrived for c in s.slo.by_class.values())
    assert 0 < after < s.requests.arrived
    _print_summary(s, None)
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("requests"))
    assert f"{s.requests.arrived:,} arrived ({after:,} after the 10-s warm-up)," in line
