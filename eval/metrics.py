"""Top-k metrics for every method (baselines and the generative model) from one function.

Every method hands over, per evaluated user, a ranked list of item ids (best first) and the single
held-out target. Sharing one function guarantees every row of a report is computed the same way.

Definitions (one held-out item per user, rank = 1-based position of the target in the list):
- Recall@K (= HitRate@K here) = 1 if rank <= K else 0, averaged over users.
- NDCG@K = 1 / log2(rank + 1) if rank <= K else 0 (the ideal DCG is 1 with one relevant item).
- MRR = 1 / rank if the target is anywhere in the returned list, else 0 (no cut-off beyond the list).
- invalid = number of returned ids (within the top max(K)) that are not catalog items; must be 0.
- duplicates = number of repeated ids within a user's top max(K); must be 0 (a repeat is ignored
  for ranking: the target's rank is its first position).
- short_lists = users whose list holds fewer than max(K) items.
- coverage = distinct valid ids recommended in the top max(K) over all users / catalog size.
- sid_level{l}_acc (with a SIDMap): share of users whose top-1 item agrees with the target on SID
  levels 0..l (a prefix match, so it can only fall with l; the last level equals Recall@1 when every
  returned item has a SID).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from sid_tokenizer.sidmap import SIDMap

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20)


@dataclass
class RankingMetrics:
    """Aggregated metrics plus the per-user target ranks (0 = not in the list), kept for CIs and plots."""

    values: dict[str, float]
    ranks: np.ndarray = field(repr=False)

    def __getitem__(self, key: str) -> float:
        return self.values[key]


def target_ranks(ranked: Sequence[Sequence[str]], targets: Sequence[str], max_k: int | None = None) -> np.ndarray:
    """1-based rank of each target in its list (first occurrence, within the top `max_k`), 0 when absent."""
    out = np.zeros(len(targets), dtype=np.int64)
    for i, (items, target) in enumerate(zip(ranked, targets)):
        items = items if max_k is None else items[:max_k]
        for pos, item in enumerate(items):
            if item == target:
                out[i] = pos + 1
                break
    return out


def compute_metrics(
    ranked: Sequence[Sequence[str]],
    targets: Sequence[str],
    catalog_ids: Collection[str],
    ks: Sequence[int] = DEFAULT_KS,
    sid_map: SIDMap | None = None,
) -> RankingMetrics:
    """Recall@K, NDCG@K, MRR, invalid/duplicate counts, coverage and SID-level accuracy (see module doc).

    `ranked[i]` is user i's list, best first; `targets[i]` the held-out item. `catalog_ids` should
    support fast membership (a set, a Catalog or a SIDMap). Raises ValueError on misaligned input or
    an empty evaluation (a metric over zero users is meaningless, not 0).
    """
    if len(ranked) != len(targets):
        raise ValueError(f"compute_metrics: {len(ranked)} ranked lists for {len(targets)} targets")
    if len(targets) == 0:
        raise ValueError("compute_metrics: no users to evaluate (empty test split or every example filtered out)")
    ks = sorted({int(k) for k in ks})
    if ks[0] < 1:
        raise ValueError(f"compute_metrics: cut-offs must be >= 1, got {ks}")
    n_catalog = len(catalog_ids)
    if n_catalog == 0:
        raise ValueError("compute_metrics: empty catalog")
    max_k = ks[-1]

    invalid = duplicates = short = 0
    recommended: set[str] = set()
    for items in ranked:
        top = list(items[:max_k])
        if len(top) < max_k:
            short += 1
        seen: set[str] = set()
        for item in top:
            if item in seen:
                duplicates += 1
                continue
            seen.add(item)
            if item in catalog_ids:
                recommended.add(item)
            else:
                invalid += 1

    # Full list for MRR (a method may return more than max_k items).
    ranks_full = target_ranks(ranked, targets)
    values: dict[str, float] = {}
    for k in ks:
        values[f"recall@{k}"] = float(((ranks_full > 0) & (ranks_full <= k)).mean())
        values[f"ndcg@{k}"] = float(per_user_ndcg(ranks_full, k).mean())
    values["mrr"] = float(np.where(ranks_full > 0, 1.0 / np.maximum(ranks_full, 1), 0.0).mean())
    values["invalid"] = float(invalid)
    values["duplicates"] = float(duplicates)
    values["short_lists"] = float(short)
    values["coverage"] = len(recommended) / n_catalog
    values["num_users"] = float(len(targets))

    if sid_map is not None:
        for level, acc in enumerate(sid_level_accuracy(ranked, targets, sid_map)):
            values[f"sid_level{level}_acc"] = acc
    return RankingMetrics(values=values, ranks=ranks_full)


def sid_level_accuracy(ranked: Sequence[Sequence[str]], targets: Sequence[str], sid_map: SIDMap) -> list[float]:
    """Per level l: share of users whose top-1 item's SID equals the target's on levels 0..l.

    A user with an empty list, a top-1 item without a SID, or a target without a SID counts as a miss
    at every level (never silently dropped).
    """
    num_levels = sid_map.num_levels
    hits = np.zeros(num_levels, dtype=np.int64)
    for items, target in zip(ranked, targets):
        if not items or items[0] not in sid_map or target not in sid_map:
            continue
        pred, gold = sid_map.codes(items[0]), sid_map.codes(target)
        for level in range(num_levels):
            if pred[level] != gold[level]:
                break
            hits[level] += 1
    return [float(h) / len(targets) for h in hits]


def ndcg_at_rank(rank: int) -> float:
    """Gain of a single relevant item at 1-based `rank` (helper for docs and tests)."""
    return 1.0 / math.log2(rank + 1)


def bootstrap_ci(
    per_user: np.ndarray, num_samples: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a per-user metric's mean (why: test sets are small)."""
    per_user = np.asarray(per_user, dtype=np.float64)
    if per_user.size == 0:
        raise ValueError("bootstrap_ci: empty input")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, per_user.size, size=(num_samples, per_user.size))
    means = per_user[idx].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def paired_difference(a: np.ndarray, b: np.ndarray, num_samples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of a - b over the same users with a 95% percentile bootstrap interval (users resampled in pairs).

    Why paired: two methods on the same users differ far less in noise than two independent means, so a
    difference of 0.01-0.02 NDCG can be told from noise on a few hundred users.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired_difference: need two equal, non-empty per-user arrays, got {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(num_samples, diff.size))].mean(axis=1)
    return {"mean_diff": float(diff.mean()), "ci_low": float(np.quantile(means, 0.025)),
            "ci_high": float(np.quantile(means, 0.975)), "p_le_0": float((means <= 0).mean()), "users": int(diff.size)}


def per_user_ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG@k from target ranks (0 = miss)."""
    ranks = np.asarray(ranks)
    out = np.zeros(ranks.shape, dtype=np.float64)
    hit = (ranks > 0) & (ranks <= k)
    out[hit] = 1.0 / np.log2(ranks[hit] + 1.0)
    return out
