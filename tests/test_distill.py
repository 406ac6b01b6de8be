"""Stage 2 distilled from its stage-1 start (genrec/distill.py): the teacher's view of a row, the mixed loss, and a
real stage-2 run that stays closer to its teacher at the SID tokens."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from genrec.distill import SIDDistiller
from genrec.modeling import load_model_and_tokenizer
from genrec.prompts import PromptConfig, build_prompt
from genrec.response import INTERLEAVED, render_response
from genrec.sft import SFTStageConfig, sid_weighted_loss
from tests.helpers_tiny import tiny_model_dir, tiny_recdata, tiny_sid_map, tiny_trace_rows, train_tiny_stage2

torch.set_num_threads(1)
REC, SIDS = tiny_recdata(), tiny_sid_map()
REASON = PromptConfig(history_format="both", include_profile=True)


def _row(tok, prompt: str, completion: str) -> tuple[list[int], list[bool]]:
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return p + c, [False] * len(p) + [True] * len(c)


def _trace_row(tok, ex) -> tuple[list[int], list[bool]]:
    """A reasoning row of `ex`: its prompt, then two blocks interleaved with its SID tokens."""
    return _row(tok, build_prompt(ex, REC.catalog, SIDS, tok, REASON),
                render_response(["In the family of job 2.", "Job 3 is the closest."], SIDS.tokens(ex.target),
                                INTERLEAVED))


def _batch(tok, rows: list[tuple[list[int], list[bool]]]):
    """(input_ids, attention_mask, labels) of unpadded (ids, completion mask) rows, right-padded as TRL pads them."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tok.pad_token_id)
    mask, labels = torch.zeros_like(input_ids), torch.full_like(input_ids, -100)
    for b, (ids, comp) in enumerate(rows):
        input_ids[b, :len(ids)], mask[b, :len(ids)] = torch.tensor(ids), 1
        labels[b, :len(ids)] = torch.where(torch.tensor(comp), torch.tensor(ids), -100)
    return input_ids, mask, labels


