"""The RL rollout log, `<output_dir>/rollouts.jsonl`: a bounded sample of prompt groups per logging step.

Written by `SAPOTrainer` (main process, every logging step, `SAPOConfig.log_rollout_groups` groups), read by
`genrec explore` (genrec/explore/data.py, `RunIndex._load_rollouts`). One JSON object per line and per group:

    {"format": "genrec-rollouts/1", "step", "group", "user_id", "prompt", "target", "target_sid", "algorithm",
     "num_generations", "rollouts": [{"completion", "sid", "item_id", "blocks", "step_rewards", "step_advantages",
     "reward", "outcome_reward", "outcome_advantage"}]}

Crash safety: each append is whole lines written in one call and flushed; a line torn by a crash is skipped by the
reader, and the next append first ends it with a newline so the torn line never swallows a good one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

ROLLOUT_FILE = "rollouts.jsonl"
ROLLOUT_FORMAT = "genrec-rollouts/1"


def clean_number(x, digits: int = 4):
    """A JSON-safe rounded float (NaN/inf -> None)."""
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


def clean_numbers(xs: Iterable, digits: int = 4) -> list:
    return [clean_number(x, digits) for x in xs]


def append_records(path: str | Path, records: Iterable[dict]) -> int:
    """Append one JSON line per record, in a single write, flushed to disk; returns the number of lines written."""
    lines = [json.dumps(r, allow_nan=False) for r in records]
    if not lines:
        return 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    with open(path, "ab") as f:
        if f.tell() > 0:  # a torn last line (crash mid-write) is ended first, so it stays one unreadable line
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    text = "\n" + text
        f.write(text.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
    return len(lines)
