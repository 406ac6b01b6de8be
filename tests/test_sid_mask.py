"""SID positions of the one grammar (ResponseGrammar.positions) and rl/sid_mask.py's masked log-probs: the same
positions, allowed sets and masked log-probs as a plain dict-of-prefixes walk (the pre-SIDTrie implementation, kept
here as the reference), on random interleaved completions with off-trie tokens, wrong levels, ids beyond the
vocabulary and padding; the first token off the grammar ends a row's walk."""

from __future__ import annotations

import math
import random

import pytest
import torch

from genrec.grammar import ResponseGrammar
from genrec.response import ResponseSpec
from genrec.trie import SIDTrie
from rl.sid_mask import masked_logps
from sid_tokenizer.sidmap import SIDMap

PAD, EOS, OPEN, CLOSE = 0, 1, 2, 3
SIZES = [3, 4, 2]
VOCAB = 40
TABLES = [[20, 21, 22], [23, 24, 25, 26], [27, 28]]
BUDGET = 3


def _reference(sid_map: SIDMap, ids: torch.Tensor, mask: torch.Tensor):
    """Dict prefix -> allowed ids and a Python walk over the SID tokens (rows are well formed around them)."""
    children: dict[tuple[int, ...], set[int]] = {}
    for codes in sid_map.item_to_codes.values():
        for level in range(len(codes)):
            children.setdefault(tuple(codes[:level]), set()).add(TABLES[level][codes[level]])
    level_of = {t: (k, c) for k, tab in enumerate(TABLES) for c, t in enumerate(tab)}
    rows, cols, allowed = [], [], []
    for r in range(ids.shape[0]):
        prefix: list[int] = []
        for c in range(ids.shape[1]):
            t = int(ids[r, c])
            if not mask[r, c]:
                break
            if t in (OPEN, CLOSE, EOS) or 4 <= t < 20:
                continue
            node = sorted(children.get(tuple(prefix), ()))
            if t not in level_of or level_of[t][0] != len(prefix) or t not in node:
                break
            rows.append(r)
            cols.append(c)
            allowed.append(node)
            prefix.append(level_of[t][1])
    return rows, cols, allowed


def _case(seed: int):
    rng = random.Random(seed)
    items = {}
    while len(items) < 9:
        codes = tuple(rng.randrange(s) for s in SIZES)
        items.setdefault(codes, f"i{len(items)}")
    sid_map = SIDMap({v: k for k, v in items.items()}, SIZES)
    spec = ResponseSpec.from_ids(think_open_id=OPEN, think_close_id=CLOSE, eos_id=EOS, pad_id=PAD,
                                 level_token_ids=TABLES, vocab_size=VOCAB)
    grammar = ResponseGrammar(spec, SIDTrie.from_spec(sid_map, spec), BUDGET)
    catalog = list(items)
    rows = []
    for _ in range(12):
        seq: list[int] = []
        codes = rng.choice(catalog)
        for k in range(len(SIZES)):
            seq += [OPEN] + [rng.randrange(4, 20) for _ in range(rng.randrange(BUDGET + 1))] + [CLOSE]
            tok = TABLES[k][codes[k]]
            roll = rng.random()
            if roll < 0.08:
                tok = rng.choice([t for tab in TABLES for t in tab])  # any SID token: maybe off-trie / wrong level
            elif roll < 0.1:
                tok = rng.randrange(VOCAB, VOCAB + 5)  # beyond the vocabulary
            seq.append(tok)
        rows.append(seq + [EOS])
    width = max(map(len, rows)) + 2
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, seq in enumerate(rows):
        ids[r, : len(seq)] = torch.tensor(seq)
        mask[r, : len(seq)] = 1
    mask[0, 2:] = 0  # a masked-out tail is ignored
    return sid_map, grammar, ids, mask


