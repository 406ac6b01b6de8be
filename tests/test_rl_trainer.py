"""SAPOTrainer on a tiny model and catalog: constrained rollouts, masked SID log-probs, step advantages on tokens,
the loss gradient against a hand-written SAPO loss, and a short end-to-end run (TensorBoard scalars, weights move)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.helpers_tiny import copy_tiny_model, tiny_recdata, tiny_sid_map

G = 4


def _make_trainer(tmp_path: Path, reward_funcs=None, **overrides):
    from genrec.modeling import load_model_and_tokenizer
    from rl.config import SAPOConfig
    from rl.data import build_rl_dataset
    from rl.trainer import SAPOTrainer

    torch.manual_seed(0)
    model_dir = copy_tiny_model(tmp_path / "model")
    model, tok = load_model_and_tokenizer(model_dir)
    tok.padding_side = "left"
    rd = tiny_recdata()
    ds = build_rl_dataset(rd.train[:8], rd.catalog, tiny_sid_map(), tok)
    kwargs = dict(
        output_dir=str(tmp_path / "out"), num_generations=G, per_device_train_batch_size=G, max_steps=2,
        max_completion_length=24, max_block_tokens=4, learning_rate=1e-3, save_strategy="no", use_cpu=True,
        seed=0, report_to=[], disable_tqdm=True,
    )
    kwargs.update(overrides)
    trainer = SAPOTrainer(
        model, SAPOConfig(**kwargs), tiny_sid_map(), train_dataset=ds, processing_class=tok, reward_funcs=reward_funcs
    )
    return trainer, ds


@pytest.fixture(scope="module", params=["interleaved", "blocks_first", "direct"])
def rollout(request, tmp_path_factory):
    """One generation + scoring pass of SAPO on 2 prompts x G rollouts (real constrained sampling)."""
    tmp = tmp_path_factory.mktemp("rl")
    trainer, ds = _make_trainer(tmp, layout=request.param)
    trainer.model.train()
    inputs = [dict(ds[0]) for _ in range(G)] + [dict(ds[1]) for _ in range(G)]
    out = trainer._generate_and_score_completions(inputs)
    # Make every group informative whatever was sampled: the target of each group becomes the SID of its first
    # rollout, and the advantages of these same rollouts are recomputed.
    from genrec.response import parse_response

    for j in range(0, len(inputs), G):
        first = parse_response(out["completion_ids"][j][out["completion_mask"][j].bool()].tolist(), trainer.spec)
        for x in inputs[j : j + G]:
            x["target_codes"] = list(first.codes)
    trainer.apply_step_advantages(out, inputs)
    return trainer, inputs, out


def test_rollouts_are_well_formed(rollout):
    from genrec.response import parse_response

    trainer, _, out = rollout
    for ids, m in zip(out["completion_ids"], out["completion_mask"]):
        parsed = parse_response(ids[m.bool()].tolist(), trainer.spec)
        assert parsed.ok, parsed.error
        assert all(s.block_end - s.block_start <= 4 + 2 for s in parsed.steps)  # budget + the two tags
    assert trainer._metrics["train"]["sid/malformed_rate"][-1] == 0.0


def test_masked_logps_use_the_samplers_mask(rollout):
    """Ours = log-softmax over exactly the tokens the sampler's processor allowed at SID positions, 0 where it
    allowed a single token (forced structure), the unmasked log-prob in free text."""
    trainer, _, out = rollout
    model = trainer.model
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    att = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    t = out["completion_ids"].shape[1]
    with torch.no_grad():
        ours, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, att, t)
        logits = model(input_ids=ids, attention_mask=att).logits[:, -t - 1 : -1].float() / trainer.temperature
    proc = trainer.make_logits_processor()
    p = out["prompt_ids"].shape[1]
    n_sid = n_forced = n_text = 0
    for r in range(ids.shape[0]):
        for c in range(t):
            if not out["completion_mask"][r, c]:
                continue
            tok = int(out["completion_ids"][r, c])
            full = torch.log_softmax(logits[r, c], -1)[tok]
            allowed = proc.allowed_mask(ids[r : r + 1, : p + c], prompt_len=p, vocab_size=logits.shape[-1])[0]
            assert allowed[tok]
            if int(allowed.sum()) == 1:
                assert ours[r, c].item() == 0.0
                n_forced += 1
            elif trainer.spec.sid_of(tok) is not None:
                expected = torch.log_softmax(logits[r, c].masked_fill(~allowed, -math.inf), -1)[tok]
                assert ours[r, c].item() == pytest.approx(expected.item(), abs=1e-4)
                assert ours[r, c].item() > full.item()  # renormalised over fewer tokens
                n_sid += 1
            else:
                assert ours[r, c].item() == pytest.approx(full.item(), abs=1e-4)
                n_text += 1
    n = ids.shape[0]
    assert n_sid == 2 * n  # K = 2 SID tokens per rollout, none forced in this catalog
    if trainer.spec.layout == "direct":
        assert n_forced == n and n_text == 0  # only EOS is forced; no free text at all
    else:
        assert n_forced >= 3 * n  # two <think> and EOS at least
        assert n_text > 0


def test_token_advantages_follow_the_steps(rollout):
    from genrec.response import parse_response
    from rl.advantages import algorithm_advantages
    from rl.rewards import match_matrix

    trainer, inputs, out = rollout
    adv = out["advantages"]
    assert adv.shape == out["completion_ids"].shape
    codes, parsed = [], []
    for ids, m in zip(out["completion_ids"], out["completion_mask"]):
        pr = parse_response(ids[m.bool()].tolist(), trainer.spec)
        parsed.append(pr)
        codes.append(pr.codes)
    step_adv = algorithm_advantages("sapo", match_matrix(codes, [x["target_codes"] for x in inputs]), G)
    for i, pr in enumerate(parsed):
        length = int(out["completion_mask"][i].sum())
        for s in pr.steps:
            span = list(range(s.block_start, s.block_end)) + [s.sid_pos]
            scale = length / (2 * len(span))
            expected = torch.full((len(span),), step_adv[i, s.level].item() * scale)
            assert torch.allclose(adv[i, span], expected, atol=1e-5)
        assert adv[i, pr.eos_pos].item() == 0.0  # glue
        assert torch.all(adv[i, length:] == 0)


def test_sid_only_step_tokens_leave_blocks_at_zero(rollout):
    """step_tokens='sid': the same rollouts' advantage sits on each step's SID token only (block tokens 0)."""
    from genrec.response import parse_response

    trainer, inputs, out = rollout
    paper = out["advantages"].clone()
    trainer.args.step_tokens = "sid"
    try:
        trainer.apply_step_advantages(out, inputs)
        sid_only = out["advantages"].clone()
    finally:
        trainer.args.step_tokens = "step"
        trainer.apply_step_advantages(out, inputs)
    assert torch.equal(out["advantages"], paper)
    for i, (ids, m) in enumerate(zip(out["completion_ids"], out["completion_mask"])):
        pr = parse_response(ids[m.bool()].tolist(), trainer.spec)
        length = int(m.sum())
        sids = [s.sid_pos for s in pr.steps]
        others = [t for t in range(sids[-1] + 2) if t not in sids]
        assert torch.all(sid_only[i, others] == 0)
        for s in pr.steps:  # each step is one token: the per-step mean gives it L / K times the step advantage
            assert sid_only[i, s.sid_pos].item() == pytest.approx(paper[i, s.sid_pos].item() * (
                (s.block_end - s.block_start + 1) if trainer.args.step_length_norm else 1), abs=1e-4)
        assert length > 0


def _advantages_with(rollout, inputs, **settings):
    """The rollout's token advantages for `inputs` under `settings` (SAPOConfig fields); afterwards the fixture's own
    settings and advantages are back, for the tests that share it."""
    trainer, fixture_inputs, out = rollout
    saved = {name: getattr(trainer.args, name) for name in settings}
    try:
        for name, value in settings.items():
            setattr(trainer.args, name, value)
        trainer.apply_step_advantages(out, inputs)
        return out["advantages"].clone()
    finally:
        for name, value in saved.items():
            setattr(trainer.args, name, value)
        trainer.apply_step_advantages(out, fixture_inputs)


def test_sid_plus_outcome_puts_the_exact_match_advantage_on_the_blocks(rollout):
    """step_tokens='sid+outcome' on real rollouts: SID tokens as with 'sid', every other loss token of a rollout its
    outcome-GRPO advantage (exact match, group-normalised as TRL's GRPO)."""
    from genrec.response import parse_response
    from rl.advantages import algorithm_advantages
    from rl.rewards import match_matrix

    trainer, inputs, out = rollout
    sid_only = _advantages_with(rollout, inputs, step_tokens="sid")
    hybrid = _advantages_with(rollout, inputs, step_tokens="sid+outcome")
    codes = []
    for ids, m in zip(out["completion_ids"], out["completion_mask"]):
        codes.append(parse_response(ids[m.bool()].tolist(), trainer.spec).codes)
    exact = match_matrix(codes, [x["target_codes"] for x in inputs]).all(dim=1).float()
    outcome = algorithm_advantages("grpo", exact, G)
    assert outcome.abs().sum() > 0  # some group has an exact hit and a miss, so the blocks' values are not all 0
    for i, (ids, m) in enumerate(zip(out["completion_ids"], out["completion_mask"])):
        pr = parse_response(ids[m.bool()].tolist(), trainer.spec)
        length = int(m.sum())
        sids = [s.sid_pos for s in pr.steps]
        assert torch.equal(hybrid[i, sids], sid_only[i, sids])
        others = [t for t in range(length) if t not in sids]
        assert torch.allclose(hybrid[i, others], torch.full((len(others),), outcome[i].item()), atol=1e-6)
        assert torch.all(hybrid[i, length:] == 0)


def test_outcome_groups_give_varied_groups_the_grpo_advantage(rollout):
    """outcome_groups='outcome' on real rollouts: a group with an exact hit and a miss gets on every loss token what
    algorithm 'grpo' gives the row; every other group keeps SAPO's step advantages."""
    from genrec.response import parse_response
    from rl.advantages import algorithm_advantages, zero_std_groups
    from rl.rewards import match_matrix

    trainer, inputs, out = rollout
    codes = [parse_response(ids[m.bool()].tolist(), trainer.spec).codes
             for ids, m in zip(out["completion_ids"], out["completion_mask"])]
    # group 1's target: its first rollout's SID with a last code that none of its rollouts has (no exact hit, so a
    # constant outcome, while the earlier levels still match for some rollouts)
    taken = {c[-1] for c in codes[G:]}
    missed = list(codes[G][:-1]) + [next(v for v in range(10_000) if v not in taken)]
    inputs = inputs[:G] + [dict(x, target_codes=missed) for x in inputs[G:]]
    sapo = _advantages_with(rollout, inputs)
    mixed = _advantages_with(rollout, inputs, outcome_groups="outcome")
    exact = match_matrix(codes, [x["target_codes"] for x in inputs]).all(dim=1).float()
    varied = (~zero_std_groups(exact, G)).repeat_interleave(G)
    grpo = algorithm_advantages("grpo", exact, G)  # what outcome GRPO gives each rollout
    assert varied[:G].all() and not varied[G:].any()
    assert sapo[G:].abs().sum() > 0  # the constant-outcome group has per-step signal to keep
    for i, m in enumerate(out["completion_mask"]):
        length = int(m.sum())
        if varied[i]:
            assert torch.allclose(mixed[i, :length], torch.full((length,), grpo[i].item()), atol=1e-6)
        else:
            assert torch.equal(mixed[i], sapo[i])


def test_to_go_credit_gives_each_step_tokens_the_sum_of_later_step_advantages(rollout):
    """step_credit='to_go' on real rollouts: every token of step k carries sum_{j >= k} A[i,j] where the paper's
    mapping ('level') carries A[i,k] (same tokens, same per-step length scale)."""
    from genrec.response import parse_response, step_index_tensor
    from rl.advantages import algorithm_advantages, algorithm_rewards

    trainer, inputs, out = rollout
    level = _advantages_with(rollout, inputs, step_tokens="step", step_length_norm=False)
    to_go = _advantages_with(rollout, inputs, step_tokens="step", step_length_norm=False, step_credit="to_go")
    parsed = [parse_response(ids[m.bool()].tolist(), trainer.spec)
              for ids, m in zip(out["completion_ids"], out["completion_mask"])]
    codes = [p.codes for p in parsed]
    targets = [x["target_codes"] for x in inputs]
    rewards = algorithm_rewards(trainer.args.algorithm, codes, targets, reward=trainer.reward)
    step_adv = algorithm_advantages(trainer.args.algorithm, rewards, G, reward=trainer.reward)
    assert step_adv[:, 1:].abs().sum() > 0  # later steps have signal, so earlier steps differ under the two credits
    step_index = step_index_tensor(parsed, level.shape[1], blocks=True)
    for i in range(len(parsed)):
        for t, k in enumerate(step_index[i].tolist()):
            if k < 0:  # glue and padding carry nothing under either credit
                assert level[i, t] == 0 and to_go[i, t] == 0
            else:
                assert level[i, t].item() == pytest.approx(step_adv[i, k].item(), abs=1e-5)
                assert to_go[i, t].item() == pytest.approx(step_adv[i, k:].sum().item(), abs=1e-5)


def test_loss_gradient_equals_hand_written_sapo_loss(rollout):
    """TRL's grpo loss on our scaled token advantages == mean_i (1/K) sum_k (1/|y_ik|) sum_t -A_ik * logp_t."""
    from genrec.response import parse_response

    from rl.advantages import algorithm_advantages
    from rl.rewards import match_matrix

    trainer, inputs, out = rollout
    model = trainer.model
    batch = {k: v for k, v in out.items()}
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); we call the loss directly
    model.zero_grad()
    trainer._compute_loss(model, batch).backward()
    g_trl = [p.grad.clone() for p in model.parameters() if p.grad is not None]

    model.zero_grad()
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    att = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    t = out["completion_ids"].shape[1]
    logps, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, att, t)
    parsed = [parse_response(r[m.bool()].tolist(), trainer.spec) for r, m in zip(out["completion_ids"], out["completion_mask"])]
    unscaled = algorithm_advantages("sapo", match_matrix([p.codes for p in parsed], [x["target_codes"] for x in inputs]), G)
    loss = 0.0
    for i, (row, m) in enumerate(zip(out["completion_ids"], out["completion_mask"])):
        pr = parse_response(row[m.bool()].tolist(), trainer.spec)
        per_step = []
        for s in pr.steps:
            span = list(range(s.block_start, s.block_end)) + [s.sid_pos]
            per_step.append(-unscaled[i, s.level] * logps[i, span].mean())
        loss = loss + sum(per_step) / len(per_step)
    (loss / len(out["completion_ids"])).backward()
    g_hand = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert len(g_trl) == len(g_hand)
    assert sum(g.abs().sum() for g in g_hand) > 0
    for a, b in zip(g_trl, g_hand):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_block_kl_counts_the_thinking_blocks_text_only(rollout):
    """kl_tokens='blocks': TRL's KL term (value and gradient) == a hand-written k3 over the blocks' text tokens only;
    kl_tokens='all' on the same batch counts every completion token."""
    trainer, _, out = rollout
    if not trainer.spec.has_blocks:
        pytest.skip("the direct layout has no thinking blocks (refused, see the next test)")
    model = trainer.model
    mask = out["completion_mask"].float()
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    att = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    t = out["completion_ids"].shape[1]
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, att, t)
    text = trainer.grammar.positions(out["completion_ids"], out["completion_mask"]).text.float() * mask
    assert 0 < text.sum() < mask.sum()
    ref = logps + 0.3 * torch.linspace(-1, 1, logps.numel()).view_as(logps)  # the reference differs everywhere
    batch = dict(out, advantages=torch.zeros_like(out["advantages"]), ref_per_token_logps=ref)
    trainer.current_gradient_accumulation_steps = 1
    grads, losses = {}, {}
    beta, trainer.beta = trainer.beta, 0.5
    try:
        for scope in ("blocks", "all"):
            trainer.args.kl_tokens = scope
            model.zero_grad()
            losses[scope] = trainer._compute_loss(model, batch)
            losses[scope].backward()
            grads[scope] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        assert torch.equal(batch["ref_per_token_logps"], ref)  # the caller's batch is left as it was
        model.zero_grad()
        logps_g, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, att, t)
        k3 = torch.exp(ref - logps_g) - (ref - logps_g) - 1
        if trainer.args.use_bias_correction_kl:  # TRL's importance weight: 1 in value, not in gradient
            k3 = k3 * torch.exp(logps_g - logps_g.detach())
        hand = (0.5 * (k3 * text).sum(-1) / mask.sum(-1)).mean()
        hand.backward()
        g_hand = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    finally:
        trainer.beta, trainer.args.kl_tokens = beta, "all"
    assert losses["blocks"].item() == pytest.approx(hand.item(), rel=1e-5)
    assert losses["all"].item() > losses["blocks"].item() * 1.01
    assert sum(g.abs().sum() for g in g_hand) > 0
    for a, b, c in zip(grads["blocks"], g_hand, grads["all"]):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-4)
    assert not all(torch.allclose(a, c, atol=1e-7, rtol=1e-4) for a, c in zip(grads["blocks"], grads["all"]))


