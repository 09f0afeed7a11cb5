"""Atomic output: every file is written to a temporary sibling ``.<name>.<pid>-<random>.tmp`` and renamed into
place, so an interrupted or failed run never leaves a half-written result over a good one. The temporary file
is created by the writer itself, so files follow the user's umask (not mkstemp's 0600); temporaries of dead
processes are removed by :func:`sim.core.outdir.remove_stale_temporaries`. An OSError (read-only folder, disk
full, permission) becomes a :class:`~sim.core.errors.FileError` naming the path."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from sim.core.errors import FileError


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` to ``path`` (same folder, so the rename is atomic)."""
    path = Path(path)
    tmp_path = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp_path)
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.filename is not None and Path(exc.filename) == tmp_path:
            exc.filename = str(path)
        raise FileError.from_os(exc, path) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_json(path: Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_parquet(path: Path, df: pd.DataFrame) -> Path:
    return atomic_write(path, lambda p: df.to_parquet(p, index=False))


def write_csv(path: Path, df: pd.DataFrame, **to_csv: Any) -> Path:
    """``df`` as CSV without its index; ``to_csv`` passes options such as ``float_format`` through."""
    return atomic_write(path, lambda p: df.to_csv(p, index=False, **to_csv))
