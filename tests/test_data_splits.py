"""Split functions: hand-checked cases plus properties over random sequences (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.data.splits import (
    chronological_sequences,
    collapse_consecutive,
    drop_repeat_targets,
    has_consecutive_repeat,
    kcore_filter,
    leave_one_out,
    repeat_stats,
    temporal_cuts,
    temporal_split,
)
from genrec.data.schema import Example

item_lists = st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=0, max_size=25)
user_seqs = st.dictionaries(st.sampled_from([f"u{i}" for i in range(8)]), item_lists, max_size=8)


def test_chronological_sequences_sorts_by_time_stably() -> None:
    users = ["u2", "u1", "u2", "u1", "u2", "u1"]
    items = ["x", "a", "y", "b", "z", "c"]
    times = [5.0, 3.0, 1.0, 3.0, 5.0, 0.0]
    seqs, ranks = chronological_sequences(users, items, times, range(6), with_ranks=True)
    # u1: c(0) then a, b tied at 3 in file order; u2: y(1) then x, z tied at 5 in file order
    assert seqs == {"u1": ["c", "a", "b"], "u2": ["y", "x", "z"]}
    assert ranks == {"u1": [0, 2, 3], "u2": [1, 4, 5]}
    seqs, ranks = chronological_sequences(users, items, times, [0, 2, 3], with_ranks=False)
    assert seqs == {"u1": ["b"], "u2": ["y", "x"]} and ranks is None


def test_collapse_consecutive() -> None:
    assert collapse_consecutive(["a", "a", "b", "a", "a", "a"], [0, 1, 2, 3, 4, 5]) == (["a", "b", "a"], [0, 2, 3], 3)
    assert collapse_consecutive(["a", "b"]) == (["a", "b"], None, 0)
    assert has_consecutive_repeat(["a", "b", "b"]) and not has_consecutive_repeat(["a", "b", "a"])


@settings(derandomize=True, deadline=None)
@given(item_lists)
def test_collapse_properties(seq: list[str]) -> None:
    out, _, n = collapse_consecutive(seq)
    assert len(out) + n == len(seq)
    assert not has_consecutive_repeat(out)
    assert collapse_consecutive(out)[2] == 0
    assert set(out) == set(seq)


def test_leave_one_out_by_hand() -> None:
    train, valid, test = leave_one_out({"u": ["a", "b", "c", "d", "e"]}, max_history=2, profiles={"u": "p"})
    assert test == [Example("u", ("c", "d"), "e", "p")]
    assert valid == [Example("u", ("b", "c"), "d", "p")]
    assert train == [Example("u", ("a",), "b", "p"), Example("u", ("a", "b"), "c", "p")]
    assert leave_one_out({"v": ["a"]}, 10, {}) == ([], [], [])
    assert leave_one_out({"v": ["a", "b"]}, 10, {}) == ([], [], [Example("v", ("a",), "b")])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(user_seqs, st.integers(min_value=0, max_value=6))
def test_leave_one_out_properties(seqs: dict[str, list[str]], mh: int) -> None:
    train, valid, test = leave_one_out(seqs, mh, {})
    for u, s in seqs.items():
        n = len(s)
        tr = [e for e in train if e.user_id == u]
        assert len(tr) == max(n - 3, 0)
        assert len([e for e in valid if e.user_id == u]) == (1 if n >= 3 else 0)
        te = [e for e in test if e.user_id == u]
        assert len(te) == (1 if n >= 2 else 0)
        if te:
            assert te[0].target == s[-1]
        # every example: history = the (truncated) items right before the target, oldest first
        for k, e in enumerate(tr + [e for e in valid if e.user_id == u] + te, start=1):
            assert e.target == s[k]
            full = tuple(s[:k])
            assert e.history == (full[-mh:] if mh else full)
            assert 1 <= len(e.history) <= (mh or n)


def test_temporal_cuts() -> None:
    assert temporal_cuts(list(range(10)), (0.8, 0.1, 0.1)) == (8, 9)
    assert temporal_cuts([0, 5, 9, 12], (0.5, 0.25, 0.25)) == (9, 12)
    assert temporal_cuts([3, 1], (1.0, 0.0, 0.0)) == (4, 4)  # everything in train


@settings(max_examples=60, deadline=None, derandomize=True)
@given(user_seqs, st.sampled_from([(0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (0.34, 0.33, 0.33)]), st.randoms())
def test_temporal_split_properties(seqs: dict[str, list[str]], ratios: tuple[float, float, float], rnd) -> None:  # type: ignore[no-untyped-def]
    total = sum(map(len, seqs.values()))
    all_ranks = list(range(total))
    rnd.shuffle(all_ranks)
    ranks, k = {}, 0
    for u, s in seqs.items():  # any interleaving of users, each user's ranks increasing
        ranks[u] = sorted(all_ranks[k : k + len(s)])
        k += len(s)
    train, valid, test, no_hist = temporal_split(seqs, ranks, ratios, 0, {})
    assert no_hist == sum(1 for s in seqs.values() if s)
    assert len(train) + len(valid) + len(test) == total - no_hist
    t1, t2 = temporal_cuts(all_ranks, ratios)
    for split, lo, hi in ((train, -1, t1), (valid, t1, t2), (test, t2, total + 1)):
        for e in split:
            s, r = seqs[e.user_id], ranks[e.user_id]
            i = len(e.history)
            assert s[i] == e.target and tuple(s[:i]) == e.history
            assert lo <= r[i] < hi if lo >= 0 else r[i] < hi
    # no target of a later segment precedes a target of an earlier one in time
    if train and test:
        assert max(ranks[e.user_id][len(e.history)] for e in train) < min(ranks[e.user_id][len(e.history)] for e in test)


def test_kcore_by_hand() -> None:
    seqs = {"u1": ["a", "b", "a"], "u2": ["a", "b"], "u3": ["c", "a"], "u4": ["a"]}
    out, ranks, stats = kcore_filter(seqs, 2)
    # u4 (1 interaction) and item c (1) go; then u3 has 1 -> goes; a:4, b:2 remain
    assert out == {"u1": ["a", "b", "a"], "u2": ["a", "b"]}
    assert stats["kcore_users_dropped"] == 2 and stats["kcore_interactions_dropped"] == 3
    assert ranks is None
    assert kcore_filter(seqs, 0)[0] == seqs


@settings(max_examples=60, deadline=None, derandomize=True)
@given(user_seqs, st.integers(min_value=2, max_value=4))
def test_kcore_properties(seqs: dict[str, list[str]], k: int) -> None:
    out, _, stats = kcore_filter(seqs, k)
    counts: dict[str, int] = {}
    for s in out.values():
        assert len(s) >= k
        for item in s:
            counts[item] = counts.get(item, 0) + 1
    assert all(c >= k for c in counts.values())
    assert sum(map(len, out.values())) + stats["kcore_interactions_dropped"] == sum(map(len, seqs.values()))


def test_repeat_helpers() -> None:
    ex = [Example("u", ("a", "b"), "b"), Example("u", ("a", "b"), "a"), Example("u", ("a",), "c"), Example("u", (), "c")]
    assert repeat_stats(ex) == (0.5, 0.25)
    kept, n = drop_repeat_targets(ex)
    assert n == 2 and [e.target for e in kept] == ["c", "c"]
    assert repeat_stats([]) == (0.0, 0.0)
