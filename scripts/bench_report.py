"""What every `scripts/bench_*.py` ends with: a Markdown table on stdout and `{"args", "rows"}` JSON on disk.

    from bench_report import print_table, write_results   # scripts/ is on sys.path when a script runs

One place for the table layout and the JSON shape that BENCHMARKS.md quotes; the JSON is written atomically.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from sid_tokenizer.sidmap import atomic_write_text


def print_table(columns: Sequence[tuple[str, Callable[[dict], object]]], rows: Sequence[dict]) -> None:
    """Print `rows` as a Markdown table: one (header, cell function) pair per column."""
    print("| " + " | ".join(header for header, _ in columns) + " |")
    print("|" + " --- |" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(cell(row)) for _, cell in columns) + " |")


def write_results(path: str | Path, args: argparse.Namespace, rows: list[dict]) -> Path:
    """Write {"args": the script's arguments, "rows": rows} to `path` (atomically) and return it."""
    atomic_write_text(path, json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return Path(path)


def runs(seconds: Sequence[float]) -> str:
    """Repeated timings as '12.3 / 12.1'."""
    return " / ".join(f"{s:.1f}" for s in seconds)