def test_block_kl_needs_a_kl_and_thinking_blocks(tmp_path):
    from rl.config import SAPOConfig

    with pytest.raises(ValueError, match="kl_tokens='blocks'.*beta > 0"):
        SAPOConfig(output_dir=str(tmp_path), kl_tokens="blocks", use_cpu=True, report_to=[])
    with pytest.raises(ValueError, match="kl_tokens must be one of"):
        SAPOConfig(output_dir=str(tmp_path), kl_tokens="sid", beta=0.1, use_cpu=True, report_to=[])
    with pytest.raises(ValueError, match="kl_tokens='blocks'.*layout='direct'"):
        SAPOConfig(output_dir=str(tmp_path), kl_tokens="blocks", beta=0.1, layout="direct", use_cpu=True, report_to=[])
    from genrec.modeling import load_model_and_tokenizer
    from rl.data import build_rl_dataset
    from rl.trainer import SAPOTrainer

    args = SAPOConfig(output_dir=str(tmp_path / "out"), kl_tokens="blocks", beta=0.1, use_cpu=True, report_to=[])
    args.layout = "direct"  # changed after the config's own checks: the trainer refuses too
    model, tok = load_model_and_tokenizer(copy_tiny_model(tmp_path / "model"))
    ds = build_rl_dataset(tiny_recdata().train[:2], tiny_recdata().catalog, tiny_sid_map(), tok)
    with pytest.raises(ValueError, match="kl_tokens='blocks' needs thinking blocks; the 'direct' layout"):
        SAPOTrainer(model, args, tiny_sid_map(), train_dataset=ds, processing_class=tok)


