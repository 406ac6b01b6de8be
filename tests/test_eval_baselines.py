"""Baselines on tiny synthetic splits whose right answer is known by construction."""

from __future__ import annotations

import random

import pytest
import torch

from eval.baselines import MostPop, RecentItems, SASRec, SASRecConfig, fill_ranked, train_popularity
from genrec.data.sequences import reconstruct_sequences, sequence_windows
from eval.harness import evaluate_methods, evaluate_ranker, validate_examples
from eval.protocols import select_examples
from genrec.data.schema import Catalog, Example

N_ITEMS = 30


def _catalog(n: int = N_ITEMS) -> Catalog:
    ids = [f"j{i}" for i in range(n)]
    return Catalog(ids, {"title": [f"job {i}" for i in range(n)]})


def _prefix_examples(user: str, seq: list[str], max_history: int = 10):
    """Leave-one-out prefix split of one sequence (like the data loader)."""
    n = len(seq)
    hist = lambda end: tuple(seq[max(0, end - max_history):end])  # noqa: E731
    train = [Example(user, hist(i), seq[i]) for i in range(1, n - 2)]
    return train, Example(user, hist(n - 2), seq[n - 2]), Example(user, hist(n - 1), seq[n - 1])


def _split(seqs: dict[str, list[str]]):
    train, valid, test = [], [], []
    for user, seq in seqs.items():
        tr, va, te = _prefix_examples(user, seq)
        train += tr
        valid.append(va)
        test.append(te)
    return train, valid, test


def _repeat_heavy(seed: int = 0, users: int = 60, n_items: int = 200):
    """Each user cycles over 3 personal items: the target is always in the history."""
    rng = random.Random(seed)
    seqs = {}
    for u in range(users):
        own = rng.sample(range(n_items), 3)
        seqs[f"u{u}"] = [f"j{own[t % 3]}" for t in range(8)]
    return _split(seqs)


def _successor(seed: int = 0, users: int = 120):
    """Each user walks j_s, j_{s+1}, ... : the next item is a deterministic function of the last one."""
    rng = random.Random(seed)
    seqs = {}
    for u in range(users):
        start = rng.randrange(N_ITEMS)
        seqs[f"u{u}"] = [f"j{(start + t) % N_ITEMS}" for t in range(7)]
    return _split(seqs)


def test_popularity_counts_each_interaction_once():
    cat = _catalog(5)
    train = [
        Example("a", ("j3",), "j1"),
        Example("a", ("j3", "j1"), "j1"),
        Example("b", ("j2",), "j4"),
    ]
    # interactions: targets j1, j1, j4 + first histories j3 (a), j2 (b) -> j1:2, then j2,j3,j4:1 (catalog order), j0:0
    assert train_popularity(train, cat) == ["j1", "j2", "j3", "j4", "j0"]


def test_fill_ranked_dedups_excludes_and_cuts():
    assert fill_ranked(["a", "b", "a"], ["c", "b", "d", "e"], 4, {"d"}) == ["a", "b", "c", "e"]
    assert fill_ranked([], ["x", "y"], 5) == ["x", "y"]


def test_recent_items_beats_mostpop_on_repeat_heavy_data():
    train, _, test = _repeat_heavy()
    cat = _catalog(200)
    rankers = {
        "mostpop": MostPop().fit(train, cat).recommend,
        "recent": RecentItems().fit(train, cat).recommend,
    }
    res = evaluate_methods(rankers, test, cat, ks=(1, 3, 10), protocols=("all",))
    # the target is always the third most recent distinct item: rank 3, NDCG = 1/log2(4) = 0.5
    assert res["recent"]["all"]["recall@3"] == 1.0
    assert res["recent"]["all"]["ndcg@10"] == pytest.approx(0.5)
    assert res["recent"]["all"]["ndcg@10"] > res["mostpop"]["all"]["ndcg@10"] + 0.35
    for method in res.values():
        for metrics in method.values():
            assert metrics["invalid"] == 0 and metrics["duplicates"] == 0 and metrics["short_lists"] == 0


def test_recent_items_order_is_most_recent_first():
    cat = _catalog(6)
    rec = RecentItems().fit([Example("a", ("j5",), "j5")], cat)
    out = rec.recommend([Example("u", ("j1", "j2", "j1", "j3"), "j0")], 5)[0]
    assert out[:3] == ["j3", "j1", "j2"]
    assert out[3] == "j5"  # then the most popular item
    assert len(set(out)) == 5


