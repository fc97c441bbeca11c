"""What the aggregator prints after each round (see ledger.report for the table itself)."""

from __future__ import annotations

from ledger.report import RoundRow, format_round, reason_text

from aggregator.coordinator import RoundResult


def round_rows(result: RoundResult) -> list[RoundRow]:
    rows = [RoundRow(s.node, s.update_hash, s.num_samples, "included") for s in result.included]
    rows += [RoundRow(s.node, s.update_hash, s.num_samples, f"rejected ({reason_text(int(r))})") for s, r, _ in result.rejected]
    return rows


def print_round(result: RoundResult) -> None:
    print(format_round(result.round, round_rows(result), model_hash=result.model_hash, accuracy=result.accuracy), flush=True)
