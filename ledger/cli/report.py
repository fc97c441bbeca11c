"""Plain-text tables for people watching a federation: one per round, and the lineage at the end.

Pure: facts in, text out. Used by the aggregator's console, the demo and the audit CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledger.core.reasons import RejectReason

if TYPE_CHECKING:
    from aggregator.coordinator import RoundResult


@dataclass(frozen=True)
class RoundRow:
    node: str
    update_hash: str
    num_samples: int
    status: str


def short(value: str | None, width: int = 12) -> str:
    if value is None:
        return "-"
    return value if len(value) <= width else value[:width] + "…"


def reason_text(code: int) -> str:
    try:
        reason = RejectReason(code)
    except ValueError:
        return f"code {code}"
    return f"{reason.name.lower()}: {reason.description}"


def format_round(
    round_number: int,
    rows: Sequence[RoundRow],
    *,
    model_hash: str | None,
    accuracy: float | None,
    note: str = "",
    abandon_reason: str | None = None,
) -> str:
    included = sum(1 for row in rows if row.status.startswith("included"))
    lines = [
        f"round {round_number}: {included} included, {len(rows) - included} rejected"
        + (f" — {note}" if note else ""),
        f"  {'node':<44} {'update':<14} {'samples':>7}  status",
    ]
    for row in sorted(rows, key=lambda r: r.node):
        lines.append(f"  {row.node:<44} {short(row.update_hash):<14} {row.num_samples:>7}  {row.status}")
    if model_hash is None:
        lines.append("  no new model: round abandoned" + (f" ({abandon_reason})" if abandon_reason else ""))
    else:
        shown = "-" if accuracy is None else f"{accuracy:.4f}"
        lines.append(f"  global model {model_hash}  test accuracy {shown}")
    return "\n".join(lines)


@dataclass(frozen=True)
class LineageRow:
    version: int
    round: int
    model_hash: str
    included_count: int
    accuracy: float | None


def format_lineage(rows: Sequence[LineageRow]) -> str:
    """Genesis first; each version names the round that built it from the one above."""
    lines = ["lineage (genesis → latest):"]
    for row in sorted(rows, key=lambda r: r.version):
        shown = "" if row.accuracy is None else f"  accuracy {row.accuracy:.4f}"
        origin = "genesis" if row.version == 0 else f"round {row.round}, {row.included_count} updates"
        lines.append(f"  v{row.version:<3} {row.model_hash}  ({origin}){shown}")
    return "\n".join(lines)


def round_rows(result: RoundResult) -> list[RoundRow]:
    def spent(node: str) -> str:
        epsilon = result.epsilons.get(node)
        return "" if epsilon is None else f", ε {epsilon}"

    valid = "included" if result.committed else "valid, not committed"
    rows = [RoundRow(s.node, s.update_hash, s.num_samples, f"{valid}{spent(s.node)}") for s in result.included]
    rows += [
        RoundRow(s.node, s.update_hash, s.num_samples, f"rejected ({reason_text(int(r))}{spent(s.node)})")
        for s, r, _ in result.rejected
    ]
    return rows


def print_round(result: RoundResult) -> None:
    reason = result.abandon_reason
    print(
        format_round(
            result.round,
            round_rows(result),
            model_hash=result.model_hash,
            accuracy=result.accuracy,
            note="closed before this process looked (found on chain)" if result.found_closed else "",
            abandon_reason=f"{reason.name.lower()}: {reason.description}" if reason is not None else None,
        ),
        flush=True,
    )


@dataclass(frozen=True)
class AttestationRow:
    version: int
    model_hash: str
    auditor: str
    ok: bool
    findings: tuple[str, ...]  # finding kinds from the auditor's report


def format_attestations(rows: Sequence[AttestationRow]) -> str:
    """Per version, each auditor's verdict; a failing one with the findings its report names."""
    lines = ["attestations (on chain):"]
    for row in sorted(rows, key=lambda r: (r.version, r.auditor)):
        verdict = "ok" if row.ok else "FAILED" + (f" ({', '.join(row.findings)})" if row.findings else "")
        lines.append(f"  v{row.version:<3} {short(row.model_hash)}  auditor {short(row.auditor, 14)}  {verdict}")
    return "\n".join(lines)
