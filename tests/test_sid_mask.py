"""rl/sid_mask.py on top of genrec.trie.SIDTrie: same positions, allowed sets and masked log-probs as a plain
dict-of-prefixes walk (the previous implementation, kept here as the reference), on random completions that mix
valid SIDs, off-trie tokens, wrong levels, several SIDs per row and padding."""

from __future__ import annotations

import random

import pytest
import torch

from genrec.response import ResponseSpec
from rl.sid_mask import SIDTable, masked_token_logps
from sid_tokenizer.sidmap import SIDMap

PAD, EOS, OPEN, CLOSE = 0, 1, 2, 3
SIZES = [3, 4, 2]
VOCAB = 40
TABLES = [[20, 21, 22], [23, 24, 25, 26], [27, 28]]


def _reference(sid_map: SIDMap, ids: torch.Tensor, mask: torch.Tensor):
    """Dict prefix -> allowed ids and a Python walk (the pre-SIDTrie implementation)."""
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
            if not mask[r, c] or t not in level_of:
                continue
            node = sorted(children.get(tuple(prefix), ()))
            if level_of[t][0] != len(prefix) or t not in node:
                break
            rows.append(r)
            cols.append(c)
            allowed.append(node)
            prefix.append(level_of[t][1])
            if len(prefix) == len(TABLES):
                prefix = []
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
    catalog = list(items)
    rows = []
    for _ in range(12):
        seq: list[int] = []
        for _ in range(rng.choice([1, 1, 2])):  # one or two SIDs per row
            codes = rng.choice(catalog)
            for k in range(len(SIZES)):
                seq += [OPEN] + [rng.randrange(4, 20) for _ in range(rng.randrange(3))] + [CLOSE]
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
    return sid_map, spec, ids, mask


@pytest.mark.parametrize("seed", range(25))
def test_positions_and_logps_match_reference_walk(seed):
    sid_map, spec, ids, mask = _case(seed)
    table = SIDTable.build(sid_map, spec)
    rows, cols, allowed = _reference(sid_map, ids, mask)
    assert table.sid_positions(ids, mask) == (rows, cols, allowed)
    r, c, nodes = table.sid_nodes(ids, mask)
    assert (r.tolist(), c.tolist()) == (rows, cols)
    assert table.trie.allowed_token_lists(nodes) == allowed
    if not rows:
        return
    logits = torch.randn(len(rows), VOCAB, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    tokens = ids[rows, cols]
    ref = torch.stack([torch.log_softmax(logits[i, a], 0)[a.index(int(tokens[i]))] for i, a in enumerate(allowed)])
    (g_ref,) = torch.autograd.grad(ref.sum(), logits)
    for out in (masked_token_logps(logits, tokens, allowed), table.masked_logps(logits, tokens, nodes)):
        (g,) = torch.autograd.grad(out.sum(), logits)
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(g, g_ref, atol=1e-6, rtol=1e-6)
        assert bool((g[:, 4:20] == 0).all())  # text tokens are never allowed at a SID position: no gradient


def test_children_read_off_the_trie_and_empty_batch():
    sid_map, spec, _, _ = _case(0)
    table = SIDTable.build(sid_map, spec)
    ref: dict[tuple[int, ...], set[int]] = {}
    for codes in sid_map.item_to_codes.values():
        for level in range(len(codes)):
            ref.setdefault(tuple(codes[:level]), set()).add(TABLES[level][codes[level]])
    assert table.children == {k: sorted(v) for k, v in ref.items()}
    ids = torch.tensor([[OPEN, 5, CLOSE, EOS]])
    assert table.sid_positions(ids, torch.ones_like(ids)) == ([], [], [])
    assert masked_token_logps(torch.zeros(0, VOCAB), torch.zeros(0, dtype=torch.long), []).shape == (0,)


def test_build_rejects_mismatched_spec():
    sid_map, _, _, _ = _case(0)
    spec = ResponseSpec.from_ids(think_open_id=OPEN, think_close_id=CLOSE, eos_id=EOS, pad_id=PAD,
                                 level_token_ids=[[20, 21, 22], [23, 24, 25, 26]], vocab_size=VOCAB)
    with pytest.raises(ValueError, match="codebook sizes"):
        SIDTable.build(sid_map, spec)
