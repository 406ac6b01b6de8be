"""Users' train sequences rebuilt from (history, target) examples, and the training windows over them.

Why one module: sequential objectives (SASRec's per-sequence training, the LM's stage-1 `sequence` task) train
every target of a user's sequence in one pass; both must rebuild the same sequences and cut the same windows.
"""

from __future__ import annotations

from collections.abc import Sequence

from genrec.data.schema import Example


def reconstruct_sequences(examples: Sequence[Example]) -> list[tuple[tuple[str, ...], int]]:
    """Rebuild each user's chronological train sequences from (history, target) examples.

    Examples are grouped by user in their given order. An example whose non-empty history is a suffix of
    the user's current sequence (histories may be truncated) extends that sequence with its target;
    any other example starts a new sequence, its history followed by its target. Returns
    (items, first_target) pairs: items[first_target:] are exactly the examples' targets, in order; items
    before first_target are context only (no loss on them). A leave-one-out or temporal prefix split
    gives one sequence per user; independent pre-split rows give one sequence per row.
    """
    seqs: list[list] = []  # [items list, first_target]
    current: dict[str, int] = {}
    for ex in examples:
        i = current.get(ex.user_id)
        h = ex.history
        if i is not None and h and len(h) <= len(seqs[i][0]) and tuple(seqs[i][0][-len(h):]) == tuple(h):
            seqs[i][0].append(ex.target)
            continue
        current[ex.user_id] = len(seqs)
        seqs.append([[*h, ex.target], len(h)])
    return [(tuple(items), start) for items, start in seqs]


def sequence_windows(n: int, first_target: int, max_len: int) -> list[tuple[int, int, int]]:
    """Cut a sequence of n items (targets at indices first_target..n-1) into training windows.

    Each window is (offset, lo, hi): inputs items[offset : offset + max_len] predict items
    [offset + 1 : offset + max_len + 1], and the loss is on targets lo..hi (inclusive) only, so every
    target is trained exactly once. The first window ends at the first target's full context; later
    windows advance by about half a window (the last one ends at the sequence's end), so every target
    after the first window still sees at least max_len // 2 + 1 items of context. A target at index 0
    (an empty history) gets the window (-1, 0, 0): input = padding only, as at inference.
    """
    out: list[tuple[int, int, int]] = []
    if first_target == 0:
        out.append((-1, 0, 0))
        first_target = 1
    if first_target >= n:
        return out
    stride = max(1, (max_len + 1) // 2)
    offset = max(0, first_target - max_len)
    hi = min(offset + max_len, n - 1)
    out.append((offset, first_target, hi))
    while hi < n - 1:
        offset = min(offset + stride, n - 1 - max_len)
        lo, hi = hi + 1, min(offset + max_len, n - 1)
        out.append((offset, lo, hi))
    return out
