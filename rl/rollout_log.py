"""The RL rollout log, `<output_dir>/rollouts.jsonl`: a bounded sample of prompt groups per logging step.

Written by `SAPOTrainer` (main process, every logging step, `SAPOConfig.log_rollout_groups` groups), read by
`genrec explore` (genrec/explore/data.py, `RunIndex._load_rollouts`). One JSON object per line and per group:

    {"format": "genrec-rollouts/1", "step", "group", "user_id", "prompt", "target", "target_sid", "algorithm",
     "num_generations", "rollouts": [{"completion", "sid", "item_id", "blocks", "step_rewards", "step_advantages",
     "reward", "outcome_reward", "outcome_advantage"}]}

Crash safety: each append is whole lines written in one call and flushed; a line torn by a crash is skipped by the
reader, and the next append first ends it with a newline so the torn line never swallows a good one. `genrec rl`
drops the records after the step it resumes from (all of them on a fresh start) before training, so a step is never
logged twice.
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


def drop_records_after(path: str | Path, step: int) -> int:
    """Keep only the records logged at or before optimizer `step` (rewritten atomically; torn lines go too); returns
    how many were dropped. A run resumed from the checkpoint of `step` logs the later steps again, and a fresh run
    (`step` 0) starts the file anew, so no step appears twice."""
    from sid_tokenizer.sidmap import atomic_write_text

    path = Path(path)
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            keep = int(json.loads(line)["step"]) <= step
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += bool(line.strip())
    if dropped:
        atomic_write_text(path, "".join(x + "\n" for x in kept))
    return dropped
