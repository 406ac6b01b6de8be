"""Hand-computed metric cases: every number below is worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.metrics import bootstrap_ci, compute_metrics, per_user_ndcg, sid_level_accuracy, target_ranks
from sid_tokenizer.sidmap import SIDMap

CATALOG = {f"i{n}" for n in range(10)}


def test_single_user_rank_three():
    # target at position 3 -> hits at K >= 5 only; NDCG = 1/log2(4) = 0.5; MRR = 1/3
    m = compute_metrics([["i1", "i2", "i3", "i4", "i5"]], ["i3"], CATALOG, ks=(1, 5)).values
    assert m["recall@1"] == 0.0
    assert m["recall@5"] == 1.0
    assert m["ndcg@1"] == 0.0
    assert m["ndcg@5"] == pytest.approx(0.5)
    assert m["mrr"] == pytest.approx(1 / 3)
    assert m["invalid"] == 0 and m["duplicates"] == 0
    assert m["short_lists"] == 0
    assert m["coverage"] == pytest.approx(5 / 10)


def test_three_users_averages():
    # user A: rank 1 (gain 1); user B: rank 2 (gain 1/log2 3); user C: miss
    ranked = [["i0", "i1"], ["i1", "i2"], ["i3", "i4"]]
    targets = ["i0", "i2", "i9"]
    m = compute_metrics(ranked, targets, CATALOG, ks=(1, 2)).values
    assert m["recall@1"] == pytest.approx(1 / 3)
    assert m["recall@2"] == pytest.approx(2 / 3)
    assert m["ndcg@1"] == pytest.approx(1 / 3)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert m["mrr"] == pytest.approx((1 + 0.5 + 0) / 3)
    # distinct recommended {i0, i1, i2, i3, i4} = 5 of 10
    assert m["coverage"] == pytest.approx(0.5)
    assert m["num_users"] == 3


def test_mrr_counts_beyond_largest_k_but_recall_does_not():
    ranked = [["i0", "i1", "i2"]]
    m = compute_metrics(ranked, ["i2"], CATALOG, ks=(1, 2)).values
    assert m["recall@2"] == 0.0 and m["ndcg@2"] == 0.0
    assert m["mrr"] == pytest.approx(1 / 3)


def test_invalid_duplicates_short_lists_counted():
    # "zz" is not a catalog item; "i1" repeats; the second list has 1 item < max K = 3
    ranked = [["zz", "i1", "i1"], ["i2"]]
    m = compute_metrics(ranked, ["i1", "i2"], CATALOG, ks=(1, 3)).values
    assert m["invalid"] == 1
    assert m["duplicates"] == 1
    assert m["short_lists"] == 1
    # invalid items do not count towards coverage: {i1, i2}
    assert m["coverage"] == pytest.approx(2 / 10)
    # target rank = first occurrence: i1 at 2, i2 at 1
    assert m["mrr"] == pytest.approx((0.5 + 1.0) / 2)


def test_items_beyond_max_k_not_counted_as_invalid():
    m = compute_metrics([["i0", "bad"]], ["i0"], CATALOG, ks=(1,)).values
    assert m["invalid"] == 0


def test_target_ranks_and_per_user_ndcg():
    ranks = target_ranks([["a", "b", "c"], ["c"], []], ["c", "x", "a"])
    assert ranks.tolist() == [3, 0, 0]
    assert per_user_ndcg(ranks, 3).tolist() == pytest.approx([0.5, 0.0, 0.0])
    assert per_user_ndcg(ranks, 2).tolist() == [0.0, 0.0, 0.0]


def test_sid_level_accuracy_prefix_match():
    sid_map = SIDMap({"i0": (0, 0, 0), "i1": (0, 0, 1), "i2": (0, 1, 0), "i3": (1, 0, 0)}, [2, 2, 2])
    ranked = [["i1"], ["i2"], ["i3"], ["i0"]]
    targets = ["i0", "i0", "i0", "i0"]
    # user1: match levels 0,1 ; user2: level 0 only ; user3: none ; user4: all three
    acc = sid_level_accuracy(ranked, targets, sid_map)
    assert acc == pytest.approx([3 / 4, 2 / 4, 1 / 4])
    m = compute_metrics(ranked, targets, set(sid_map.item_to_codes), ks=(1,), sid_map=sid_map).values
    assert m["sid_level2_acc"] == pytest.approx(m["recall@1"])


def test_sid_level_accuracy_counts_empty_or_unknown_as_miss():
    sid_map = SIDMap({"i0": (0, 0), "i1": (0, 1)}, [1, 2])
    acc = sid_level_accuracy([[], ["zz"], ["i1"]], ["i0", "i0", "i0"], sid_map)
    assert acc == pytest.approx([1 / 3, 0.0])


def test_errors_are_specific():
    with pytest.raises(ValueError, match="no users"):
        compute_metrics([], [], CATALOG)
    with pytest.raises(ValueError, match="2 ranked lists for 1 targets"):
        compute_metrics([["i0"], ["i1"]], ["i0"], CATALOG)
    with pytest.raises(ValueError, match="cut-offs"):
        compute_metrics([["i0"]], ["i0"], CATALOG, ks=(0, 5))
    with pytest.raises(ValueError, match="empty catalog"):
        compute_metrics([["i0"]], ["i0"], set())


def test_bootstrap_ci_brackets_mean_and_is_seeded():
    x = np.array([0.0, 1.0] * 50)
    lo, hi = bootstrap_ci(x, seed=3)
    assert lo < 0.5 < hi
    assert (lo, hi) == bootstrap_ci(x, seed=3)


def test_paired_difference_interval():
    from eval.metrics import paired_difference

    rng = np.random.default_rng(0)
    a = rng.random(400)
    same = paired_difference(a, a)
    assert same["mean_diff"] == 0 and same["ci_low"] == same["ci_high"] == 0
    better = paired_difference(a + 0.02 + 0.01 * rng.standard_normal(400), a)
    assert better["ci_low"] > 0 and better["p_le_0"] == 0 and better["users"] == 400
    noisy = paired_difference(a, rng.permutation(a))  # same mean, unpaired noise: the interval covers 0
    assert noisy["ci_low"] < 0 < noisy["ci_high"]
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_difference(a, a[:3])
