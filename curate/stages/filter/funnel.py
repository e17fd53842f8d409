"""The funnel: per top-level condition, what it removes alone, in order, and only by itself."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from curate.progress import console


def build_funnel(labels: list[str], totals: dict[str, Any], cutoffs: list[dict[str, Any]]) -> dict[str, Any]:
    population = int(totals.get("samples", 0))
    per_condition = totals.get("funnel") or {}
    rows = []
    remaining = population
    for i, label in enumerate(labels):
        counts = per_condition.get(f"{i:03d}", {})
        remaining = int(counts.get("remaining", remaining if not counts else 0))
        rows.append({
            "index": i,
            "condition": label,
            "removed_alone": int(counts.get("removed_alone", 0)),
            "removed_in_order": int(counts.get("removed_in_order", 0)),
            "removed_only_by_this": int(counts.get("removed_only_by_this", 0)),
            "remaining": remaining,
        })
    counts = totals.get("counts") or {}
    return {
        "population": population,
        "not_downloaded": int(counts.get("not downloaded", 0)),
        "kept": int(counts.get("kept", 0)),
        "conditions": rows,
        "cutoffs": cutoffs,
        "missing_values": {k.removeprefix("missing value: "): int(v) for k, v in counts.items()
                           if k.startswith("missing value: ")},
    }


def print_funnel(name: str, funnel: dict[str, Any]) -> None:
    population = funnel["population"] or 1
    table = Table(title=f"filter {name}: {funnel['kept']:,} of {funnel['population']:,} samples kept "
                        f"({100 * funnel['kept'] / population:.2f}%)")
    for col in ("#", "condition", "removed alone", "removed in order", "only this", "remaining", "% left"):
        table.add_column(col, justify="left" if col == "condition" else "right")
    for row in funnel["conditions"]:
        table.add_row(
            str(row["index"]), row["condition"], f"{row['removed_alone']:,}", f"{row['removed_in_order']:,}",
            f"{row['removed_only_by_this']:,}", f"{row['remaining']:,}", f"{100 * row['remaining'] / population:.2f}",
        )
    console.print(table)
    for cut in funnel["cutoffs"]:
        bound = f", up to {cut['rank_error_bound']:,} extra rows (approximate)" if cut.get("approximate") else ""
        console.print(f"  cut-off {cut['condition']}: threshold {cut['threshold']:.6g} "
                      f"(n = {cut['target']:,} of N = {cut['population']:,}{bound})")
    if funnel["not_downloaded"]:
        console.print(f"  {funnel['not_downloaded']:,} shard rows were not successful downloads (not in population)")
    for column, n in funnel["missing_values"].items():
        console.print(f"  {n:,} samples have no value for {column} (comparisons on it are false)")
