"""Turn per-user chronological item sequences into train/valid/test `Example`s.

Everything here works on plain dicts/lists of item-id strings so it is fast on ~1M interactions and
easy to test. Input sequences are already sorted oldest -> newest (stable on file order for ties).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice
from operator import eq

from genrec.data.schema import Example

Sequences = dict[str, list[str]]


def chronological_sequences(
    users: Sequence[str],
    items: Sequence[str],
    times: Sequence[float],
    rows: Iterable[int],
    with_ranks: bool = False,
) -> tuple[Sequences, dict[str, list[int]] | None]:
    """Group interaction rows into per-user item lists, oldest first (ties keep file order).

    Users come out sorted by id string. With `with_ranks`, also each interaction's global time rank
    (0 = earliest overall), which the temporal split cuts on. Two stable C-level sorts (by time, then
    by user) instead of a Python loop per row: this is the hot path for ~1M interactions.
    """
    by_time = sorted(rows, key=times.__getitem__)
    order = sorted(by_time, key=users.__getitem__)
    item_seq = list(map(items.__getitem__, order))
    counts = Counter(map(users.__getitem__, by_time))
    seqs: Sequences = {}
    ranks: dict[str, list[int]] | None = None
    rank_seq: list[int] = []
    if with_ranks:
        rank_of = [0] * len(users)
        for r, i in enumerate(by_time):
            rank_of[i] = r
        rank_seq = list(map(rank_of.__getitem__, order))
        ranks = {}
    start = 0
    for u in sorted(counts):
        end = start + counts[u]
        seqs[u] = item_seq[start:end]
        if ranks is not None:
            ranks[u] = rank_seq[start:end]
        start = end
    return seqs, ranks


def has_consecutive_repeat(seq: list[str]) -> bool:
    return any(map(eq, seq, islice(seq, 1, None)))


def collapse_consecutive(seq: list[str], ranks: list[int] | None = None) -> tuple[list[str], list[int] | None, int]:
    """Drop an item equal to the one just before it (re-opening the same job). Returns (seq, ranks, n_removed).

    `ranks` (global time ranks, used by the temporal split) are kept aligned: the first of a run survives.
    """
    if len(seq) < 2:
        return seq, ranks, 0
    keep = [0] + [i for i in range(1, len(seq)) if seq[i] != seq[i - 1]]
    if len(keep) == len(seq):
        return seq, ranks, 0
    new_ranks = [ranks[i] for i in keep] if ranks is not None else None
    return [seq[i] for i in keep], new_ranks, len(seq) - len(keep)


def kcore_filter(
    seqs: Sequences, k: int, ranks: dict[str, list[int]] | None = None, collapse: bool = False
) -> tuple[Sequences, dict[str, list[int]] | None, dict[str, int]]:
    """Iteratively drop users and items with fewer than `k` interactions until none is left.

    When `collapse` is set, consecutive repeats that appear after removing an item are collapsed too
    (counted under `repeats_collapsed`). Returns the new sequences, ranks and counts of what was dropped.
    """
    stats = {"kcore_users_dropped": 0, "kcore_interactions_dropped": 0, "repeats_collapsed": 0}
    if k <= 1:
        return seqs, ranks, stats
    seqs = dict(seqs)
    ranks = dict(ranks) if ranks is not None else None
    while True:
        changed = False
        for u in [u for u, s in seqs.items() if len(s) < k]:
            stats["kcore_users_dropped"] += 1
            stats["kcore_interactions_dropped"] += len(seqs.pop(u))
            if ranks is not None:
                ranks.pop(u)
            changed = True
        counts = Counter(item for s in seqs.values() for item in s)
        rare = {item for item, c in counts.items() if c < k}
        if rare:
            changed = True
            for u, s in seqs.items():
                if rare.isdisjoint(s):
                    continue
                keep = [i for i, item in enumerate(s) if item not in rare]
                stats["kcore_interactions_dropped"] += len(s) - len(keep)
                new = [s[i] for i in keep]
                r = [ranks[u][i] for i in keep] if ranks is not None else None
                if collapse:
                    new, r, n = collapse_consecutive(new, r)
                    stats["repeats_collapsed"] += n
                seqs[u] = new
                if ranks is not None:
                    ranks[u] = r  # type: ignore[assignment]
        if not changed:
            return seqs, ranks, stats


def _history(seq: Sequence[str], end: int, max_history: int) -> tuple[str, ...]:
    start = end - max_history if max_history and end > max_history else 0
    return tuple(seq[start:end])


def leave_one_out(
    seqs: Mapping[str, list[str]], max_history: int, profiles: Mapping[str, str]
) -> tuple[list[Example], list[Example], list[Example]]:
    """Per user: last item -> test, second last -> valid, every earlier position (from the 2nd) -> train.

    Each example's history is the items before its target (the `max_history` most recent). A user
    with n items gives n-3 train, 1 valid and 1 test example (fewer when n < 3).
    """
    train: list[Example] = []
    valid: list[Example] = []
    test: list[Example] = []
    for user, s in seqs.items():
        n = len(s)
        if n < 2:
            continue
        profile = profiles.get(user, "")
        test.append(Example(user, _history(s, n - 1, max_history), s[n - 1], profile))
        if n >= 3:
            valid.append(Example(user, _history(s, n - 2, max_history), s[n - 2], profile))
        mh = max_history or n
        train.extend(Example(user, tuple(s[i - mh if i > mh else 0 : i]), s[i], profile) for i in range(1, n - 2))
    return train, valid, test


def temporal_cuts(all_ranks: list[int], ratios: tuple[float, float, float]) -> tuple[int, int]:
    """Rank thresholds (t1, t2): rank < t1 -> train, t1 <= rank < t2 -> valid, the rest -> test.

    The cut is by count of (remaining) interactions in global time order, so 8,1,1 puts 80% of the
    interactions in the train segment.
    """
    ordered = sorted(all_ranks)
    n = len(ordered)
    if n == 0:
        return 0, 0
    n1 = round(n * ratios[0])
    n2 = round(n * (ratios[0] + ratios[1]))
    t1 = ordered[n1] if n1 < n else ordered[-1] + 1
    t2 = ordered[n2] if n2 < n else ordered[-1] + 1
    return t1, t2


def temporal_split(
    seqs: Mapping[str, list[str]],
    ranks: Mapping[str, list[int]],
    ratios: tuple[float, float, float],
    max_history: int,
    profiles: Mapping[str, str],
) -> tuple[list[Example], list[Example], list[Example], int]:
    """Global time split: an example's split is the segment its target falls in; its history is all the
    user's earlier interactions (any segment, truncated). A user's first interaction has no history and
    is not a target; their count is returned as the 4th value.
    """
    t1, t2 = temporal_cuts([r for rs in ranks.values() for r in rs], ratios)
    out: tuple[list[Example], list[Example], list[Example]] = ([], [], [])
    no_history = 0
    for user, s in seqs.items():
        r = ranks[user]
        profile = profiles.get(user, "")
        if s:
            no_history += 1
        for i in range(1, len(s)):
            seg = 0 if r[i] < t1 else (1 if r[i] < t2 else 2)
            out[seg].append(Example(user, _history(s, i, max_history), s[i], profile))
    return out[0], out[1], out[2], no_history


def seeded_subset(items: list, limit: int, seed: int) -> list:
    """At most `limit` of `items` (0 = all): a seeded random sample kept in the items' own order; `items` itself when
    it is no longer. Why random: a split is ordered by user, so its head would be the first users only."""
    if not limit or limit >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def drop_repeat_targets(examples: list[Example]) -> tuple[list[Example], int]:
    """Remove examples whose target is already in their (truncated) history. Returns (kept, n_dropped)."""
    kept = [e for e in examples if e.target not in e.history]
    return kept, len(examples) - len(kept)


def repeat_stats(examples: Sequence[Example]) -> tuple[float, float]:
    """(fraction of targets found in the history, fraction equal to the last history item)."""
    if not examples:
        return 0.0, 0.0
    in_hist = sum(1 for e in examples if e.target in e.history)
    is_last = sum(1 for e in examples if e.history and e.history[-1] == e.target)
    return in_hist / len(examples), is_last / len(examples)
