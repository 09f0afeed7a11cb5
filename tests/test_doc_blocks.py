"""The generated-block markers of the doc scripts (benchmarks/doc_blocks.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "doc_blocks", Path(__file__).resolve().parent.parent / "benchmarks" / "doc_blocks.py")
assert _spec and _spec.loader
doc_blocks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(doc_blocks)

DOC = """# Page
prose before
<!-- generated: benchmarks/x.py a -->
old a
<!-- end generated -->
between
<!-- generated: benchmarks/x.py b -->
old b
<!-- end generated -->
after
"""


def test_replaces_only_the_named_block() -> None:
    out = doc_blocks.replace_block(DOC, "x.py", "b", "new b\n")
    assert "old a" in out and "old b" not in out
    assert out == DOC.replace("old b", "new b")
    assert doc_blocks.replace_block(out, "x.py", "b", "new b") == out  # idempotent


def test_unnamed_block() -> None:
    doc = "x\n<!-- generated: benchmarks/y.py -->\n| t |\n<!-- end generated -->\ny\n"
    assert doc_blocks.replace_block(doc, "y.py", None, "| u |") == doc.replace("| t |", "| u |")


@pytest.mark.parametrize(("doc", "problem"), [
    (DOC, "no marker"),                                                     # name c is not there
    ("<!-- generated: benchmarks/x.py c -->\nold\n", "no '<!-- end generated -->'"),
    ("<!-- generated: benchmarks/x.py c -->\n<!-- end generated -->\n" * 2, "twice"),
])
def test_missing_or_repeated_markers_are_named(doc: str, problem: str) -> None:
    with pytest.raises(doc_blocks.MarkerError, match=problem):
        doc_blocks.replace_block(doc, "x.py", "c", "new")


def test_prefix_name_is_not_another_blocks_marker() -> None:
    doc = "<!-- generated: benchmarks/x.py ab -->\nold\n<!-- end generated -->\n"
    with pytest.raises(doc_blocks.MarkerError, match="no marker"):
        doc_blocks.replace_block(doc, "x.py", "a", "new")


def test_write_block_rewrites_the_file_and_leaves_it_whole_on_a_missing_marker(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(DOC)
    doc_blocks.write_block(page, "x.py", "b", "new b")
    assert "new b" in page.read_text() and "old a" in page.read_text() and "old b" not in page.read_text()
    before = page.read_text()
    with pytest.raises(doc_blocks.MarkerError):
        doc_blocks.write_block(page, "x.py", "c", "new c")
    assert page.read_text() == before


_fspec = importlib.util.spec_from_file_location(
    "doc_format", Path(__file__).resolve().parent.parent / "benchmarks" / "doc_format.py")
assert _fspec and _fspec.loader
doc_format = importlib.util.module_from_spec(_fspec)
_fspec.loader.exec_module(doc_format)


@pytest.mark.parametrize(("value_s", "text"), [
    (0.3114, "311 ms"), (0.056, "56.0 ms"), (0.0046, "4.6 ms"), (0.09996, "100 ms"), (0.9994, "999 ms"),
    (0.99996, "1.0 s"), (3.33, "3.3 s"), (79.44, "79.4 s"), (99.96, "100 s"), (1488.4, "1,488 s"),
    (26314.2, "26,314 s"), (float("nan"), "n/a"), (None, "n/a"),
])
def test_one_seconds_rule_for_every_doc_script(value_s: float | None, text: str) -> None:
    assert doc_format.seconds(value_s) == text  # no exponent ("1.49e+03 s"), no "1000 ms"


def test_the_doc_scripts_share_the_formatter() -> None:
    root = Path(__file__).resolve().parent.parent / "benchmarks"
    for script in root.glob("*.py"):
        assert "def seconds(" not in script.read_text() or script.name == "doc_format.py", script.name


def _bench(name: str):  # a benchmarks/ script as a module (it adds the repository root to sys.path itself)
    spec = importlib.util.spec_from_file_location(
        f"bench_{name}", Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_generated_block_has_its_markers_in_its_page() -> None:
    docs_outputs = _bench("docs_outputs")
    for doc, blocks in docs_outputs.CASES.items():
        text = docs_outputs.doc_path(doc).read_text()
        for name, _ in blocks:
            start = doc_blocks.start_marker("docs_outputs.py", name)
            assert text.count(start) == 1, (doc, name)
            assert doc_blocks.END in text[text.index(start):], (doc, name)


def test_prefix_tables_come_from_the_shipped_csv_files() -> None:
    import pandas as pd

    prefix = _bench("prefix_routing")
    tables = prefix.doc_tables(pd.read_csv(prefix.OUT / "routers.csv"), pd.read_csv(prefix.OUT / "capacity.csv"))
    page = prefix.DOC.read_text()
    for name, table in tables.items():
        start = doc_blocks.start_marker("prefix_routing.py", name)
        assert start in page, name
        assert page.split(start, 1)[1].split(doc_blocks.END, 1)[0].strip("\n") == table, f"{name}: rerun --write"