def test_end_to_end_run_logs_and_updates_weights(tmp_path):
    """Three optimizer steps with num_iterations=2 (old log-probs), KL to a reference (beta > 0), the off-policy
    mask and the completions table on 2-D advantages; TensorBoard gets our scalars and the weights move."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer, _ = _make_trainer(
        tmp_path, report_to=["tensorboard"], num_iterations=2, beta=0.01,
        off_policy_mask_threshold=0.5, max_steps=3, log_completions=True, per_device_train_batch_size=4 * G,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed, "no weight changed"
    events = list((tmp_path / "out" / "runs").rglob("events.out.tfevents.*"))  # TensorBoard default: output_dir/runs
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    # The completions table copes with (B, T) advantages: one scalar per rollout plus our per-step columns.
    import pandas as pd

    tables = sorted((tmp_path / "out" / "completions").glob("*.parquet"))
    assert tables
    df = pd.read_parquet(tables[-1])
    assert {"advantage", "step_advantages", "sid", "target_sid"} <= set(df.columns)
    assert all(len(v) == 2 for v in df["step_advantages"])
    assert all(abs(a - sum(v) / 2) < 1e-4 for a, v in zip(df["advantage"], df["step_advantages"]))
    for tag in ("train/sid/match_rate/level_0", "train/sid/exact_match_rate", "train/sid/frac_zero_adv_groups/step_1",
                "train/sid/frac_zero_adv_groups/outcome", "train/kl", "train/entropy", "train/grad_norm",
                "train/rewards/level_match/mean", "train/sid/block_length/level_0"):
        assert tag in tags, f"{tag} not logged; have {sorted(tags)}"


def test_sampler_consistency_guard_rejects_repetition_penalty(tmp_path):
    from rl.config import SAPOConfig

    common = dict(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    with pytest.raises(ValueError, match="repetition_penalty=1.0"):
        SAPOConfig(repetition_penalty=1.2, **common)
    SAPOConfig(repetition_penalty=1.2, constrained_rollouts=False, **common)  # free sampling: allowed
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        SAPOConfig(reward="nope", **common)


def _length_reward(completion_ids=None, **kwargs):
    return [float(len(ids)) for ids in completion_ids]


@pytest.mark.parametrize("algorithm", ["grpo", "sapo"])
def test_user_reward_funcs_drive_scalar_algorithms_like_trl(tmp_path, algorithm):
    """reward_funcs= given to SAPOTrainer: with a scalar algorithm the advantages are TRL's, from those functions
    ((r - mean) / (std + 1e-4) per group); a step algorithm keeps its per-step reward (the functions are logged)."""
    trainer, ds = _make_trainer(tmp_path, reward_funcs=[_length_reward], algorithm=algorithm)
    trainer.model.train()
    inputs = [dict(ds[0]) for _ in range(G)] + [dict(ds[1]) for _ in range(G)]
    out = trainer._generate_and_score_completions(inputs)
    if algorithm == "sapo":
        assert out["advantages"].shape == out["completion_ids"].shape
        return
    r = out["completion_mask"].sum(1).float().view(-1, G)
    expected = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).flatten()
    torch.testing.assert_close(out["advantages"], expected)
    assert trainer._metrics["train"]["sid/exact_match_rate"]  # our SID metrics are still logged
    # the rollout log keeps TRL's advantages (the ones used) for this batch
    sample = trainer._rollout_sample
    assert len(sample) == 2
    logged = [r["step_advantages"] for g in sample for r in g["rollouts"]]
    assert all(v == [pytest.approx(a, abs=1e-4)] * 2 for v, a in zip(logged, expected.tolist()))


@pytest.mark.parametrize("algorithm", ["sapo", "grpo", "sapo-prefix", "sapo-negative"])
def test_rollout_log_is_what_the_trainer_used(tmp_path, algorithm):
    """A real 2-step run writes <output_dir>/rollouts.jsonl: 2 groups per logging step, K values per rollout, the
    advantages equal to those on the trainer's tokens, the outcome advantage by the grpo rule, and `genrec explore`'s
    loader reads it."""
    import json

    from genrec.explore.data import RunIndex
    from genrec.response import parse_response
    from rl.advantages import algorithm_advantages
    from sid_tokenizer.sidmap import parse_sid_string

    baseline = "prefix" if algorithm == "sapo-prefix" else "group"
    positive_weight = 0.25 if algorithm.endswith("-negative") else 1.0  # W-REINFORCE: positives scaled down
    variant = algorithm
    algorithm = algorithm.removesuffix("-prefix").removesuffix("-negative")
    trainer, _ = _make_trainer(tmp_path, output_dir=str(tmp_path / "rl"), algorithm=algorithm,
                               per_device_train_batch_size=2 * G, logging_steps=1, log_rollout_groups=2,
                               step_baseline=baseline, positive_weight=positive_weight)
    used = []
    original = trainer.apply_step_advantages

    def spy(output, inputs):
        original(output, inputs)
        used.append({k: output[k].detach().cpu().clone() for k in ("completion_ids", "completion_mask", "advantages")})

    trainer.apply_step_advantages = spy
    trainer.train()
    lines = (tmp_path / "rl" / "rollouts.jsonl").read_text().splitlines()
    groups = [json.loads(line) for line in lines]
    assert [(g["step"], g["group"]) for g in groups] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    if algorithm == "sapo":  # seeded: some groups carry signal, so the comparisons below are not all zeros
        assert any(v for g in groups for r in g["rollouts"] for v in r["step_advantages"])
    tok = trainer.processing_class
    k = trainer.num_levels
    differs = []  # where the prefix baseline's advantages are not the whole group's
    for g in groups:
        assert g["format"] == "genrec-rollouts/1" and g["algorithm"] == algorithm and g["num_generations"] == G
        assert g["target_sid"] == trainer.sid_map.sid_string(g["target"]) and g["prompt"] and g["user_id"]
        batch = used[g["step"] - 1]
        rs = g["rollouts"]
        assert len(rs) == G
        for r in rs:
            assert len(r["step_rewards"]) == k and len(r["step_advantages"]) == k and len(r["blocks"]) == k
            assert r["sid"] is not None and r["item_id"] == trainer.sid_map.item_for_codes(parse_sid_string(r["sid"]))
            assert r["outcome_reward"] == float(r["sid"] == g["target_sid"])
        # the per-step values are the algorithm's normalisation of the logged rewards ...
        rewards = torch.tensor([r["step_rewards"] for r in rs] if algorithm == "sapo" else [r["reward"] for r in rs])
        codes = [parse_sid_string(r["sid"]) for r in rs]
        expected = algorithm_advantages(algorithm, rewards, G, step_baseline=baseline, codes=codes,
                                        positive_weight=positive_weight)
        differs.append(not torch.allclose(expected, algorithm_advantages(algorithm, rewards, G)))
        expected = expected if expected.dim() == 2 else expected.view(-1, 1).expand(G, k)
        assert torch.allclose(torch.tensor([r["step_advantages"] for r in rs]), expected, atol=1e-3)
        outcome = torch.tensor([r["outcome_reward"] for r in rs])
        assert torch.allclose(torch.tensor([r["outcome_advantage"] for r in rs]),
                              algorithm_advantages("grpo", outcome, G), atol=1e-3)
        # ... and the advantages on the trainer's tokens for these very completions
        for i, r in enumerate(rs):
            row = g["group"] * G + i
            mask = batch["completion_mask"][row].bool()
            ids = batch["completion_ids"][row][mask].tolist()
            assert r["completion"] == tok.decode(ids)
            adv = batch["advantages"][row]
            if algorithm == "grpo":
                assert all(v == pytest.approx(adv.item(), abs=1e-4) for v in r["step_advantages"])
                continue
            parsed = parse_response(ids, trainer.spec)
            for s in parsed.steps:
                span = s.block_end - s.block_start + 1
                scale = len(ids) / (k * span)
                assert adv[s.sid_pos].item() == pytest.approx(r["step_advantages"][s.level] * scale, abs=1e-3)
    # seeded: the prefix rule or the positive weight changes some groups' advantages, so it was applied
    assert any(differs) == (variant != algorithm)
    index = RunIndex(tmp_path)
    index._load_rollouts()
    assert index.parts["RL rollouts"]["status"] == "ok" and len(index.rollouts) == 4
    assert index.rollouts[0]["rollouts"][0]["step_advantages"] == groups[0]["rollouts"][0]["step_advantages"]


def test_rollout_log_append_survives_a_torn_line(tmp_path):
    from genrec.explore.data import RunIndex
    from rl.rollout_log import append_records

    path = tmp_path / "rl" / "rollouts.jsonl"
    append_records(path, [{"step": 1, "rollouts": []}])
    with open(path, "a") as f:
        f.write('{"step": 2, "rollo')  # a crash mid-write
    append_records(path, [{"step": 3, "rollouts": []}, {"step": 3, "rollouts": []}])
    index = RunIndex(tmp_path)
    index._load_rollouts()
    assert [g["step"] for g in index.rollouts] == [1, 3, 3]
    assert "1 unreadable lines skipped" in index.parts["RL rollouts"]["message"]


@pytest.mark.parametrize("layout", ["coarse", "direct"])
def test_beam_rollouts_are_the_evaluations_top_g_items(tmp_path, layout):
    """rollouts='beam': each group holds the G best items of the evaluation's beam search on the same prompt, in
    its order, as well-formed responses; the model is back in train mode; a short run trains on them."""
    from eval.beam import SIDBeamSearch
    from genrec.response import parse_response

    trainer, ds = _make_trainer(tmp_path, layout=layout, rollouts="beam", max_steps=2)
    trainer.model.train()
    inputs = [dict(ds[0]) for _ in range(G)] + [dict(ds[1]) for _ in range(G)]
    out = trainer._generate_and_score_completions(inputs)
    assert trainer.model.training
    search = SIDBeamSearch(trainer.model, trainer.processing_class, trainer.sid_map, layout, num_beams=G,
                           max_block_tokens=4)
    for j in (0, G):
        prompt = out["prompt_ids"][j][out["prompt_mask"][j].bool()].tolist()
        want = [b.codes for b in search.search([prompt], k=G)[0]]
        got = []
        for i in range(j, j + G):
            parsed = parse_response(out["completion_ids"][i][out["completion_mask"][i].bool()].tolist(), trainer.spec)
            assert parsed.ok, parsed.error
            got.append(tuple(parsed.codes))
        assert got == [tuple(c) for c in want] and len(set(got)) == G
    # the untrained model's top-G rarely differ in reward on this tiny catalog: train on a reward that tells the
    # (distinct) items apart, the id of their last SID token
    trainer, _ = _make_trainer(tmp_path / "train", layout=layout, rollouts="beam", max_steps=2, algorithm="grpo",
                               reward_funcs=[_last_sid_reward])
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(p.detach(), before[n]) for n, p in trainer.model.named_parameters())


def _last_sid_reward(completion_ids=None, **kwargs):
    return [float(ids[-2]) for ids in completion_ids]


def test_beam_rollouts_need_the_constrained_transformers_path():
    from rl.config import SAPOConfig

    with pytest.raises(ValueError, match="rollouts='beam'.*constrained_rollouts=true"):
        SAPOConfig(output_dir="unused", rollouts="beam", constrained_rollouts=False, use_cpu=True, report_to=[])


def test_prefix_step_baseline_needs_a_per_step_reward():
    from rl.config import SAPOConfig

    with pytest.raises(ValueError, match="step_baseline='prefix' needs a step algorithm with a per-step reward"):
        SAPOConfig(output_dir="unused", algorithm="grpo", step_baseline="prefix", report_to=[])
    with pytest.raises(ValueError, match="step_baseline must be one of group, prefix"):
        SAPOConfig(output_dir="unused", step_baseline="siblings", report_to=[])


def test_to_go_step_credit_needs_a_step_algorithm():
    from rl.config import SAPOConfig

    with pytest.raises(ValueError, match="step_credit='to_go' needs a step algorithm"):
        SAPOConfig(output_dir="unused", algorithm="grpo", step_credit="to_go", report_to=[])
    with pytest.raises(ValueError, match="step_credit must be one of level, to_go"):
        SAPOConfig(output_dir="unused", step_credit="future", report_to=[])
    assert SAPOConfig(output_dir="unused", step_credit="to_go", report_to=[]).step_credit == "to_go"


def test_negative_positive_weight_is_refused():
    from rl.config import SAPOConfig

    with pytest.raises(ValueError, match="positive_weight must be >= 0"):
        SAPOConfig(output_dir="unused", positive_weight=-0.5, report_to=[])


def test_positive_weight_with_trl_advantages_is_refused(tmp_path):
    with pytest.raises(ValueError, match="leave positive_weight at 1"):
        _make_trainer(tmp_path, reward_funcs=[_length_reward], algorithm="grpo", positive_weight=0.5)


def test_greedy_block_decoding_needs_sampled_constrained_rollouts():
    from rl.config import SAPOConfig

    for bad in (dict(rollouts="beam"), dict(constrained_rollouts=False)):
        with pytest.raises(ValueError, match="block_decoding='greedy'.*constrained_rollouts=true"):
            SAPOConfig(output_dir="unused", block_decoding="greedy", use_cpu=True, report_to=[], **bad)
    with pytest.raises(ValueError, match="block_decoding must be one of sample, greedy"):
        SAPOConfig(output_dir="unused", block_decoding="beam", use_cpu=True, report_to=[])


def test_greedy_block_rollouts_share_their_blocks_up_to_the_sid_choices(tmp_path):
    """block_decoding='greedy': a group's rollouts all write the same first block (one prompt, greedy text) and
    differ only where a sampled SID token differs; a short run trains."""
    from genrec.response import parse_response

    trainer, ds = _make_trainer(tmp_path, layout="interleaved", block_decoding="greedy", temperature=3.0)
    trainer.model.train()
    inputs = [dict(ds[0]) for _ in range(G)]
    out = trainer._generate_and_score_completions(inputs)
    rows = [ids[m.bool()].tolist() for ids, m in zip(out["completion_ids"], out["completion_mask"])]
    parsed = [parse_response(r, trainer.spec) for r in rows]
    assert all(p.ok for p in parsed)
    assert len({tuple(r[: p.steps[0].block_end]) for r, p in zip(rows, parsed)}) == 1
    by_first_sid: dict[int, set] = {}
    for r, p in zip(rows, parsed):  # the same first SID token -> the same second block
        s1 = p.steps[1]
        by_first_sid.setdefault(r[p.steps[0].sid_pos], set()).add(tuple(r[s1.block_start: s1.block_end]))
    assert all(len(blocks) == 1 for blocks in by_first_sid.values())
    assert len({tuple(p.codes) for p in parsed}) > 1
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(p.detach(), before[n]) for n, p in trainer.model.named_parameters())


def test_beam_rollouts_of_a_group_split_across_processes_take_their_ranks(tmp_path, monkeypatch):
    """A group of G rollouts spanning two processes: each process's rows take the ranks of their global positions,
    so the two halves together are the G distinct items that one process gets for the whole group."""
    from types import SimpleNamespace

    trainer, ds = _make_trainer(tmp_path, layout="direct", rollouts="beam")
    prompt = trainer.processing_class(ds[0]["prompt"], add_special_tokens=False)["input_ids"]
    whole = trainer._beam_rollouts([prompt] * G, G)
    half = G // 2
    parts = []
    for rank in (0, 1):  # the global batch is this one group; process `rank` holds rows rank*half .. rank*half+half-1
        monkeypatch.setattr(trainer, "accelerator", SimpleNamespace(process_index=rank,
                                                                    unwrap_model=trainer.accelerator.unwrap_model))
        parts += trainer._beam_rollouts([prompt] * half, G)
    assert parts == whole and len({tuple(x) for x in whole}) == G
    with pytest.raises(RuntimeError, match="side by side"):
        trainer._beam_rollouts([prompt, prompt[:-1] or [0]] + [prompt] * (G - 2), G)
