"""Reading a published-points CSV into validated rows: a bad cell is one line naming the file, line and field."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sim.core.errors import ConfigError

RowT = TypeVar("RowT", bound=BaseModel)


class PublishedRun(BaseModel):
    """The columns every published-run CSV shares: the row, its run, where it comes from, and the node that ran it
    (GPU, model, precisions, the engine's batch limits)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    run: str = Field(min_length=1)
    source: str
    stack: str
    gpu: str
    gpus: int = Field(ge=1)
    model: str
    weights: str
    kv: str
    max_num_seqs: int = Field(ge=1)
    max_num_batched_tokens: int = Field(ge=1)
    max_model_len: int = Field(ge=1)


def read_rows(path: Path, row_model: type[RowT]) -> list[tuple[int, RowT]]:
    """``(line number, row)`` for every data row of ``path`` validated as ``row_model`` (cells stripped, empty
    cells as ''); raises :class:`ConfigError` for a missing file or the first bad cell."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found (capsim validate needs a checkout with calibration/data)") \
            from None
    rows: list[tuple[int, RowT]] = []
    for i, row in enumerate(csv.DictReader(text.splitlines()), start=2):
        try:
            rows.append((i, row_model.model_validate({k: (v or "").strip() for k, v in row.items() if k is not None})))
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"]) or "row"
            raise ConfigError(str(path), f"line {i}: {where}", err["msg"]) from None
    return rows
