"""Progress of long work (training, waiting, verifying, committing), as log records with fields.

Roles call `report(log, event, template, **fields)`; the command line decides how records look
(`ledger.cli.logs`): a human line on a terminal, one JSON object per line with `--log-format
json`, nothing with `-q`. Nothing here prints.
"""

from __future__ import annotations

import logging
from typing import Any


def report(log: logging.Logger, event: str, template: str, **fields: Any) -> None:
    """Log `template.format(**fields)` at INFO, keeping `event` and `fields` for JSON output."""
    log.info(template.format(**fields), extra={"event": event, "fields": fields})


def megabytes(size: int) -> str:
    """A byte count the way progress lines show it (0.3 MB, 12 MB)."""
    value = size / 1e6
    return f"{value:.1f} MB" if value < 10 else f"{value:.0f} MB"
