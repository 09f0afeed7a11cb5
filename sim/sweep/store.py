"""Point results on disk: one JSON file per point, named by its key, written atomically.

``OUT/points/<key>.json`` holds ``status`` (``ok`` or ``failed``), the summary (or the error and traceback),
the resolved scenario and bookkeeping (wall time, capsim version, when it finished). A file is renamed into
place only once complete, so a killed sweep leaves either a whole result or none; leftover temporaries are
removed at the next start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.core.atomic_io import write_json

POINTS_DIR = "points"
REQUESTS_DIR = "requests"


@dataclass(frozen=True)
class PointStore:
    """The folder of one sweep's outputs."""

    root: Path

    @property
    def points_dir(self) -> Path:
        return self.root / POINTS_DIR

    def path(self, key: str) -> Path:
        return self.points_dir / f"{key}.json"

    def requests_path(self, key: str) -> Path:
        return self.root / REQUESTS_DIR / f"{key}.parquet"

    def clean_temporaries(self) -> int:
        """Remove temporaries left by an interrupted sweep (by processes no longer running); returns how many."""
        from sim.core.outdir import remove_stale_temporaries

        return sum(remove_stale_temporaries(folder)
                   for folder in (self.points_dir, self.root / REQUESTS_DIR, self.root) if folder.is_dir())

    def load(self, key: str) -> dict[str, Any] | None:
        """The stored record of ``key``, or None if absent or unreadable (then it is recomputed)."""
        try:
            rec = json.loads(self.path(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError):
            return None
        if not isinstance(rec, dict) or rec.get("key") != key or rec.get("status") not in ("ok", "failed"):
            return None
        return rec

    def save(self, record: dict[str, Any]) -> Path:
        """Write ``record`` (which names its ``key``) atomically."""
        return write_json(self.path(record["key"]), record)
