"""SID prefix trie: agrees with a brute-force prefix check on random catalogs; errors; a 100k-item trie."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from genrec.trie import SIDTrie
from sid_tokenizer.sidmap import SIDMap


@st.composite
def catalogs(draw):
    """Random codebook sizes, a random set of distinct SIDs, and a random token id per (level, code)."""
    k = draw(st.integers(1, 4))
    sizes = draw(st.lists(st.integers(1, 5), min_size=k, max_size=k))
    space = int(np.prod(sizes))
    n = draw(st.integers(1, min(space, 40)))
    flat = draw(st.lists(st.integers(0, space - 1), min_size=n, max_size=n, unique=True))
    codes = [tuple(int(x) for x in np.unravel_index(f, sizes)) for f in flat]
    vocab = sum(sizes) + draw(st.integers(0, 20))
    ids = draw(st.permutations(list(range(vocab))))[: sum(sizes)]
    tables, at = [], 0
    for s in sizes:
        tables.append(list(ids[at : at + s]))
        at += s
    return codes, tables, vocab


def brute_children(codes, tables, prefix_codes):
    d = len(prefix_codes)
    return sorted({tables[d][c[d]] for c in codes if tuple(c[:d]) == tuple(prefix_codes)})


@settings(max_examples=80, deadline=None)
@given(cat=catalogs(), data=st.data())
def test_trie_agrees_with_brute_force(cat, data):
    codes, tables, vocab = cat
    k = len(tables)
    trie = SIDTrie.from_codes(codes, tables, [f"item{i}" for i in range(len(codes))])
    assert trie.num_items == len(codes)
    # every prefix of every catalog SID, plus random (mostly non-catalog) code prefixes
    prefixes = {tuple(c[:d]) for c in codes for d in range(k + 1)}
    for _ in range(10):
        d = data.draw(st.integers(0, k))
        prefixes.add(tuple(data.draw(st.integers(0, len(tables[j]) - 1)) for j in range(d)))
    prefixes = sorted(prefixes, key=lambda p: (len(p), p))
    nodes = []
    for p in prefixes:
        toks = [tables[j][c] for j, c in enumerate(p)]
        node = trie.node_for_tokens(toks)
        in_catalog = any(tuple(c[: len(p)]) == p for c in codes)
        assert (node >= 0) == in_catalog == trie.is_prefix(p)
        nodes.append(node)
        if node < 0:
            assert trie.allowed_tokens(node) == []
            continue
        assert trie.depth(node) == len(p)
        assert trie.allowed_tokens(node) == (brute_children(codes, tables, p) if len(p) < k else [])
        full = len(p) == k
        assert trie.is_complete(node) == full
        assert trie.item_for_node(node) == (f"item{codes.index(p)}" if full else None)
        assert trie.item_for_codes(p) == (f"item{codes.index(p)}" if full else None)
    # batched forms agree with the scalar ones
    node_t = torch.tensor(nodes)
    mask = trie.allowed_mask(node_t, vocab)
    assert mask.shape == (len(nodes), vocab)
    for row, node in enumerate(nodes):
        assert torch.nonzero(mask[row]).flatten().tolist() == trie.allowed_tokens(node)
    padded = torch.full((len(prefixes), k), -1, dtype=torch.long)
    for row, p in enumerate(prefixes):
        for j, c in enumerate(p):
            padded[row, j] = tables[j][c]
    assert trie.nodes_for_prefixes(padded).tolist() == nodes
    assert torch.equal(trie.allowed_mask_for_prefixes(padded, vocab), mask)
    # step(): from each node through every token of the vocabulary
    for node in nodes:
        stepped = trie.step(torch.full((vocab,), node), torch.arange(vocab))
        kids = set(trie.allowed_tokens(node))
        for tok in range(vocab):
            expect = -1 if tok not in kids else trie.node_for_tokens(trie_path(trie, node) + [tok])
            assert int(stepped[tok]) == expect


def trie_path(trie: SIDTrie, node: int) -> list[int]:
    """Token path from the root to `node` (by search, for the test only)."""
    if node == trie.root:
        return []
    stack = [(trie.root, [])]
    while stack:
        n, path = stack.pop()
        toks, kids = trie.children(n)
        for t, c in zip(toks, kids):
            if c == node:
                return path + [t]
            stack.append((c, path + [t]))
    raise AssertionError("node not reachable")


def test_prefix_rows_in_wrong_order_are_not_prefixes():
    trie = SIDTrie.from_codes([(0, 1), (1, 0)], [[10, 11], [20, 21]])
    rows = torch.tensor([[10, 21], [21, 10], [10, 10], [10, -1], [-1, -1], [99, -1], [20, -1]])
    assert trie.nodes_for_prefixes(rows).tolist()[:3] == [trie.node_for_tokens([10, 21]), -1, -1]
    out = trie.nodes_for_prefixes(rows).tolist()
    assert out[3] == trie.node_for_tokens([10]) and out[4] == trie.root and out[5] == -1 and out[6] == -1


def test_trie_errors():
    with pytest.raises(ValueError, match="share the same SID"):
        SIDTrie.from_codes([(0, 1), (0, 1)], [[1, 2], [3, 4]], ["x", "y"])
    with pytest.raises(ValueError, match="item y: code 2 at level 1 outside the 2 tokens"):
        SIDTrie.from_codes([(0, 1), (0, 2)], [[1, 2], [3, 4]], ["x", "y"])
    with pytest.raises(ValueError, match="share token ids"):
        SIDTrie.from_codes([(0, 1)], [[1, 2], [2, 4]])
    with pytest.raises(ValueError, match="2 levels but 1 level token tables"):
        SIDTrie.from_codes([(0, 1)], [[1, 2]])
    with pytest.raises(ValueError, match="too large for 64-bit prefix keys"):
        SIDTrie.from_codes([(0,) * 9], [list(range(j * 256, j * 256 + 256)) for j in range(9)])
    trie = SIDTrie.from_codes([(0, 1)], [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="resize the model's embeddings"):
        trie.allowed_mask(torch.tensor([0]), 3)


def test_from_sid_map_uses_tokenizer_ids():
    sm = SIDMap({"a": (0, 1), "b": (1, 1), "c": (1, 0)}, [2, 2])
    vocab = {"[UNK]": 0, "hello": 1}
    tok = PreTrainedTokenizerFast(tokenizer_object=_wordlevel(vocab), unk_token="[UNK]")
    with pytest.raises(ValueError, match="tokenizer lacks 4 SID tokens"):
        SIDTrie.from_sid_map(sm, tok)
    tok.add_tokens(list(reversed(sm.all_tokens())))  # ids not in code order
    trie = SIDTrie.from_sid_map(sm, tok)
    v = tok.get_vocab()
    assert trie.allowed_tokens(trie.root) == sorted([v["<a_0>"], v["<a_1>"]])
    assert trie.allowed_tokens(trie.node_for_tokens([v["<a_1>"]])) == sorted([v["<b_0>"], v["<b_1>"]])
    assert trie.item_for_tokens([v["<a_1>"], v["<b_0>"]]) == "c"
    assert trie.item_for_tokens([v["<a_0>"], v["<b_0>"]]) is None


def _wordlevel(vocab):
    t = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    return t


def test_100k_item_trie_masks_match_catalog():
    """3 x 256 codes + a dedup level, 100k items: builds quickly, masks agree with a direct check."""
    rng = np.random.default_rng(0)
    n = 100_000
    base = rng.integers(0, 256, size=(n, 3))
    order = np.lexsort(base.T[::-1])
    base = base[order]
    same = np.r_[False, (base[1:] == base[:-1]).all(1)]
    dedup = np.zeros(n, dtype=np.int64)
    for i in np.nonzero(same)[0]:
        dedup[i] = dedup[i - 1] + 1
    codes = np.c_[base, dedup]
    sizes = [256, 256, 256, int(dedup.max()) + 1]
    offsets = np.cumsum([100] + sizes[:-1])
    tables = [list(range(o, o + s)) for o, s in zip(offsets, sizes)]
    trie = SIDTrie.from_codes(codes, tables)
    vocab = int(offsets[-1] + sizes[-1] + 50)
    assert trie.num_items == n
    rows = rng.choice(n, size=64, replace=False)
    depth = rng.integers(0, 4, size=64)
    prefix = torch.full((64, 4), -1, dtype=torch.long)
    for r, (i, d) in enumerate(zip(rows, depth)):
        for j in range(d):
            prefix[r, j] = tables[j][codes[i, j]]
    nodes = trie.nodes_for_prefixes(prefix)
    assert bool((nodes >= 0).all())
    mask = trie.allowed_mask(nodes, vocab)
    for r, (i, d) in enumerate(zip(rows, depth)):
        match = (codes[:, :d] == codes[i, :d]).all(1)
        expect = sorted({tables[d][c] for c in codes[match, d]})
        assert torch.nonzero(mask[r]).flatten().tolist() == expect