@pytest.mark.parametrize("seed", range(25))
def test_positions_and_logps_match_reference_walk(seed):
    sid_map, grammar, ids, mask = _case(seed)
    rows, cols, allowed = _reference(sid_map, ids, mask)
    r, c, nodes = grammar.positions(ids, mask).sid()
    assert (r.tolist(), c.tolist()) == (rows, cols)
    assert [grammar.trie.children(n)[0] for n in nodes.tolist()] == allowed
    if not rows:
        return
    logits = torch.randn(len(rows), VOCAB, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    tokens = ids[rows, cols]
    ref = torch.stack([torch.log_softmax(logits[i, a], 0)[a.index(int(tokens[i]))] for i, a in enumerate(allowed)])
    (g_ref,) = torch.autograd.grad(ref.sum(), logits)
    out = masked_logps(grammar.trie, logits, tokens, nodes)
    (g,) = torch.autograd.grad(out.sum(), logits)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(g, g_ref, atol=1e-6, rtol=1e-6)
    assert bool((g[:, 4:20] == 0).all())  # text tokens are never allowed at a SID position: no gradient


def test_no_sid_positions_and_empty_batch():
    _, grammar, _, _ = _case(0)
    ids = torch.tensor([[OPEN, 5, CLOSE, EOS]])  # a SID token was expected where EOS stands: off the grammar
    r, _, _ = grammar.positions(ids, torch.ones_like(ids)).sid()
    assert r.numel() == 0
    empty = torch.zeros(0, dtype=torch.long)
    assert masked_logps(grammar.trie, torch.zeros(0, VOCAB), empty, empty).shape == (0,)


def test_trie_rejects_mismatched_spec():
    sid_map, _, _, _ = _case(0)
    spec = ResponseSpec.from_ids(think_open_id=OPEN, think_close_id=CLOSE, eos_id=EOS, pad_id=PAD,
                                 level_token_ids=[[20, 21, 22], [23, 24, 25, 26]], vocab_size=VOCAB)
    with pytest.raises(ValueError, match="codebook sizes"):
        SIDTrie.from_spec(sid_map, spec)


def test_vllm_importance_correction_ignores_the_text_mask():
    """TRL's sequence-level vLLM correction exp(sum (old - sampling)) on a rollout sampled through the grammar:
    vLLM's processed log-probs include the text mask inside blocks, the trainer's text log-probs do not, so without
    `exclude_text_from_correction` the factor shrinks with block length though sampler and trainer agree; with it the
    factor is 1 (SID and forced positions are masked the same on both sides)."""
    from genrec.grammar import GrammarState
    from rl.sid_mask import exclude_text_from_correction

    sid_map, grammar, _, _ = _case(0)
    grammar = ResponseGrammar(grammar.spec, grammar.trie, 40)  # long blocks
    gen = torch.Generator().manual_seed(0)
    state = GrammarState(grammar)
    seq, sampling, old = [], [], []
    while not state.finished:
        logits = torch.randn(VOCAB, generator=gen)
        logits[20:29] += 1.0  # some mass on SID tokens, which are forbidden inside blocks
        allowed = state.allowed_mask(VOCAB)
        processed = torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), -1)  # what vLLM reports
        choices = torch.nonzero(allowed).flatten()
        if len(choices) > 1 and grammar.spec.think_close_id in choices.tolist() and len(seq) % 41 < 30:
            choices = choices[choices != grammar.spec.think_close_id]  # write long blocks
        tok = int(choices[torch.randint(len(choices), (1,), generator=gen)])
        seq.append(tok)
        sampling.append(processed[tok].item())
        old.append(torch.log_softmax(logits, -1)[tok].item())  # the trainer's unmasked log-prob ...
        state.advance(tok)
    pos = grammar.positions(torch.tensor([seq]))
    rows, cols, nodes = pos.sid()
    old_t = torch.tensor(old)
    old_t[pos.forced[0]] = 0.0  # ... masked like the trainer does at forced and SID positions
    for c in cols.tolist():
        old_t[c] = sampling[c]
    assert pos.text[0].sum() > 60

    def trl_factor(sampling_logps):
        s = torch.tensor([float("nan") if x is None else x for x in sampling_logps])
        return torch.exp(torch.nan_to_num(old_t - s, nan=0.0).sum()).item()

    assert trl_factor(sampling) < 0.5  # the bias the fix removes
    fixed = exclude_text_from_correction(grammar, [seq], [sampling])[0]
    assert trl_factor(fixed) == pytest.approx(1.0, abs=1e-5)
    assert all(math.isnan(fixed[j]) == bool(pos.text[0, j]) for j in range(len(seq)))
