"""Collision-aware last level: spread items that would share a full SID over distinct last-level codes.

Near-duplicate items (same role, company and city, say) land in the same cell of the first L-1 levels and their
small residual differences rarely pick different codes from a global last-level codebook, so many would collide
and lean on the dedup level. Like LC-Rec's uniform semantic mapping, every cell that has a collision is
re-assigned with a minimum-cost matching between its items and the last level's codes (cost = the same biased
squared distance the plain rule minimises), so items in the cell get distinct codes, each as close as the
others allow. Items with identical embeddings stay together (identical text keeps an identical SID prefix), and
cells larger than `max_cell` (too costly to match) are left to the dedup level.

Cold-start items use the plain nearest rule; a collision there is resolved by the dedup level.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from sid_tokenizer.kmeans import sq_dists


def spread_last_level(
    prefix: np.ndarray,
    last: np.ndarray,
    residual: torch.Tensor,
    codebook: torch.Tensor,
    bias: torch.Tensor,
    unit_keys: np.ndarray,
    max_cell: int | None = None,
) -> tuple[np.ndarray, int]:
    """(new last-level codes, number of items whose code changed).

    prefix (n, L-1) codes of the earlier levels; last (n,) codes of the last level; residual (n, d) what the last
    level quantizes; codebook (k, d) and bias (k,) of the last level; unit_keys (n,) equal for items that must
    share their code (identical embeddings).
    """
    n, k = len(last), codebook.shape[0]
    max_cell = max_cell or 4 * k
    full_key = np.concatenate([prefix, last[:, None]], axis=1)
    _, inv_full, cnt_full = np.unique(full_key, axis=0, return_inverse=True, return_counts=True)
    inv_full = inv_full.reshape(-1)
    # A "collision" between different units only: identical items are meant to share a code.
    unit_full = np.stack([inv_full, unit_keys], axis=1)
    units_per_sid = np.bincount(np.unique(unit_full, axis=0)[:, 0], minlength=len(cnt_full))
    colliding = units_per_sid[inv_full] > 1
    if prefix.shape[1] == 0:
        cell_of = np.zeros(n, dtype=np.int64)
    else:
        _, cell_of = np.unique(prefix, axis=0, return_inverse=True)
        cell_of = cell_of.reshape(-1)
    cells = np.unique(cell_of[colliding])
    order = np.argsort(cell_of, kind="stable")
    starts = np.searchsorted(cell_of[order], cells, side="left")
    ends = np.searchsorted(cell_of[order], cells, side="right")
    new = last.copy()
    for s, e in zip(starts, ends):
        idx = order[s:e]
        if len(idx) > max_cell:
            continue
        _, first, unit_of = np.unique(unit_keys[idx], return_index=True, return_inverse=True)
        unit_of = unit_of.reshape(-1)
        rows = torch.from_numpy(idx[first])
        cost = (sq_dists(residual[rows], codebook) - bias).cpu().numpy().astype(np.float64)
        reps = math.ceil(len(first) / k)
        if reps > 1:
            cost = np.tile(cost, (1, reps))  # each code may then take ceil(m / k) units
        r, c = linear_sum_assignment(cost)
        codes = np.empty(len(first), dtype=np.int64)
        codes[r] = c % k
        new[idx] = codes[unit_of]
    return new, int((new != last).sum())


def unit_keys_of(embeddings: np.ndarray) -> np.ndarray:
    """Equal keys for identical embedding rows (so identical texts are never split apart)."""
    arr = np.ascontiguousarray(embeddings)
    rows = arr.view(np.dtype((np.void, arr.dtype.itemsize * arr.shape[1]))).reshape(-1)
    _, inverse = np.unique(rows, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)
