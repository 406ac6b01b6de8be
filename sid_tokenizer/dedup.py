"""The dedup level: one extra code per item that makes every SID unique (TIGER/GRID style, fixed length).

Three rules (`TokenizerConfig.dedup_order`). 'id': items sharing a semantic prefix get 0, 1, 2, ... in item-id
order (deterministic and independent of file order). 'popularity': with train counts given, most-viewed first (ties
by item id; measured worse on jobs-kaggle: docs/bench/learning.md, session 15). 'residual' (the default since
session 16, better on the demo market and jobs-kaggle) gives the code a meaning shared across groups: a k-means on
what the semantic levels leave unexplained (the residual), each item taking the nearest centroid still free in its
group, so look-alikes that differ in the same way (say, in their skills) get the same code in every group. The
codebook leaves free slots for items added later (cold start).
"""

from __future__ import annotations

import numpy as np


def _id_rank(item_ids: list[str]) -> np.ndarray:
    """Each item's position in item-id order (the tie-break of every rule)."""
    rank = np.empty(len(item_ids), dtype=np.int64)
    rank[np.argsort(np.asarray(item_ids, dtype=object).astype(str), kind="stable")] = np.arange(len(item_ids))
    return rank


def dedup_codes(prefix: np.ndarray, item_ids: list[str], counts: np.ndarray | None = None) -> np.ndarray:
    """Rank of each item within its group of identical prefixes: by descending `counts` (one per item, e.g.
    train views) when given, then by item id."""
    n = prefix.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    id_rank = _id_rank(item_ids)
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


def residual_dedup_codes(prefix: np.ndarray, item_ids: list[str], dists: np.ndarray, size: int = 0) -> np.ndarray:
    """Dedup codes from residual centroids: `dists` (n, k) are each item's squared distances to them; codes k..size-1
    (a catalog with fewer items than dedup codes) have no centroid and come last.

    Within a group of identical prefixes the item closest to any centroid chooses first (ties by item id) and
    takes its nearest centroid not yet taken in the group."""
    n = prefix.shape[0]
    codes = np.zeros(n, dtype=np.int64)
    if n == 0:
        return codes
    if dists.shape[0] != n or dists.shape[1] < 1:
        raise ValueError(f"residual_dedup_codes: distances of shape {dists.shape} for {n} items")
    id_rank = _id_rank(item_ids)
    groups: dict[tuple[int, ...], list[int]] = {}
    for row, key in enumerate(map(tuple, prefix.tolist())):
        groups.setdefault(key, []).append(row)
    nearest = dists.min(axis=1)
    for key, rows in groups.items():
        taken: set[int] = set()
        for row in sorted(rows, key=lambda r: (nearest[r], id_rank[r])):
            code = nearest_free_dedup_code(taken, dists[row], key, size)
            taken.add(code)
            codes[row] = code
    return codes


def nearest_free_dedup_code(taken: set[int], dists: np.ndarray, prefix: tuple[int, ...], size: int = 0) -> int:
    """The free code whose residual centroid is nearest (`dists`: one squared distance per centroid), then the
    smallest free code without a centroid (`size` > len(dists)); a clear error when all `size` codes are taken."""
    for code in np.argsort(dists, kind="stable").tolist():
        if code not in taken:
            return int(code)
    return free_dedup_code(taken, max(size, len(dists)), prefix)


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
