"""The HTML reports of size, compare, sweep and plan: self-contained, the verdict first, the tables, the plots;
rendered in a real headless browser (skipped where chromium is not installed)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from scenarios import BASE

from sim.cli import main

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
SMALL = {**BASE, "duration_s": 30, "warmup_s": 0}


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """sizing.html, compare.html, sweep.html and plan.html of small runs of the real commands."""
    tmp = tmp_path_factory.mktemp("html")
    sc = tmp / "s.yaml"
    raw = copy.deepcopy(SMALL)
    raw["slo"] = {"ttft_p95_s": 1.0, "tpot_p95_s": 0.05}
    raw["plan"] = {"gpus": ["H100-SXM"], "gpus_per_node": [1], "precisions": ["fp8"], "pricing": ["on_demand"],
                   "seeds": 1, "explore": 1}
    sc.write_text(yaml.safe_dump(raw))
    cmp = tmp / "cmp.yaml"
    cmp.write_text(yaml.safe_dump({"name": "c", "base": SMALL, "strategies": [
        {"name": "two", "fleet_nodes": 2}, {"name": "one", "fleet_nodes": 1}]}))
    sw = tmp / "sw.yaml"
    sw.write_text(yaml.safe_dump({"name": "w", "base": SMALL, "axes": {"fleet.nodes": [1, 2]}, "seeds": 1}))
    runs = {"sizing.html": ["size", str(sc), "--seeds", "1", "--max-nodes", "4", "-q", "--out", str(tmp / "size")],
            "compare.html": ["compare", str(cmp), "--workers", "1", "--out", str(tmp / "compare")],
            "sweep.html": ["sweep", str(sw), "--in-process", "--out", str(tmp / "sweep")],
            "plan.html": ["plan", str(sc), "-q", "--workers", "1", "--out", str(tmp / "plan")]}
    out = {}
    for name, args in runs.items():
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, (args, res.output)
        out[name] = Path(args[args.index("--out") + 1]) / name
        assert out[name].exists(), name
    return out


@pytest.mark.parametrize("name", ["sizing.html", "compare.html", "sweep.html", "plan.html"])
def test_report_is_self_contained_with_verdict_table_and_plots(reports, name):
    doc = reports[name].read_text()
    assert doc.startswith("<!doctype html>") and "</html>" in doc
    verdict = re.search(r'<p class="verdict[^"]*">(.*?)</p>', doc, re.S)
    assert verdict and len(verdict.group(1)) > 20, "the answer in one line at the top"
    assert doc.index("verdict") < doc.index("<table"), "the verdict comes before the tables"
    assert "<table" in doc and "<td" in doc
    srcs = re.findall(r'<img[^>]* src="([^"]+)"', doc)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs), "plots embedded, nothing linked"
    assert not re.search(r'(src|href)="(https?:|/|\.\./)', doc), "no external resource"


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--virtual-time-budget=5000", *args], capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")
@pytest.mark.parametrize("name", ["sizing.html", "compare.html", "sweep.html", "plan.html"])
def test_report_renders_in_headless_chromium(reports, name, tmp_path):
    # a copy that records, once loaded, every image's decoded width and the rendered page height
    probe = tmp_path / name
    probe.write_text(reports[name].read_text().replace("</body>", (
        "<script>window.addEventListener('load', () => {document.body.setAttribute('data-imgs', "
        "[...document.images].map(i => i.complete ? i.naturalWidth : 0).join(','));"
        "document.body.setAttribute('data-height', document.body.scrollHeight);});</script></body>")))
    dom = _chromium("--dump-dom", probe.as_uri()).stdout
    widths = re.search(r'data-imgs="([^"]*)"', dom)
    assert widths, dom[:500]
    decoded = [int(w) for w in widths.group(1).split(",") if w]
    assert decoded and all(w > 100 for w in decoded), f"images not decoded: {decoded}"
    assert int(re.search(r'data-height="(\d+)"', dom).group(1)) > 500
    assert re.search(r"<table[^>]*>.*?<td", dom, re.S), "a table with cells"


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")
def test_screenshot_is_not_blank(reports, tmp_path):
    """One screenshot (each browser start costs ~2 s): the compare page, the widest table, paints."""
    shot = tmp_path / "shot.png"
    _chromium("--window-size=1280,1600", f"--screenshot={shot}", reports["compare.html"].as_uri())
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert pixels[..., :3].std() > 0.05, "the page is blank"


def test_run_report_labels_the_warm_up_so_request_counts_reconcile():
    """The Requests row counts every arrival, the SLO and class tables those after warm-up: both say so, and the
    after-warm-up figure in the Requests row is the class table's total."""
    from scenarios import make_scenario

    from sim.report.run_report import _class_table_html, _summary_html
    from sim.runner.pipeline import run_scenario

    s = run_scenario(make_scenario(**{"duration_s": 30, "warmup_s": 10, "traffic.rate_rps": 4.0})).summary
    after = sum(c.arrived for c in s.slo.by_class.values())
    assert 0 < after < s.requests.arrived
    doc = _summary_html(s)
    assert f"{s.requests.arrived:,} arrived" in doc and "warm-up included" in doc
    assert f"{after:,} interactive requests arrived after the 10-s warm-up" in doc
    assert "of the interactive arrivals after the 10-s warm-up" in doc
    assert "arrived after warm-up" in _class_table_html(s.slo)


@pytest.mark.parametrize("name", ["sizing.html", "compare.html", "sweep.html", "plan.html"])
def test_table_headings_are_words_not_field_names(reports, name):
    """A heading such as usd_per_month or ttft_p95_s is a field name, not a label (a dotted axis field such as
    traffic.rate_rps names what the sweep varied, and stays)."""
    heads = re.findall(r"<th[^>]*>([^<]*)</th>", reports[name].read_text())
    raw = [h for h in heads if re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", h.strip())]
    assert not raw, raw


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")
def test_run_report_tables_stay_inside_the_page_at_1400_px(tmp_path):
    """A pools run's report (the Pools table has 15 columns) at 1400 px: no table reaches past the page's box."""
    out, scenario = tmp_path / "run", Path(__file__).resolve().parents[1] / "experiments" / "mixed_pools.yaml"
    res = CliRunner().invoke(main, ["run", str(scenario), "--set", "duration_s=20", "--set", "warmup_s=0",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    probe = tmp_path / "probe.html"
    probe.write_text((out / "report.html").read_text().replace("</body>", (
        "<script>window.addEventListener('load', () => {document.body.setAttribute('data-over', "
        "[...document.querySelectorAll('table')].map(t => Math.round(t.getBoundingClientRect().right - "
        "document.body.getBoundingClientRect().right)).join(','));});</script></body>")))
    dom = _chromium("--window-size=1400,1200", "--dump-dom", probe.as_uri()).stdout
    over = re.search(r'data-over="([^"]*)"', dom)
    assert over and "Pools</h2>" in dom, dom[:500]
    assert max(int(x) for x in over.group(1).split(",")) <= 0, f"px past the page's right edge: {over.group(1)}"
