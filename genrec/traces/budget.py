"""What other stages read from a traces folder's traces_config.json: the thinking-block token budget that rollouts
(`genrec rl`) and beam search (`genrec evaluate`) allow, from the block-length statistics `genrec traces` records,
and the traces' response layout (which a stage-2 model folder records). One reader of that file; json only, so
configs can import it without loading `datasets` or torch.
"""

from __future__ import annotations

import json
from pathlib import Path

TRACES_CONFIG_FILE = "traces_config.json"
DEFAULT_MAX_BLOCK_TOKENS = 48
"""Block budget when `max_block_tokens` is 0 (auto) and no traces statistics are given (`genrec rl` and `genrec evaluate`)."""


def traces_block_budget(traces: str | Path, num_levels: int | None = None) -> tuple[int, list[int]]:
    """(budget, per-level p95) from the block-length statistics `genrec traces` records in traces_config.json.

    The budget is the largest per-level 95th percentile of the teacher's block lengths in model tokens, so a
    constrained rollout (or eval) cuts at most ~5% of the blocks of its longest level. `traces` is the traces
    folder or its traces_config.json; `num_levels`, when given, must match the number of levels recorded.
    """
    from genrec.data.errors import DataFormatError
    from genrec.stage_output import check_complete_for

    path = Path(traces)
    check_complete_for(path)  # half-written by an interrupted `genrec traces`: refused in one line
    if path.is_dir():
        path = path / TRACES_CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; --traces expects the output folder of `genrec traces`")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(path, f"not valid JSON ({e.msg})", line=e.lineno) from None
    stats = info.get("block_tokens") if isinstance(info, dict) else None
    if not stats or not isinstance(stats, list):
        raise DataFormatError(
            path, "no per-level block-length statistics (a list of {max, mean, p95} per SID level, written by "
            "`genrec traces`); re-run `genrec traces` or set --max_block_tokens explicitly", field="block_tokens",
        )
    p95 = []
    for k, level in enumerate(stats):
        value = level.get("p95") if isinstance(level, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise DataFormatError(path, f"level {k}: expected a non-negative number 'p95', got {level!r}",
                                  field="block_tokens")
        p95.append(int(value))
    if num_levels is not None and len(p95) != num_levels:
        raise ValueError(
            f"{path}: the traces have {len(p95)} SID levels but the SID map has {num_levels} "
            "(traces built with another SID map?)"
        )
    return max(1, max(p95)), p95


def _recorded(traces: str | Path) -> dict:
    """A `genrec traces` folder's traces_config.json; {} when it is missing or unreadable (callers then assume the
    defaults)."""
    path = Path(traces) / TRACES_CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}
    return info if isinstance(info, dict) else {}


def traces_layout(traces: str | Path) -> str | None:
    """The response layout recorded in a `genrec traces` folder's traces_config.json; None when it does not say."""
    config = _recorded(traces).get("config")
    layout = config.get("layout") if isinstance(config, dict) else None
    return layout if isinstance(layout, str) else None


def trace_sample_rate(traces: str | Path, split: str = "train") -> float:
    """The share of the split's examples the traces hold (1.0 unless `genrec traces --max_examples` sampled them):
    stage 2 samples the stage-1 rows it replays at the same rate, so its mixture stays the split's."""
    info = _recorded(traces)
    numbers = []
    for key in ("counts", "split_examples"):
        table = info.get(key, {})
        value = table.get(split) if isinstance(table, dict) else None
        if not isinstance(table, dict) or (
                value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0)):
            raise ValueError(f"{Path(traces) / TRACES_CONFIG_FILE}: '{key}' must map split names to example counts "
                             f"(e.g. {{\"{split}\": 1200}}), got {table!r}")
        numbers.append(value)
    kept, total = numbers
    return kept / total if kept is not None and total else 1.0
