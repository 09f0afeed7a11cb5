"""Generated blocks in markdown docs: the text between ``<!-- generated: benchmarks/SCRIPT NAME -->`` (or, for a
page with one block, ``<!-- generated: benchmarks/SCRIPT -->``) and the next ``<!-- end generated -->`` belongs to
SCRIPT, which reruns the commands the page shows and rewrites it with ``--write``. Shared by the doc scripts in
benchmarks/ (sizing_docs.py, readme_whatifs.py, docs_outputs.py and the validation scripts)."""

from __future__ import annotations

from pathlib import Path

END = "<!-- end generated -->"


class MarkerError(ValueError):
    """A doc lacks a block's start marker or its end marker."""


def start_marker(script: str, name: str | None = None) -> str:
    """``<!-- generated: benchmarks/SCRIPT NAME -->`` (no NAME: the page's only block of SCRIPT)."""
    return f"<!-- generated: benchmarks/{script}{'' if name is None else ' ' + name} -->"


def replace_block(doc: str, script: str, name: str | None, block: str) -> str:
    """``doc`` with the text between the block's start marker and the next end marker replaced by ``block``
    (on lines of its own); raises :class:`MarkerError` naming the missing marker."""
    start = start_marker(script, name)
    head, found, rest = doc.partition(start)
    if not found:
        raise MarkerError(f"no marker {start!r}")
    if start in rest:
        raise MarkerError(f"marker {start!r} appears twice")
    _, found_end, tail = rest.partition(END)
    if not found_end:
        raise MarkerError(f"no {END!r} after {start!r}")
    return f"{head}{start}\n{block.strip(chr(10))}\n{END}{tail}"


def write_block(path: Path, script: str, name: str | None, block: str) -> None:
    """Replace the block in the file at ``path`` (atomically; the file is untouched when a marker is missing)."""
    from sim.core.atomic_io import write_text

    write_text(path, replace_block(path.read_text(), script, name, block))
