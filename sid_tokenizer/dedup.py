"""The dedup level: one extra code per item that makes every SID unique (TIGER/GRID style, fixed length).

Items sharing a semantic prefix get 0, 1, 2, ... in item-id order (deterministic and independent of file
order), or, with train counts given, most-viewed first (ties by item id; an option, measured worse on
jobs-kaggle: docs/bench/learning.md, session 15). The codebook leaves free slots for items added later (cold start).
"""

from __future__ import annotations

import numpy as np


def dedup_codes(prefix: np.ndarray, item_ids: list[str], counts: np.ndarray | None = None) -> np.ndarray:
    """Rank of each item within its group of identical prefixes: by descending `counts` (one per item, e.g.
    train views) when given, then by item id."""
    n = prefix.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    id_rank = np.empty(n, dtype=np.int64)
    id_rank[np.argsort(np.asarray(item_ids, dtype=object).astype(str), kind="stable")] = np.arange(n)
    order_keys = (id_rank,) if counts is None else (id_rank, -np.asarray(counts, dtype=np.int64))
    keys = order_keys + tuple(prefix[:, level] for level in reversed(range(prefix.shape[1])))
    order = np.lexsort(keys)
    sorted_prefix = prefix[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (sorted_prefix[1:] != sorted_prefix[:-1]).any(axis=1)
    starts = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(n) - starts
    return ranks


def dedup_size(max_group: int, min_size: int) -> int:
    """Codebook size of the dedup level: room for the largest group plus headroom (next power of two)."""
    need = max(1, max_group) + 1
    return max(min_size, 1 << (need - 1).bit_length())


def free_dedup_code(taken: set[int], size: int, prefix: tuple[int, ...]) -> int:
    """Smallest dedup code not yet used under `prefix`; a clear error when the level is full."""
    for code in range(size):
        if code not in taken:
            return code
    raise ValueError(
        f"dedup level is full for SID prefix {prefix}: all {size} codes are taken. Refit the tokenizer on the "
        "grown catalog (or fit with a larger dedup_min_size) to make room for more items with this prefix."
    )
