"""train_log.csv: the loss, lr and rate of a run every `log_every_steps` steps.

Its own module because the columns are a file format that readers rely on (docs/outputs.md,
the training plots), written once at the end of a run from the rows the loop collected.
"""
from __future__ import annotations

import os
from typing import Any


LOG_COLUMNS = ("step", "tokens", "loss", "lr", "tokens_per_s")


def write_log_csv(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """train_log.csv, atomically (csv module: GPU nodes may lack pandas)."""
    import csv
    import io as _io

    from archscale.io import write_text

    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: row[k] for k in LOG_COLUMNS} for row in rows)
    write_text(path, buffer.getvalue())
