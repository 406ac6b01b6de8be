"""Reward and advantage math of rl/ against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from rl.advantages import (
    advantage_to_go,
    algorithm_advantages,
    algorithm_rewards,
    group_normalize,
    outcome_on_other_tokens,
    outcome_where_varied,
    prefix_group_normalize,
    scatter_step_advantages,
    step_length_scale,
    token_advantages,
    weight_positive,
    zero_std_groups,
)
from rl.rewards import (
    correct_prefix_length,
    gated_step_matches,
    get_reward,
    match_matrix,
    mean_step_reward,
    outcome_reward,
    prefix_reward,
    step_matches,
)

TARGET = (3, 1, 4)


def test_step_matches_levels_are_independent():
    assert step_matches((3, 1, 4), TARGET) == [1.0, 1.0, 1.0]
    assert step_matches((3, 9, 4), TARGET) == [1.0, 0.0, 1.0]  # no prefix gating
    assert step_matches((0, 1, 4), TARGET) == [0.0, 1.0, 1.0]
    assert step_matches(None, TARGET) == [0.0, 0.0, 0.0]  # format gate


def test_gated_step_matches_stop_at_the_first_miss():
    assert gated_step_matches((3, 1, 4), TARGET) == [1.0, 1.0, 1.0]
    assert gated_step_matches((3, 9, 4), TARGET) == [1.0, 0.0, 0.0]  # level 2 matches under a wrong parent: 0
    assert gated_step_matches((0, 1, 4), TARGET) == [0.0, 0.0, 0.0]
    assert gated_step_matches(None, TARGET) == [0.0, 0.0, 0.0]
    r = algorithm_rewards("sapo", [(3, 9, 4), (3, 1, 0)], [TARGET] * 2, reward="gated_level_match")
    assert r.tolist() == [[1, 0, 0], [1, 1, 0]]


def test_outcome_and_prefix_rewards():
    assert outcome_reward((3, 1, 4), TARGET) == 1.0
    assert outcome_reward((3, 1, 5), TARGET) == 0.0
    assert outcome_reward(None, TARGET) == 0.0
    assert correct_prefix_length((3, 9, 4), TARGET) == 1
    # 2^-(L-p): p=3 -> 1, p=2 -> 1/2, p=1 -> 1/4, p=0 -> 0 (not 1/8)
    assert prefix_reward((3, 1, 4), TARGET) == 1.0
    assert prefix_reward((3, 1, 0), TARGET) == 0.5
    assert prefix_reward((3, 0, 4), TARGET) == 0.25
    assert prefix_reward((0, 1, 4), TARGET) == 0.0
    assert prefix_reward(None, TARGET) == 0.0
    catalog = {(3, 1, 0), (0, 1, 4)}
    assert prefix_reward((3, 1, 0), TARGET, valid_bonus=0.1, is_valid=catalog.__contains__) == pytest.approx(0.6)
    assert prefix_reward((3, 0, 0), TARGET, valid_bonus=0.1, is_valid=catalog.__contains__) == pytest.approx(0.25)
    assert prefix_reward(None, TARGET, valid_bonus=0.1, is_valid=lambda c: True) == 0.0
    assert mean_step_reward((3, 9, 4), TARGET) == pytest.approx(2 / 3)


def test_random_gated_control_has_the_shape_but_not_the_information():
    from rl.rewards import random_gated_steps

    rows = [random_gated_steps((c0, c1, c2), (c0 % 4, 1, 2)) for c0 in range(40) for c1 in range(5) for c2 in range(5)]
    # gated: once a level draws 0 every later level is 0; deterministic per (codes, target)
    assert all(r == sorted(r, reverse=True) for r in rows)
    assert random_gated_steps((3, 1, 2), TARGET) == random_gated_steps((3, 1, 2), TARGET)
    assert get_reward("random_gated_match").per_step and random_gated_steps(None, TARGET) == [0.0, 0.0, 0.0]
    # about the configured rates (0.55, then 0.40 given the first), over 1,000 rollouts
    first = sum(r[0] for r in rows) / len(rows)
    second = sum(r[1] for r in rows) / max(1, sum(r[0] for r in rows))
    assert 0.50 < first < 0.60 and 0.34 < second < 0.46
    # no information: the right SID is rewarded no more often than wrong ones
    hits = [random_gated_steps(t, t)[0] for t in [(a, b, 0) for a in range(20) for b in range(20)]]
    assert 0.45 < sum(hits) / len(hits) < 0.65


def test_reward_shape_errors_are_specific():
    with pytest.raises(ValueError, match="2 SID codes but the target has 3"):
        step_matches((1, 2), TARGET)
    with pytest.raises(ValueError, match="2 rollouts but 1 targets"):
        match_matrix([(3, 1, 4), None], [TARGET])


def test_group_normalize_mixed_group_by_hand():
    # column [1,0,0,0]: mean 1/4, unbiased std = sqrt((9/16 + 3/16)/3) = 1/2
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert torch.allclose(group_normalize(r, 4), torch.tensor([1.5, -0.5, -0.5, -0.5]))
    # two groups of 2: [0, 1] -> std = sqrt(1/2) -> +-1/sqrt(2)... (0.5/0.7071 = 0.7071)
    r = torch.tensor([0.0, 1.0, 2.0, 2.0])
    out = group_normalize(r, 2)
    h = 0.5 / math.sqrt(0.5)
    assert torch.allclose(out, torch.tensor([-h, h, 0.0, 0.0]))


def test_group_normalize_all_equal_and_single_rollout_give_zero():
    assert torch.equal(group_normalize(torch.ones(6), 3), torch.zeros(6))
    assert torch.equal(group_normalize(torch.zeros(4, 3), 2), torch.zeros(4, 3))
    assert torch.equal(group_normalize(torch.tensor([1.0, 0.0, 1.0]), 1), torch.zeros(3))  # G = 1: no baseline
    with pytest.raises(ValueError, match="groups of num_generations=4"):
        group_normalize(torch.ones(6), 4)


def test_group_normalize_eps_rules():
    # The std floor only matters for tiny spreads: std = 1e-8 -> max(std, 1e-6) (SAPO) vs std + 1e-4 (TRL's GRPO)
    r = torch.tensor([0.0, 2e-8], dtype=torch.float64)
    std = math.sqrt(2) * 1e-8
    assert group_normalize(r, 2, denominator="max")[1].item() == pytest.approx(1e-8 / 1e-6, rel=1e-4)
    assert group_normalize(r, 2, denominator="add")[1].item() == pytest.approx(1e-8 / (std + 1e-4), rel=1e-4)
    assert group_normalize(r, 2, eps=1e-6, denominator="add")[1].item() == pytest.approx(1e-8 / (std + 1e-6), rel=1e-4)


def test_outcome_advantages_equal_trl_grpo():
    """grpo's advantages are TRL's: (r - mean) / (std + 1e-4) per group."""
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.5, 0.25, 0.25, 0.0])
    g = r.view(-1, 4)
    trl = ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-4)).flatten()
    torch.testing.assert_close(algorithm_advantages("grpo", r, 4), trl)


@pytest.mark.parametrize("g", [7, 16])  # float32 std of seven or sixteen 1/3 is ~3e-8, not 0
def test_equal_but_inexact_groups_are_zeroed(g):
    """Groups of equal rewards that are not exact in float32 (1/3, 2/3, 2/5, ...) get exactly 0, not a spurious
    common advantage: step_reward_broadcast with K = 3, grpo_prefix with a valid bonus."""
    codes = [(3, 0, 0)] * g  # one level of three right: mean step reward 1/3
    targets = [TARGET] * g
    r = algorithm_rewards("step_reward_broadcast", codes, targets)
    assert r[0].item() == pytest.approx(1 / 3)
    assert torch.equal(algorithm_advantages("step_reward_broadcast", r, g), torch.zeros(g))
    r = algorithm_rewards("grpo_prefix", [(3, 1, 0)] * g, targets, valid_bonus=0.1, is_valid=lambda c: True)
    assert r[0].item() == pytest.approx(0.6)
    assert torch.equal(algorithm_advantages("grpo_prefix", r, g), torch.zeros(g))
    assert torch.tensor([1 / 3] * g).std().item() > 0  # the case a `std > 0` test misses
    weird = torch.full((g, 3), 1 / 3) * torch.tensor([1.0, 2.0, 0.4])
    assert torch.equal(group_normalize(weird, g), torch.zeros(g, 3))
    assert torch.equal(group_normalize(weird, g, denominator="add"), torch.zeros(g, 3))


@pytest.mark.parametrize("algorithm", ["sapo", "grpo", "grpo_prefix", "step_reward_broadcast", "outcome_step_adv"])
def test_single_rollout_groups_give_zero_for_every_algorithm(algorithm):
    codes = [(3, 1, 4), (0, 1, 4)]
    r = algorithm_rewards(algorithm, codes, [TARGET] * 2)
    assert torch.equal(algorithm_advantages(algorithm, r, 1), torch.zeros_like(r))


def test_reward_registry_and_dotted_path(monkeypatch):
    import sys
    import types

    from rl.rewards import REWARDS, get_reward, register_reward

    assert {"level_match", "exact_match", "prefix_match"} <= set(REWARDS)

    @register_reward("last_level", per_step=True)
    def last_level(codes, target, **_):
        return [0.0] * (len(target) - 1) + [float(codes is not None and codes[-1] == target[-1])]

    try:
        codes = [(3, 1, 4), (0, 0, 4), (0, 0, 0), None]
        r = algorithm_rewards("sapo", codes, [TARGET] * 4, reward="last_level")
        assert r.tolist() == [[0, 0, 1], [0, 0, 1], [0, 0, 0], [0, 0, 0]]
        scalar = algorithm_rewards("grpo", codes, [TARGET] * 4, reward="last_level")  # a per-step reward's mean
        assert torch.allclose(scalar, torch.tensor([1 / 3, 1 / 3, 0, 0]))
        with pytest.raises(ValueError, match="already registered"):
            register_reward("last_level")(lambda c, t, **_: 0.0)
    finally:
        del REWARDS["last_level"]
    module = types.ModuleType("my_rewards")
    module.first = lambda codes, target, **_: float(codes is not None and codes[0] == target[0])
    monkeypatch.setitem(sys.modules, "my_rewards", module)
    for path in ("my_rewards:first", "my_rewards.first"):
        r = get_reward(path)
        assert not r.per_step and r.scalar((3, 0, 0), TARGET) == 1.0
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        get_reward("nope")
    with pytest.raises(ValueError, match="cannot import"):
        get_reward("my_rewards:missing")


def test_sapo_step_advantages_keep_signal_where_outcome_has_none():
    # One group, G = 4; target (3,1,4). Nobody is exactly right, so outcome GRPO has no signal,
    # but level 0 and level 2 differ across rollouts.
    codes = [(3, 0, 4), (3, 0, 0), (0, 0, 4), None]
    targets = [TARGET] * 4
    m = algorithm_rewards("sapo", codes, targets)
    assert m.tolist() == [[1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 0, 0]]
    a = algorithm_advantages("sapo", m, 4)
    # level 0 and 2 columns are [1,1,0,0]: mean .5, unbiased std sqrt(1/3)
    s = 0.5 / math.sqrt(1 / 3)
    expected = torch.tensor([[s, 0, s], [s, 0, -s], [-s, 0, s], [-s, 0, -s]])
    assert torch.allclose(a, expected, atol=1e-6)
    assert zero_std_groups(m, 4).tolist() == [[False, True, False]]
    outcome = algorithm_rewards("grpo", codes, targets)
    assert outcome.tolist() == [0, 0, 0, 0]
    assert torch.equal(algorithm_advantages("grpo", outcome, 4), torch.zeros(4))
    assert zero_std_groups(outcome, 4).tolist() == [True]


def test_prefix_baseline_compares_each_level_within_its_sid_prefix():
    # G = 4, target (3,1,4), gated reward. Level 0: the whole group. Level 1: the three rollouts with code 3 at level
    # 0 (the fourth is alone under code 0: advantage 0, where the whole-group rule pushes it down for a level it could
    # not match). Level 2: the two rollouts with prefix (3,1); the one under (3,0) is alone.
    codes = [(3, 1, 4), (3, 1, 0), (3, 0, 4), (0, 1, 4)]
    m = algorithm_rewards("sapo", codes, [TARGET] * 4, reward="gated_level_match")
    assert m.tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0]]
    a = algorithm_advantages("sapo", m, 4, reward="gated_level_match", step_baseline="prefix", codes=codes)
    s0 = 0.25 / 0.5  # level 0 column [1,1,1,0]: mean .75, unbiased std .5
    s1 = (1 - 2 / 3) / math.sqrt(1 / 3)  # level 1 among [1,1,0]: mean 2/3, unbiased std sqrt(1/3)
    s2 = 0.5 / math.sqrt(0.5)  # level 2 among [1,0]
    expected = torch.tensor([[s0, s1, s2], [s0, s1, -s2], [s0, -2 * s1, 0], [-3 * s0, 0, 0]])
    assert torch.allclose(a, expected, atol=1e-6)
    # level 0 is the whole-group rule; deeper levels differ from it exactly where prefixes differ
    group = algorithm_advantages("sapo", m, 4, reward="gated_level_match")
    assert torch.allclose(a[:, 0], group[:, 0]) and group[3, 1] < 0 and a[3, 1] == 0
    # groups are separate prompts; a malformed rollout (None) is alone under every prefix above level 0
    two = prefix_group_normalize(torch.cat([m, m]), codes + [codes[0], codes[1], codes[2], None], 4)
    assert torch.allclose(two[:4], expected, atol=1e-6) and two[7, 1:].tolist() == [0, 0]


def test_positive_weight_scales_only_the_positive_advantages():
    # SAPO, G = 4, target (3,1,4), gated reward; level 0 column [1,1,1,0] gives +0.5 three times and -1.5 once
    codes = [(3, 1, 4), (3, 1, 0), (3, 0, 4), (0, 1, 4)]
    m = algorithm_rewards("sapo", codes, [TARGET] * 4, reward="gated_level_match")
    plain = algorithm_advantages("sapo", m, 4, reward="gated_level_match")
    half = algorithm_advantages("sapo", m, 4, reward="gated_level_match", positive_weight=0.5)
    assert half[:, 0].tolist() == pytest.approx([0.25, 0.25, 0.25, -1.5])
    assert torch.equal(half, torch.where(plain > 0, plain / 2, plain))
    negatives_only = algorithm_advantages("sapo", m, 4, reward="gated_level_match", positive_weight=0.0)
    assert (negatives_only <= 0).all() and torch.equal(negatives_only.clamp(max=0), plain.clamp(max=0))
    # outcome GRPO: one right rollout of four, its +1.5 scaled, the three -0.5 kept
    r = algorithm_rewards("grpo", codes, [TARGET] * 4)
    assert algorithm_advantages("grpo", r, 4, positive_weight=0.2).tolist() == pytest.approx(
        [1.5 * 0.2, -0.5, -0.5, -0.5], abs=1e-3)
    with pytest.raises(ValueError, match="positive_weight must be >= 0"):
        weight_positive(plain, -0.1)


def test_to_go_credit_sums_each_step_with_the_later_steps():
    # SAPO, G = 4, target (3,1,4), gated reward: columns [1,1,1,0], [1,1,0,0], [1,0,0,0]
    codes = [(3, 1, 4), (3, 1, 0), (3, 0, 4), (0, 1, 4)]
    m = algorithm_rewards("sapo", codes, [TARGET] * 4, reward="gated_level_match")
    a0 = torch.tensor([0.5, 0.5, 0.5, -1.5])  # mean .75, unbiased std .5
    s = 0.5 / math.sqrt(1 / 3)
    a1 = torch.tensor([s, s, -s, -s])  # mean .5, unbiased std sqrt(1/3)
    a2 = torch.tensor([1.5, -0.5, -0.5, -0.5])  # the exact match's advantage: what outcome GRPO gives each rollout
    to_go = algorithm_advantages("sapo", m, 4, reward="gated_level_match", step_credit="to_go")
    expected = torch.stack([a0 + a1 + a2, a1 + a2, a2], dim=1)
    assert torch.allclose(to_go, expected, atol=1e-6)
    exact = algorithm_rewards("grpo", codes, [TARGET] * 4)
    assert torch.allclose(to_go[:, -1], algorithm_advantages("grpo", exact, 4), atol=1e-3)
    # the rollout right at every level gets the most credit at its first step; a wrong first code the least
    assert to_go[0, 0] == to_go[:, 0].max() and to_go[3, 0] == to_go[:, 0].min()
    assert torch.equal(advantage_to_go(torch.tensor([[1.0, 2.0, 3.0]])), torch.tensor([[6.0, 5.0, 3.0]]))
    with pytest.raises(ValueError, match="needs a step algorithm"):
        algorithm_advantages("grpo", exact, 4, step_credit="to_go")
    with pytest.raises(ValueError, match="step_credit must be one of"):
        algorithm_advantages("sapo", m, 4, step_credit="future")
    with pytest.raises(ValueError, match=r"expects \(N, K\)"):
        advantage_to_go(torch.zeros(4))


def test_prefix_baseline_needs_a_per_step_reward_and_codes():
    m = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="per-step reward"):
        algorithm_advantages("grpo", torch.zeros(4), 4, step_baseline="prefix", codes=[None] * 4)
    with pytest.raises(ValueError, match="needs the rollouts' SID codes"):
        algorithm_advantages("sapo", m, 4, step_baseline="prefix")
    with pytest.raises(ValueError, match="step_baseline must be one of"):
        algorithm_advantages("sapo", m, 4, step_baseline="tree")


def test_ablation_rewards():
    codes = [(3, 1, 4), (3, 0, 4), (0, 0, 0), None]
    targets = [TARGET] * 4
    broadcast = algorithm_rewards("step_reward_broadcast", codes, targets)
    assert torch.allclose(broadcast, torch.tensor([1.0, 2 / 3, 0.0, 0.0]))
    step_outcome = algorithm_rewards("outcome_step_adv", codes, targets)
    assert step_outcome.tolist() == [[1, 1, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]]
    # its step advantage equals outcome GRPO's advantage at every step
    a_steps = algorithm_advantages("outcome_step_adv", step_outcome, 4)
    a_grpo = algorithm_advantages("grpo", algorithm_rewards("grpo", codes, targets), 4)
    assert torch.allclose(a_steps, a_grpo.unsqueeze(1).expand(-1, 3))
    prefix = algorithm_rewards("grpo_prefix", codes, targets)
    assert prefix.tolist() == [1.0, 0.25, 0.0, 0.0]
    with pytest.raises(ValueError, match="unknown RL algorithm 'sapo_loss'"):
        algorithm_rewards("sapo_loss", codes, targets)


# Token layouts for K = 2 (T = token positions of the completion, -1 = glue or padding):
#   interleaved:  <think> x </think> <a_1> <think> y y </think> <b_2> <eos> <pad>
#   blocks_first: <think> x </think> <think> y y </think> <a_1> <b_2> <eos> <pad>
INTERLEAVED = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 1, -1, -1]])
BLOCKS_FIRST = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 0, 1, -1, -1]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]])


@pytest.mark.parametrize("step_index", [INTERLEAVED, BLOCKS_FIRST], ids=["interleaved", "blocks_first"])
def test_token_map_both_layouts(step_index):
    adv = torch.tensor([[2.0, -1.0]])
    tokens = scatter_step_advantages(adv, step_index)
    expected = torch.where(step_index == 0, 2.0, torch.where(step_index == 1, -1.0, 0.0))
    assert torch.equal(tokens, expected)
    # per-step length normalisation: L = 10 loss tokens, |step0| = 4, |step1| = 5, K = 2
    scale = step_length_scale(step_index, MASK, 2)
    expected_scale = torch.where(step_index == 0, 10 / (2 * 4), torch.where(step_index == 1, 10 / (2 * 5), 1.0))
    assert torch.allclose(scale, expected_scale)
    # TRL grpo loss with ratio 1: mean over loss tokens of -A_t equals -(1/K) sum_k A_k (SAPO per-step average)
    tok = token_advantages(adv, step_index, MASK, torch.tensor([True]))
    trl_mean = (tok * MASK).sum() / MASK.sum()
    assert trl_mean.item() == pytest.approx((2.0 + -1.0) / 2)


def test_sid_only_step_tokens_put_each_step_on_its_sid_token():
    """step_tokens='sid': the parser's SID-only map leaves block tokens at 0, and the per-step normalisation still
    gives TRL's token mean = SAPO's per-step average, each step now being its one SID token."""
    from genrec.response import parse_response, step_index_tensor

    ids = [1, 5, 2, 10, 1, 5, 6, 2, 13, 3, 0]  # the interleaved layout above: <a_1> at 3, <b_2> at 8
    sid_only = step_index_tensor([parse_response(ids, _spec("interleaved"))], len(ids), blocks=False)
    assert sid_only.tolist() == [[-1, -1, -1, 0, -1, -1, -1, -1, 1, -1, -1]]
    adv = torch.tensor([[2.0, -1.0]])
    tok = token_advantages(adv, sid_only, MASK, torch.tensor([True]))
    assert torch.count_nonzero(tok).item() == 2
    assert tok[0, 3].item() == pytest.approx(2.0 * 10 / 2) and tok[0, 8].item() == pytest.approx(-1.0 * 10 / 2)
    assert ((tok * MASK).sum() / MASK.sum()).item() == pytest.approx((2.0 + -1.0) / 2)


def test_token_advantages_malformed_rollout_gets_broadcast_mean():
    adv = torch.tensor([[2.0, -1.0], [-0.5, -1.5]])
    step_index = torch.cat([INTERLEAVED, INTERLEAVED])
    mask = torch.cat([MASK, MASK])
    out = token_advantages(adv, step_index, mask, torch.tensor([True, False]), step_length_norm=False)
    assert torch.equal(out[0], scatter_step_advantages(adv[:1], INTERLEAVED)[0])
    assert torch.equal(out[1], torch.tensor([-1.0] * 10 + [0.0]))


def test_scatter_rejects_bad_shapes():
    with pytest.raises(ValueError, match="out of range for K=2"):
        scatter_step_advantages(torch.zeros(1, 2), torch.tensor([[0, 2]]))
    with pytest.raises(ValueError, match="expected \\(N, K\\) and \\(N, T\\)"):
        scatter_step_advantages(torch.zeros(2), torch.tensor([[0, 1]]))


def _spec(layout):
    from genrec.response import ResponseSpec

    return ResponseSpec.from_ids(think_open_id=1, think_close_id=2, eos_id=3, pad_id=0,
                                 level_token_ids=[[10, 11], [12, 13]], vocab_size=20, layout=layout)


@pytest.mark.parametrize(
    "layout,ids,expected",
    [("interleaved", [1, 5, 2, 10, 1, 5, 6, 2, 13, 3, 0], INTERLEAVED),
     ("blocks_first", [1, 5, 2, 1, 5, 6, 2, 10, 13, 3, 0], BLOCKS_FIRST)],
)
def test_parser_step_index_matches_hand_map(layout, ids, expected):
    from genrec.response import parse_response, step_index_tensor

    parsed = parse_response(ids, _spec(layout))
    assert parsed.ok and parsed.codes == (0, 1)
    assert torch.equal(step_index_tensor([parsed], len(ids)), expected)
    # Malformed (EOS after one step): not ok, so its rewards are gated to zero and counted.
    bad = parse_response(ids[:4] + [3], _spec(layout))
    assert not bad.ok
    assert step_matches(bad.codes if bad.ok else None, (0, 1)) == [0.0, 0.0]


def _grammar(layout, budget):
    from genrec.grammar import ResponseGrammar
    from genrec.trie import SIDTrie
    from sid_tokenizer.sidmap import SIDMap

    # catalog: (0,0), (0,1), (1,1); level-0 ids 10,11; level-1 ids 12,13
    sid_map = SIDMap({"x": (0, 0), "y": (0, 1), "z": (1, 1)}, [2, 2])
    spec = _spec(layout)
    return ResponseGrammar(spec, SIDTrie.from_spec(sid_map, spec), budget)


def test_sid_positions_and_masked_logps():
    from rl.sid_mask import masked_logps

    grammar = _grammar("interleaved", 4)
    trie = grammar.trie
    completion = torch.tensor([[1, 5, 2, 11, 1, 2, 13, 3], [1, 2, 10, 1, 2, 12, 3, 0]])
    mask = torch.tensor([[1] * 8, [1] * 7 + [0]])
    rows, cols, nodes = grammar.positions(completion, mask).sid()
    assert (rows.tolist(), cols.tolist()) == ([0, 0, 1, 1], [3, 6, 2, 5])
    allowed = [trie.children(n)[0] for n in nodes.tolist()]
    assert allowed == [[10, 11], [13], [10, 11], [12, 13]]
    logits = torch.randn(4, 20)
    tokens = completion[rows, cols]
    out = masked_logps(trie, logits, tokens, nodes)
    for i, ids in enumerate(allowed):
        ref = torch.log_softmax(logits[i, ids], dim=0)[ids.index(int(tokens[i]))]
        assert out[i].item() == pytest.approx(ref.item(), abs=1e-5)
    assert out[1].item() == pytest.approx(0.0, abs=1e-6)  # a single allowed child: probability 1


def test_forced_positions_by_hand():
    # interleaved, budget 2: <think> x </think>(free) <a> <think> y y </think>(at budget: forced) <b> <eos> <pad>
    ids = torch.tensor([[1, 5, 2, 10, 1, 5, 6, 2, 13, 3, 0]])
    mask = torch.tensor([[1] * 10 + [0]])
    pos = _grammar("interleaved", 2).positions(ids, mask)
    assert torch.nonzero(pos.forced[0]).flatten().tolist() == [0, 4, 7, 9]
    assert torch.nonzero(pos.text[0]).flatten().tolist() == [1, 2, 5, 6]  # free text and the free </think>
    # blocks_first, budget 1: <think> x </think>(forced) <think> </think>(free) <a> <b>(single child: forced) <eos>
    ids = torch.tensor([[1, 5, 2, 1, 2, 11, 13, 3]])
    pos = _grammar("blocks_first", 1).positions(ids, torch.ones_like(ids))
    assert torch.nonzero(pos.forced[0]).flatten().tolist() == [0, 2, 3, 6, 7]
    # off the grammar (a second EOS where pads may follow is fine; text after the SID is not): nothing from there on
    ids = torch.tensor([[1, 2, 10, 5, 1, 2, 12, 3]])
    pos = _grammar("interleaved", 2).positions(ids, torch.ones_like(ids))
    assert torch.nonzero(pos.forced[0]).flatten().tolist() == [0]


def test_sid_plus_outcome_puts_the_outcome_advantage_on_every_other_loss_token():
    """`step_tokens='sid+outcome'`: SID tokens keep their step advantage (scaled), block text and EOS of a well-formed
    rollout get its outcome advantage, padding and malformed rollouts are left as token_advantages made them."""
    # row 0: <think> b b </think> SID0 <think> b </think> SID1 EOS pad; row 1 malformed
    step_index = torch.tensor([[-1, -1, -1, -1, 0, -1, -1, -1, 1, -1, -1]] * 2)
    mask = torch.tensor([[1] * 10 + [0]] * 2)
    ok = torch.tensor([True, False])
    step_adv = torch.tensor([[1.0, -0.5], [-1.0, -1.0]])
    tokens = token_advantages(step_adv, step_index, mask, ok, step_length_norm=True)
    out = outcome_on_other_tokens(tokens, step_index, mask, ok, torch.tensor([2.5, -0.4]))
    # SID tokens: A[i,k] * L / (K * 1) = A * 10 / 2
    assert out[0, 4].item() == pytest.approx(5.0) and out[0, 8].item() == pytest.approx(-2.5)
    others = [0, 1, 2, 3, 5, 6, 7, 9]
    assert torch.equal(out[0, others], torch.full((8,), 2.5))
    assert out[0, 10].item() == 0.0  # padding
    assert torch.equal(out[1], tokens[1])  # malformed: its mean step advantage on every loss token, as before


def test_outcome_groups_replace_only_the_groups_whose_exact_match_varies():
    """`outcome_groups='outcome'`: a group with one exact hit gets outcome GRPO's advantage on every loss token; a group
    whose outcome is constant (no hit) keeps its per-step token advantages; padding stays 0; `rows` picks one
    process's slice of the gathered rewards."""
    g = 4
    exact = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # group 0: one hit; group 1: none
    tokens = torch.arange(8 * 3, dtype=torch.float32).view(8, 3) + 1.0  # stand-in per-step token advantages
    mask = torch.tensor([[1, 1, 0]] * 8)
    out = outcome_where_varied(tokens, exact, g, mask)
    # by hand: mean 0.25, unbiased std 0.5 -> hit (0.75) / (0.5 + 1e-4), misses (-0.25) / (0.5 + 1e-4)
    hit, miss = 0.75 / (0.5 + 1e-4), -0.25 / (0.5 + 1e-4)
    assert out[0, :2].tolist() == pytest.approx([hit, hit]) and out[0, 2].item() == 0.0
    for i in (1, 2, 3):
        assert out[i, :2].tolist() == pytest.approx([miss, miss]) and out[i, 2].item() == 0.0
    assert torch.equal(out[4:], tokens[4:])  # constant outcome: SAPO's own advantages, padding included
    second = outcome_where_varied(tokens[4:], exact, g, mask[4:], rows=slice(4, 8))  # process 1 of 2
    assert torch.equal(second, tokens[4:])
    with pytest.raises(ValueError, match="token rows"):
        outcome_where_varied(tokens, exact, g, mask, rows=slice(0, 4))