def test_new_protocol_drops_repeat_targets_and_history_candidates():
    train, _, test = _successor()
    test = test + [Example("rep", ("j1", "j2"), "j2")]
    cat = _catalog()
    assert all(ex.user_id != "rep" for ex in select_examples(test, "new"))
    mp = MostPop().fit(train, cat)
    metrics = evaluate_ranker(mp.recommend, test, cat, protocol="new", ks=(5,))
    assert metrics["num_users"] == len(test) - 1
    for ex, items in zip(test, mp.recommend(test, 5, exclude_history=True)):
        assert not set(items) & set(ex.history)


def test_harness_rejects_a_ranker_that_ignores_exclusion():
    _, _, test = _successor()
    cat = _catalog()
    rec = RecentItems().fit(test, cat)
    with pytest.raises(ValueError, match="history items"):
        evaluate_ranker(lambda exs, k, excl: rec.recommend(exs, k, False), test, cat, protocol="new", ks=(5,))


@pytest.mark.parametrize("mode", ["sequence", "example"])
def test_sasrec_learns_successor_pattern_and_respects_protocols(mode):
    torch.set_num_threads(1)
    train, valid, test = _successor()
    cat = _catalog()
    cfg = SASRecConfig(hidden_size=32, inner_size=64, num_layers=1, dropout=0.1, lr=5e-3, max_epochs=60,
                       patience=5, batch_size=64, seq_batch_size=16, seed=1, train_mode=mode)
    model = SASRec(cfg).fit(train, cat, valid)
    assert model.history and "valid_ndcg@10" in model.history[0]
    mp = MostPop().fit(train, cat)
    res = evaluate_methods({"sasrec": model.recommend, "mostpop": mp.recommend}, test, cat, ks=(1, 10))
    assert res["sasrec"]["all"]["recall@1"] > 0.8
    assert res["sasrec"]["all"]["ndcg@10"] > res["mostpop"]["all"]["ndcg@10"] + 0.5
    assert res["sasrec"]["new"]["invalid"] == 0 and res["sasrec"]["new"]["duplicates"] == 0
    # deterministic with a seed
    again = SASRec(cfg).fit(train, cat, valid)
    assert again.recommend(test[:5], 10) == model.recommend(test[:5], 10)


def test_sasrec_handles_empty_history():
    cat = _catalog(8)
    train = [Example("a", (), "j1"), Example("b", ("j1",), "j2")]
    model = SASRec(SASRecConfig(max_epochs=2, hidden_size=16, inner_size=32, num_layers=1)).fit(train, cat)
    out = model.recommend([Example("c", (), "j1")], 8)[0]
    assert sorted(out) == sorted(cat.item_ids)


def test_bad_input_errors():
    cat = _catalog(5)
    with pytest.raises(ValueError, match="test split is empty"):
        validate_examples([], cat)
    with pytest.raises(ValueError, match=r"user 'u9'.*history item 'nope' is not in the catalog"):
        validate_examples([Example("u9", ("nope",), "j1")], cat)
    mp = MostPop().fit([Example("a", ("j1",), "j2")], cat)
    with pytest.raises(ValueError, match="larger than the catalog"):
        evaluate_ranker(mp.recommend, [Example("a", ("j1",), "j2")], cat, ks=(1, 20))
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate_ranker(mp.recommend, [Example("a", ("j1",), "j2")], cat, protocol="cold", ks=(1,))
    with pytest.raises(ValueError, match="not in the catalog"):
        SASRec(SASRecConfig(max_epochs=1)).fit([Example("a", ("zz",), "j1")], cat)


def test_reconstruct_sequences_leave_one_out_with_truncated_histories():
    seqs = {"a": [f"j{i}" for i in range(15)], "b": ["j3", "j4", "j3", "j5"]}
    train = []
    for user, seq in seqs.items():  # interleave the users' examples: grouping must not depend on adjacency
        train.append(_prefix_examples(user, seq, max_history=4)[0])
    train = [ex for pair in zip(*train) for ex in pair] + train[0][len(train[1]):]
    assert any(len(ex.history) == 4 for ex in train)  # truncated histories are suffixes, not prefixes
    out = reconstruct_sequences(train)
    # each user's train part (all but valid and test) is one sequence; targets start at index 1
    assert out == [(tuple(seqs["a"][:13]), 1), (tuple(seqs["b"][:2]), 1)]