def test_teacher_reads_the_row_as_stage_1_did():
    """A reasoning row (profile, reasoning instruction, blocks between the SID tokens) becomes, for the teacher, the
    stage-1 prompt of the same example followed by its SID tokens; each SID token keeps its place in the mapping."""
    model, tok = load_model_and_tokenizer(tiny_model_dir())
    d = SIDDistiller(model, tok, tok.convert_tokens_to_ids(SIDS.all_tokens()))
    ex = REC.test[0]
    sid_tokens = SIDS.tokens(ex.target)
    ids, comp = _trace_row(tok, ex)
    row, index = d.teacher_row(ids, comp)
    direct = build_prompt(ex, REC.catalog, SIDS, tok, replace(REASON, reasoning=False))
    expected = tok(direct + "".join(sid_tokens), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert row == expected
    for t, tok_id in enumerate(ids):
        if index[t] >= 0:
            assert row[index[t]] == tok_id
    sid_pos = [t for t, x in enumerate(ids) if comp[t] and tok.convert_ids_to_tokens(x) in sid_tokens]
    assert [row[index[t]] for t in sid_pos] == tok.convert_tokens_to_ids(sid_tokens)
    assert d.rows_without_instruction == 0
    # A row without the reasoning instruction and without blocks (a replayed stage-1 row) is read unchanged.
    plain, plain_comp = _row(tok, direct, "".join(sid_tokens))
    assert d.teacher_row(plain, plain_comp)[0] == plain and d.rows_without_instruction == 1


def test_distilled_loss_on_hand_built_logits():
    """At a SID target the loss is (1 - w) CE(gold) + w CE(teacher probs); elsewhere unchanged."""
    class Out:
        logits = torch.log_softmax(torch.tensor([[[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0],
                                                  [0.0, 0.0, 0.0, 0.0]]]), dim=-1)

    labels = torch.tensor([[-100, 1, 3, 0]])  # position 1 predicts the SID token 3
    logp = Out.logits[0, :3]
    ce = -logp[torch.arange(3), torch.tensor([1, 3, 0])]
    rows, cols = torch.tensor([0]), torch.tensor([1])
    onehot = torch.nn.functional.one_hot(torch.tensor([3]), 4).float()
    assert sid_weighted_loss([3], 1.0, 0.7)(Out, labels, None, (rows, cols, onehot)).item() == pytest.approx(
        ce.mean().item())
    uniform = torch.full((1, 4), 0.25)
    soft = -logp[1].mean()
    got = sid_weighted_loss([3], 2.0, 0.5)(Out, labels, None, (rows, cols, uniform)).item()
    assert got == pytest.approx(((ce[0] + 2 * (0.5 * ce[1] + 0.5 * soft) + ce[2]) / 4).item())
    with pytest.raises(ValueError, match="distill_weight"):
        SFTStageConfig(stage=2, distill_weight=1.5)
    with pytest.raises(ValueError, match="applies to stage 2"):
        SFTStageConfig(stage=1, distill_weight=0.5)


def test_distillation_keeps_stage_2_near_its_teacher_at_the_sid_tokens(tmp_path):
    """Stage 2 from the same model, traces and seed: with --distill_weight 1 the trained model's distributions at
    the SID tokens of the reasoning rows stay closer to the starting model's (reading those rows as stage 1 did)
    than with plain stage 2, which learns the gold SIDs instead."""
    start, tok = load_model_and_tokenizer(tiny_model_dir())
    pc, ds = tiny_trace_rows(tmp_path / "tr", tok)
    sid_ids = tok.convert_tokens_to_ids(SIDS.all_tokens())
    input_ids, mask, labels = _batch(tok, [_row(tok, r["prompt"], r["completion"]) for r in ds.select(range(16))])
    b, t, ref = SIDDistiller(start, tok, sid_ids).targets(input_ids, mask, labels)
    assert len(b) == 16 * SIDS.num_levels

    kl = {}
    for w in (0.0, 1.0):
        final = train_tiny_stage2(tmp_path / f"w{w}", ds, pc, SFTStageConfig(stage=2, distill_weight=w), 20)
        with torch.no_grad():
            logp = torch.log_softmax(load_model_and_tokenizer(final)[0](input_ids, attention_mask=mask).logits[b, t], -1)
        kl[w] = float((ref * (ref.clamp(min=1e-12).log() - logp)).sum(-1).mean())
    assert kl[1.0] < 0.5 * kl[0.0], kl


def test_completion_only_logits_give_the_same_loss_gradients_and_teacher_targets():
    """Running the LM head only from the batch's first completion position on (`logits_to_keep`) must change nothing
    the loss reads: same distillation targets, same loss, same gradients as the full-width head."""
    from genrec.modeling import accepts_logits_to_keep, first_loss_position

    assert first_loss_position(torch.tensor([[-100, -100, 5, 6], [-100, -100, -100, 7]])) == 1
    assert first_loss_position(torch.tensor([[-100, -100], [-100, -100]])) == 0
    model, tok = load_model_and_tokenizer(tiny_model_dir())
    assert accepts_logits_to_keep(model)
    sid_ids = tok.convert_tokens_to_ids(SIDS.all_tokens())
    input_ids, mask, labels = _batch(tok, [_trace_row(tok, ex) for ex in REC.test[:3]])  # different prompt lengths
    width = input_ids.shape[1]
    offset = first_loss_position(labels)
    assert offset > 0
    teacher, _ = load_model_and_tokenizer(tiny_model_dir())
    full_d, kept_d = SIDDistiller(teacher, tok, sid_ids), SIDDistiller(teacher, tok, sid_ids)
    full_d.keep_logits = False
    assert kept_d.keep_logits
    full_t, kept_t = full_d.targets(input_ids, mask, labels), kept_d.targets(input_ids, mask, labels)
    for a, b in zip(full_t, kept_t):
        assert torch.allclose(a, b, atol=1e-6)
    loss_func = sid_weighted_loss(sid_ids, 16.0, 0.5)
    grads = []
    for keep in (0, offset):
        model.zero_grad()
        extra = {"logits_to_keep": width - keep} if keep else {}
        out = model(input_ids=input_ids, attention_mask=mask, use_cache=False, **extra)
        assert out.logits.shape[1] == width - keep
        loss = loss_func(out, labels, None, full_t, keep)
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    for g_full, g_kept in zip(grads[0][1], grads[1][1]):
        assert torch.allclose(g_full, g_kept, atol=1e-6)


def test_teacher_targets_are_computed_once_per_row_and_served_from_the_cache():
    """The frozen teacher reads a row once: the same rows in another batch order, or a replayed stage-1 row that is
    the teacher's view of a trace row, get the first pass's probabilities without a teacher forward pass. The kept
    probabilities are the teacher's full next-token distribution (float16: within 1e-3 of a direct pass), and with
    no room in the cache every batch runs the teacher again."""
    teacher, tok = load_model_and_tokenizer(tiny_model_dir())
    sid_ids = tok.convert_tokens_to_ids(SIDS.all_tokens())
    passes = []
    teacher.register_forward_hook(lambda *_: passes.append(1))
    trace_rows, replay_rows = [], []
    for ex in REC.test[:3]:
        trace_rows.append(_trace_row(tok, ex))
        replay_rows.append(_row(tok, build_prompt(ex, REC.catalog, SIDS, tok, replace(REASON, reasoning=False)),
                                "".join(SIDS.tokens(ex.target))))
    d = SIDDistiller(teacher, tok, sid_ids)
    rows, cols, probs = d.targets(*_batch(tok, trace_rows))
    assert len(passes) == 1 and d.teacher_rows_run == 3 and len(rows) == 3 * SIDS.num_levels
    # against a direct teacher pass over the teacher's view of each row
    for b, (ids, comp) in enumerate(trace_rows):
        view, index = d.teacher_row(ids, comp)
        with torch.no_grad():
            exact = torch.softmax(teacher(torch.tensor([view])).logits[0], -1)
        mine = rows == b
        want = exact[[index[t + 1] - 1 for t in cols[mine].tolist()]]
        assert torch.allclose(probs[mine], want, atol=1e-3) and probs[mine].sum(-1).sub(1).abs().max() < 1e-2
    # the same rows in reverse order, then the replayed stage-1 rows: no teacher pass, the same targets
    passes.clear()
    rev_rows, rev_cols, rev_probs = d.targets(*_batch(tok, trace_rows[::-1]))
    assert not passes and d.targets_from_cache == 3 * SIDS.num_levels
    for b in range(3):
        assert torch.equal(rev_probs[rev_rows == 2 - b], probs[rows == b])
    rep_rows, _, rep_probs = d.targets(*_batch(tok, replay_rows))
    assert not passes and d.teacher_rows_run == 3
    for b in range(3):
        assert torch.equal(rep_probs[rep_rows == b], probs[rows == b])
    # no room: every batch reads the teacher again, with the same result
    none = SIDDistiller(teacher, tok, sid_ids, cache_bytes=0)
    for _ in range(2):
        got = none.targets(*_batch(tok, trace_rows))
        assert torch.equal(got[2], probs)
    assert none.teacher_rows_run == 6 and none.targets_from_cache == 0 and not none.cache
    with pytest.raises(ValueError, match="distill_cache_mb"):
        SFTStageConfig(stage=2, distill_weight=0.5, distill_cache_mb=-1)
