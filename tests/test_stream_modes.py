"""`capsim run --stream` without a per-request file: `--no-requests` (summary, time series, report) and
`--no-report` (the summary only, no files), for sweeps of long runs. Same summary as the full streamed run."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sim.cli import main

SETS = ["--set", "duration_s=30", "--set", "warmup_s=0", "--set", "traffic.rate_rps=8"]


def _run(*args: str) -> str:
    res = CliRunner().invoke(main, ["run", *SETS, *args])
    assert res.exit_code == 0, res.output
    return res.output


def test_no_requests_and_summary_only_give_the_full_streamed_summary(tmp_path: Path):
    full, lean = tmp_path / "full", tmp_path / "lean"
    _run("--stream", "--out", str(full))
    _run("--stream", "--no-requests", "--out", str(lean))
    assert (full / "requests.parquet").exists()
    assert not (lean / "requests.parquet").exists()
    assert (lean / "summary.json").exists() and (lean / "timeseries.parquet").exists()
    want = json.loads((full / "summary.json").read_text())
    assert json.loads((lean / "summary.json").read_text()) == want

    bare = tmp_path / "bare"
    printed = json.loads(_run("--stream", "--no-report", "--json", "--out", str(bare)))
    assert not bare.exists()  # nothing written
    assert printed == want


def test_no_requests_needs_stream():
    res = CliRunner().invoke(main, ["run", *SETS, "--no-requests", "--no-report"])
    assert res.exit_code == 2 and "--no-requests" in res.output


def test_streamed_latency_cdf_title_counts_the_requests_as_in_memory(tmp_path: Path, monkeypatch):
    """The CDF plot's title names how many requests it describes, streamed or not, and the same number."""
    import sim.report.run_report as rr

    titles: list[str] = []
    real = rr.plot_latency_cdfs

    def spy(*args, **kwargs):
        fig = real(*args, **kwargs)
        titles.append(fig._suptitle.get_text())
        return fig

    monkeypatch.setattr(rr, "plot_latency_cdfs", spy)
    sets = ["--set", "warmup_s=5"]
    _run(*sets, "--out", str(tmp_path / "mem"))
    _run(*sets, "--stream", "--out", str(tmp_path / "stream"))
    mem, streamed = titles
    assert "served interactive requests that arrived after the 5-s warm-up" in mem
    assert streamed == mem
