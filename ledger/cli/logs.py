"""How progress and log lines look: human lines, JSON lines (`--log-format json`), or nothing (`-q`).

Roles report progress as INFO records with fields (`ledger.core.progress.report`). Here they
become `node 0x7099…: round 3: training epoch 2/5` on stderr, or one JSON object per line
(`{"time": …, "role": …, "event": "training", "round": 3, "epoch": 2, …}`) for programs such as
the demo, which relays its children's lines. Results (tables, `--json` documents) go to stdout and
are not affected. Light on purpose: imported by the command table before any command runs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

FORMATS = ("text", "json")
# fedledger's own loggers report progress at INFO; everything else (web3, urllib3) only warns.
OUR_LOGGERS = ("ledger", "aggregator", "edge_node")

_role: list[str] = [""]


def set_role(role: str) -> None:
    """Name this process in every line it logs from now on (e.g. `node 0x7099…`, `aggregator`)."""
    _role[0] = role


class HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = f"{_role[0]}: " if _role[0] else ""
        level = "" if record.levelno <= logging.INFO else f"{record.levelname.lower()}: "
        line = f"{prefix}{level}{record.getMessage()}"
        if record.exc_info and record.levelno >= logging.ERROR:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "role": _role[0] or None,
            "logger": record.name,
            "event": getattr(record, "event", None),
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update({key: value for key, value in fields.items() if key not in document})
        return json.dumps(document, default=str)


class _OurHandler(logging.StreamHandler):
    """The handler `setup_logging` installs (others, such as pytest's, are left alone)."""


def setup_logging(*, quiet: bool, log_format: str, verbose: bool) -> None:
    """One stderr handler for the whole process, in the chosen format."""
    handler = _OurHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else HumanFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if isinstance(existing, _OurHandler):  # a previous call's (tests run several commands in one process)
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    ours = logging.DEBUG if verbose else logging.INFO
    if quiet:
        ours = logging.CRITICAL + 1
        root.setLevel(ours)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(ours)


def extract_options(argv: list[str]) -> tuple[list[str], bool, str]:
    """(argv without them, quiet, log format): `-q` and `--log-format` are accepted anywhere."""
    rest: list[str] = []
    quiet, log_format = False, "text"
    words = iter(argv)
    for word in words:
        if word in ("-q", "--quiet"):
            quiet = True
        elif word == "--log-format":
            log_format = next(words, "")
            if log_format not in FORMATS:
                rest += [word, log_format]  # leave it for argparse to refuse with the usage message
        elif word.startswith("--log-format="):
            log_format = word.split("=", 1)[1]
            if log_format not in FORMATS:
                rest.append(word)
        else:
            rest.append(word)
    return rest, quiet, log_format
