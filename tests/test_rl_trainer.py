"""SAPOTrainer on a tiny model and catalog: constrained rollouts, masked SID log-probs, step advantages on tokens,
the loss gradient against a hand-written SAPO loss, and a short end-to-end run (TensorBoard scalars, weights move)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from helpers_tiny import copy_tiny_model, tiny_recdata, tiny_sid_map

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


def test_end_to_end_run_logs_and_updates_weights(tmp_path):
    """Three optimizer steps with num_iterations=2 (old log-probs), KL to a reference (beta > 0), the off-policy
    mask and the completions table on 2-D advantages; TensorBoard gets our scalars and the weights move."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer, _ = _make_trainer(
        tmp_path, report_to=["tensorboard"], num_iterations=2, beta=0.01,
        off_policy_mask_threshold=0.5, max_steps=3, log_completions=True,
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