def test_reconstruct_sequences_pre_split_rows():
    train = [
        Example("u1", ("j1",), "j2"),
        Example("u1", ("j1", "j2"), "j3"),  # extends u1's sequence
        Example("u2", ("j7",), "j7"),
        Example("u1", ("j9",), "j4"),  # not a suffix of j1 j2 j3: a new sequence
        Example("u1", ("j2", "j3"), "j5"),  # a suffix of u1's first sequence, but only the latest one is extended
        Example("u3", (), "j6"),  # empty history: its own sequence, target at index 0
        Example("u3", ("j6",), "j8"),
    ]
    assert reconstruct_sequences(train) == [
        (("j1", "j2", "j3"), 1),
        (("j7", "j7"), 1),
        (("j9", "j4"), 1),
        (("j2", "j3", "j5"), 2),
        (("j6", "j8"), 0),
    ]
    # the targets of the sequences are exactly the examples' targets, each once
    assert sorted(t for items, first in reconstruct_sequences(train) for t in items[first:]) == sorted(
        ex.target for ex in train)


def test_sequence_windows_train_each_target_once_with_context():
    assert sequence_windows(25, 1, 10) == [(0, 1, 10), (5, 11, 15), (10, 16, 20), (14, 21, 24)]
    assert sequence_windows(4, 0, 10) == [(-1, 0, 0), (0, 1, 3)]
    assert sequence_windows(13, 12, 10) == [(2, 12, 12)]  # a long given history: full context
    for max_len in (1, 2, 3, 10):
        for n in range(1, 40):
            for first in range(0, n):
                wins = sequence_windows(n, first, max_len)
                covered = [t for _, lo, hi in wins for t in range(lo, hi + 1)]
                assert covered == list(range(first, n))
                for offset, lo, hi in wins:
                    if offset < 0:
                        continue
                    assert offset < lo and hi - offset <= max_len  # inputs fit the window
                    assert lo - offset >= min(lo, max_len // 2 + 1)  # every target keeps context


def test_sequence_rows_targets_and_loss_mask():
    cat = _catalog(10)
    m = SASRec(SASRecConfig(max_len=3))
    m.index = {it: i + 1 for i, it in enumerate(cat.item_ids)}  # j0 -> 1, ...
    m.max_len = 3
    train = [Example("a", ("j0",), "j1"), Example("a", ("j0", "j1"), "j2"), Example("a", ("j0", "j1", "j2"), "j3"),
             Example("a", ("j1", "j2", "j3"), "j4"), Example("b", (), "j5"), Example("c", ("j6", "j7"), "j8")]
    inputs, targets = m._windows(train)
    assert inputs.tolist() == [
        [1, 2, 3], [2, 3, 4],  # a: j0..j4 -> window at 0 (targets j1 j2 j3), window at 1 (target j4 only)
        [0, 0, 0],  # b: empty history predicts j5 from padding
        [0, 7, 8],  # c: given history j6 j7 -> j8; no loss on the history item j7
    ]
    assert targets.tolist() == [[2, 3, 4], [0, 0, 5], [0, 0, 6], [0, 0, 9]]

    # the masked sequence loss is the mean of the per-example losses (same states: eval mode, causal mask)
    torch.manual_seed(0)
    from eval.baselines.sasrec import SASRecModel

    model = SASRecModel(len(cat.item_ids), SASRecConfig(hidden_size=16, inner_size=32, num_layers=1), 3).eval()
    with torch.no_grad():
        seq_loss, n = model.sequence_loss(inputs, targets)
        per_ex = torch.nn.functional.cross_entropy(model.scores(m._encode(train, "train")), m._targets(train, "train"))
    assert n == len(train)
    assert seq_loss.item() == pytest.approx(per_ex.item(), rel=1e-5)


def test_sasrec_config_checks():
    cat = _catalog(5)
    train = [Example("a", ("j1",), "j2")]
    with pytest.raises(ValueError, match="train_mode"):
        SASRec(SASRecConfig(train_mode="batch")).fit(train, cat)
    with pytest.raises(ValueError, match="from_end"):
        SASRec(SASRecConfig(positions="from_end")).fit(train, cat)
    SASRec(SASRecConfig(positions="from_end", train_mode="example", max_epochs=1, hidden_size=8, inner_size=8,
                        num_layers=1)).fit(train, cat)
