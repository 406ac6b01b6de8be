"""Response format: rendering, token spec, parser (hand cases, round trips, random streams vs a regex oracle)."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from genrec.grammar import block_levels
from genrec.response import (
    BLOCKS_FIRST,
    COARSE,
    DIRECT,
    INTERLEAVED,
    LAYOUTS,
    ResponseSpec,
    Step,
    parse_response,
    render_response,
    response_token_ids,
    step_index_per_token,
    step_index_tensor,
)
from sid_tokenizer.sidmap import SIDMap, sid_token

WORDS = [f"w{i}" for i in range(12)]


def toy_tokenizer(sid_map: SIDMap | None, *, pad: bool = True, eos: bool = True, add: bool = True) -> PreTrainedTokenizerFast:
    """Word-level tokenizer with the think and SID tokens added as single tokens."""
    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3}
    for w in WORDS:
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    kw = {"unk_token": "[UNK]", "bos_token": "[BOS]"}
    if pad:
        kw["pad_token"] = "[PAD]"
    if eos:
        kw["eos_token"] = "[EOS]"
    t = PreTrainedTokenizerFast(tokenizer_object=tok, **kw)
    if add and sid_map is not None:
        t.add_tokens(["<think>", "</think>"] + sid_map.all_tokens())
    return t


SIZES = [3, 4, 2]
SID_MAP = SIDMap({f"j{i}": (i % 3, i % 4, i % 2) for i in range(12)}, SIZES)
TOK = toy_tokenizer(SID_MAP)
SPECS = {layout: ResponseSpec.from_tokenizer(TOK, SID_MAP, layout) for layout in LAYOUTS}


def ids_of(text: str) -> list[int]:
    return TOK.encode(text, add_special_tokens=False)


# ---------------------------------------------------------------------------------------------- rendering


def test_render_layouts_exact_text():
    sids = ["<a_1>", "<b_2>", "<c_0>"]
    assert render_response(["x y", "", " z "], sids, INTERLEAVED) == "<think> x y</think><a_1><think></think><b_2><think> z</think><c_0>"
    assert render_response(["x", "y", "z"], sids, BLOCKS_FIRST) == "<think> x</think><think> y</think><think> z</think><a_1><b_2><c_0>"
    assert render_response(None, sids, DIRECT) == "<a_1><b_2><c_0>"


@pytest.mark.parametrize(
    "blocks,sids,layout,match",
    [
        (["a"], ["<a_1>", "<b_2>"], INTERLEAVED, "1 thinking blocks for 2 SID tokens"),
        (["a <think> b", "c"], ["<a_1>", "<b_2>"], INTERLEAVED, "contains the tag '<think>'"),
        (["a </think>", "c"], ["<a_1>", "<b_2>"], BLOCKS_FIRST, "contains the tag '</think>'"),
        (["a <b_3> b", "c"], ["<a_1>", "<b_2>"], INTERLEAVED, "contains the SID token '<b_3>'"),
        (["a", "c"], ["<b_1>", "<a_2>"], INTERLEAVED, "has level 'b', expected level 'a'"),
        (["a", "c"], ["<a_1>", "b_2"], INTERLEAVED, "is not a SID token"),
        (["a"], ["<a_1>"], DIRECT, "has no thinking blocks"),
        (["a"], ["<a_1>"], "sideways", "unknown response layout"),
        ([], [], INTERLEAVED, "no SID tokens"),
    ],
)
def test_render_rejects_bad_input(blocks, sids, layout, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        render_response(blocks, sids, layout)


# ---------------------------------------------------------------------------------------------- spec


def test_spec_from_tokenizer_ids():
    spec = SPECS[INTERLEAVED]
    vocab = TOK.get_vocab()
    assert spec.think_open_id == vocab["<think>"] and spec.think_close_id == vocab["</think>"]
    assert spec.eos_id == vocab["[EOS]"] and spec.pad_id == vocab["[PAD]"]
    assert spec.num_levels == 3 and spec.codebook_sizes == SIZES
    for k, n in enumerate(SIZES):
        for c in range(n):
            tid = vocab[sid_token(k, c)]
            assert (int(spec.token_level[tid]), int(spec.token_code[tid])) == (k, c)
            assert spec.level_token_ids[k][c] == tid and spec.sid_of(tid) == (k, c)
            assert not spec.text_allowed[tid]
    for w in WORDS:
        assert spec.text_allowed[vocab[w]] and spec.token_level[vocab[w]] == -1
    for special in ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "<think>", "</think>"):
        assert not spec.text_allowed[vocab[special]]
    assert spec.with_layout(DIRECT).layout == DIRECT and spec.with_layout(DIRECT).eos_id == spec.eos_id
    assert spec.max_response_tokens(5) == 3 * 5 + 3 * 3 + 1
    assert SPECS[DIRECT].max_response_tokens(5) == 4


def test_spec_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"tokenizer lacks 11 of the 11 response-format tokens \(<think>, </think>, <a_0>"):
        ResponseSpec.from_tokenizer(toy_tokenizer(SID_MAP, add=False), SID_MAP)
    partial = toy_tokenizer(SID_MAP, add=False)
    partial.add_tokens(["<think>", "</think>"] + SID_MAP.all_tokens()[:-1])
    with pytest.raises(ValueError, match=r"lacks 1 of the 11 .*\(<c_1>\)"):
        ResponseSpec.from_tokenizer(partial, SID_MAP)
    with pytest.raises(ValueError, match="no eos_token"):
        ResponseSpec.from_tokenizer(toy_tokenizer(SID_MAP, eos=False), SID_MAP)
    with pytest.raises(ValueError, match="unknown response layout"):
        ResponseSpec.from_tokenizer(TOK, SID_MAP, "zigzag")
    # no pad token: pad falls back to EOS
    assert ResponseSpec.from_tokenizer(toy_tokenizer(SID_MAP, pad=False), SID_MAP).pad_id == SPECS[INTERLEAVED].eos_id


def test_spec_rejects_tokens_that_are_not_single_tokens():
    # "<think>" is in the word-level vocab but not an added token: the pre-tokenizer splits the text "<think>"
    vocab = {"[UNK]": 0, "[EOS]": 1, "<think>": 2, "</think>": 3}
    t = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]", eos_token="[EOS]")
    wrapped.add_tokens(SID_MAP.all_tokens())
    with pytest.raises(ValueError, match=r"tokenizer splits '<think>' into ids \[0, 0, 0\] instead of the single id 2"):
        ResponseSpec.from_tokenizer(wrapped, SID_MAP)


# ---------------------------------------------------------------------------------------------- parsing


def test_parse_interleaved_spans_and_step_index():
    text = render_response(["w1 w2", "", "w3"], ["<a_2>", "<b_3>", "<c_1>"], INTERLEAVED)
    ids = ids_of(text) + [SPECS[INTERLEAVED].eos_id, 0, 0]
    p = parse_response(ids, SPECS[INTERLEAVED])
    assert p.ok and p.error == "" and p.codes == (2, 3, 1)
    # <think> w1 w2 </think> <a_2> | <think> </think> <b_3> | <think> w3 </think> <c_1> | EOS pad pad
    assert p.steps == (Step(0, 0, 4, 4), Step(1, 5, 7, 7), Step(2, 8, 11, 11))
    assert p.eos_pos == 12 and p.length == 13
    assert step_index_per_token(p, len(ids)) == [0] * 5 + [1] * 3 + [2] * 4 + [-1] * 3
    # a shorter window cuts the map
    assert step_index_per_token(p, 3) == [0, 0, 0]
    # SID tokens only (SAPO with step_tokens='sid'): block tokens are glue
    assert step_index_per_token(p, len(ids), blocks=False) == [-1] * 4 + [0] + [-1] * 2 + [1] + [-1] * 3 + [2] + [-1] * 3


def test_parse_blocks_first_and_direct_spans():
    text = render_response(["w1", "w2 w3", ""], ["<a_0>", "<b_1>", "<c_0>"], BLOCKS_FIRST)
    ids = ids_of(text) + [SPECS[BLOCKS_FIRST].eos_id]
    p = parse_response(torch.tensor(ids), SPECS[BLOCKS_FIRST])
    assert p.ok and p.codes == (0, 1, 0)
    assert p.steps == (Step(0, 0, 3, 9), Step(1, 3, 7, 10), Step(2, 7, 9, 11))
    assert step_index_per_token(p, len(ids)) == [0, 0, 0, 1, 1, 1, 1, 2, 2, 0, 1, 2, -1]
    d = parse_response(ids_of("<a_2><b_0><c_1>") + [SPECS[DIRECT].eos_id], SPECS[DIRECT])
    assert d.ok and d.codes == (2, 0, 1) and d.steps == (Step(0, 0, 0, 0), Step(1, 1, 1, 1), Step(2, 2, 2, 2))
    assert step_index_per_token(d, 5) == [0, 1, 2, -1, -1]


GOOD = "<think> w1</think><a_1><think> w2</think><b_2><think> w3</think><c_0>"


@pytest.mark.parametrize(
    "layout,text,eos,match",
    [
        (INTERLEAVED, GOOD, False, "missing EOS"),
        (INTERLEAVED, "w1 " + GOOD, True, "position 0: expected <think> to open thinking block 0"),
        (INTERLEAVED, "<think> w1<a_1><think> w2</think><b_2>", True, "SID token '<a_1>' (id"),
        (INTERLEAVED, "<think> w1 <think> w2</think><a_1>", True, "nested <think> inside thinking block 0"),
        (INTERLEAVED, "<think> w1</think><b_1><think> w2</think><a_2><think></think><c_0>", True, "has level 1, expected level 0"),
        (INTERLEAVED, "<think> w1</think><a_1> w5 <think> w2</think><b_2><think> w3</think><c_0>", True, "text 'w5' (id"),
        (INTERLEAVED, "<think> w1</think><a_1><b_2><think> w3</think><c_0>", True, "second SID token '<b_2>'"),
        (INTERLEAVED, "<think> w1</think><a_1><think> w2</think><b_2>", True, "EOS after only 2 of 3 steps"),
        (INTERLEAVED, GOOD + "<think></think>", True, "extra thinking block after all 3 steps"),
        (INTERLEAVED, GOOD + " w4", True, "text 'w4' (id"),
        (INTERLEAVED, "<think> w1</think>", True, "EOS after only 0 of 3 SID tokens"),
        (INTERLEAVED, "<think> w1 w2", False, "never closed"),
        (INTERLEAVED, "<think> w1", True, "EOS inside thinking block 0"),
        (INTERLEAVED, "", False, "before thinking block 0"),
        (INTERLEAVED, "<think></think>", False, "before SID token 0"),
        (BLOCKS_FIRST, "<think> w1</think><think> w2</think><a_1><b_1><c_1>", True, "SID token '<a_1>' (id"),
        (BLOCKS_FIRST, "<think></think><think></think><think></think><think></think><a_1><b_1><c_1>", True, "extra thinking block"),
        (BLOCKS_FIRST, "<think></think><think></think><think></think><a_1><b_1>", True, "EOS after only 2 of 3 SID tokens"),
        (BLOCKS_FIRST, "<think></think><think></think><think></think><a_1><b_1><c_1><a_0>", True, "extra SID token '<a_0>'"),
        (DIRECT, "<a_1><b_1>", True, "EOS after only 2 of 3 SID tokens"),
        (DIRECT, "<think></think><a_1><b_1><c_1>", True, "<think> where SID token 0 was expected"),
        (DIRECT, "<a_1><c_1><b_1>", True, "has level 2, expected level 1"),
    ],
)
def test_parse_malformed_reasons(layout, text, eos, match):
    spec = SPECS[layout]
    ids = ids_of(text) + ([spec.eos_id] if eos else [])
    p = parse_response(ids, spec)
    assert not p.ok and p.codes == () and p.eos_pos is None
    assert match in p.error, p.error


def test_tokens_after_eos_and_pads_inside():
    spec = SPECS[INTERLEAVED]
    ids = ids_of(GOOD)
    assert parse_response(ids + [spec.eos_id, spec.pad_id, spec.eos_id], spec).ok
    bad = parse_response(ids + [spec.eos_id, spec.pad_id, ids_of("w1")[0]], spec)
    assert not bad.ok and "after EOS" in bad.error
    pad_inside = parse_response(ids[:2] + [spec.pad_id] + ids[2:] + [spec.eos_id], spec)
    assert not pad_inside.ok and "pad token inside thinking block 0" in pad_inside.error
    # a failed parse keeps the steps parsed before the error (for diagnostics), never codes
    partial = parse_response(ids[:8] + [spec.eos_id], spec)
    assert not partial.ok and len(partial.steps) == 2 and partial.partial_codes == (1, 2) and partial.codes == ()


def test_step_index_tensor_of_a_padded_batch():
    spec = SPECS[INTERLEAVED]
    rows = [ids_of(GOOD) + [spec.eos_id, spec.pad_id], ids_of(GOOD)[:-1] + [spec.eos_id, spec.pad_id, spec.pad_id]]
    batch = torch.tensor(rows)
    parsed = [parse_response(r, spec) for r in batch]
    assert [p.ok for p in parsed] == [True, False]
    assert parsed[0] == parse_response(rows[0], spec)
    idx = step_index_tensor(parsed, batch.shape[1])
    assert idx.shape == batch.shape and idx.dtype == torch.long
    assert idx[0].tolist() == step_index_per_token(parsed[0], batch.shape[1])
    with pytest.raises(ValueError, match="expects a 1-D sequence"):
        parse_response(torch.zeros(2, 3, dtype=torch.long), spec)


# ---------------------------------------------------------------------------------------------- properties

block_text = st.lists(st.sampled_from(WORDS), max_size=5).map(" ".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=st.sampled_from(LAYOUTS),
    item=st.sampled_from(sorted(SID_MAP.item_to_codes)),
    blocks=st.lists(block_text, min_size=3, max_size=3),
    pads=st.integers(0, 3),
)
def test_render_tokenize_parse_round_trip(layout, item, blocks, pads):
    spec = SPECS[layout]
    with_block = block_levels(layout, len(blocks))
    blocks = [b if k in with_block else "" for k, b in enumerate(blocks)]
    text = render_response(None if layout == DIRECT else blocks, SID_MAP.tokens(item), layout)
    ids = ids_of(text) + [spec.eos_id] + [spec.pad_id] * pads
    p = parse_response(ids, spec)
    assert p.ok, p.error
    assert SID_MAP.item_for_codes(p.codes) == item
    assert p.eos_pos == len(ids) - 1 - pads
    for step, b in zip(p.steps, blocks):
        if step.level in with_block:
            assert step.block_end - step.block_start == len(b.split()) + 2
            assert TOK.decode(ids[step.block_start + 1 : step.block_end - 1]).split() == b.split()
        else:  # a step without a block is its SID token alone
            assert step.block_start == step.block_end == step.sid_pos
    idx = step_index_per_token(p, len(ids))
    assert idx.count(-1) == 1 + pads  # only EOS and pads are glue
    if layout != BLOCKS_FIRST:
        assert [i for i in idx if i >= 0] == sorted(i for i in idx if i >= 0)  # steps are contiguous


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=st.sampled_from(LAYOUTS),
    item=st.sampled_from(sorted(SID_MAP.item_to_codes)),
    blocks=st.lists(block_text, min_size=3, max_size=3),
)
def test_response_token_ids_equal_the_tokenized_rendered_text(layout, item, blocks):
    """The token-id writer (RL beam rollouts) lays a response out exactly as the SFT text renders and tokenizes."""
    spec = SPECS[layout]
    with_block = block_levels(layout, len(blocks))
    blocks = [b if k in with_block else "" for k, b in enumerate(blocks)]
    text = render_response(None if layout == DIRECT else blocks, SID_MAP.tokens(item), layout)
    block_ids = [ids_of(b) for k, b in enumerate(blocks) if k in with_block]  # level order, in every layout
    ids = response_token_ids(spec, SID_MAP.codes(item), block_ids)
    assert ids == ids_of(text) + [spec.eos_id]
    assert parse_response(ids, spec).codes == tuple(SID_MAP.codes(item))


def _symbol(t: int, spec: ResponseSpec) -> str:
    if t == spec.eos_id:
        return "$"
    if t == spec.pad_id:
        return "_"
    if t == spec.think_open_id:
        return "("
    if t == spec.think_close_id:
        return ")"
    s = spec.sid_of(t)
    if s is not None:
        return "abc"[s[0]]
    return "t"


ORACLE = {
    INTERLEAVED: re.compile(r"\(t*\)a\(t*\)b\(t*\)c\$[_$]*"),
    COARSE: re.compile(r"\(t*\)abc\$[_$]*"),  # 3 levels: a block before the first SID token only
    BLOCKS_FIRST: re.compile(r"\(t*\)\(t*\)\(t*\)abc\$[_$]*"),
    DIRECT: re.compile(r"abc\$[_$]*"),
}


@settings(max_examples=400, deadline=None)
@given(
    layout=st.sampled_from(LAYOUTS),
    data=st.data(),
)
def test_random_streams_never_crash_and_agree_with_regex_oracle(layout, data):
    spec = SPECS[layout]
    vocab = len(TOK)
    structural = [spec.think_open_id, spec.think_close_id, spec.eos_id, spec.pad_id]
    # mostly near-valid streams: a valid response with random edits, plus fully random ones
    item = data.draw(st.sampled_from(sorted(SID_MAP.item_to_codes)))
    blocks = [b if k in block_levels(layout, 3) else "" for k, b in enumerate(["w1", "w2 w3", ""])]
    base = ids_of(render_response(None if layout == DIRECT else blocks, SID_MAP.tokens(item), layout))
    base = base + [spec.eos_id]
    token = st.one_of(st.integers(0, vocab - 1), st.sampled_from(structural), st.integers(-5, vocab + 5))
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(base)), st.sampled_from(["ins", "del", "sub"]), token), max_size=3))
    ids = list(base)
    for pos, op, tok in edits:
        pos = min(pos, len(ids))
        if op == "ins":
            ids.insert(pos, tok)
        elif ids and pos < len(ids):
            if op == "del":
                del ids[pos]
            else:
                ids[pos] = tok
    if data.draw(st.booleans()):
        ids = data.draw(st.lists(token, max_size=30))
    p = parse_response(ids, spec)  # never raises
    expected_ok = ORACLE[layout].fullmatch("".join(_symbol(t, spec) for t in ids)) is not None
    assert p.ok == expected_ok, (p.error, ids)
    if p.ok:
        sids = [t for t in ids if spec.sid_of(t) is not None]
        assert p.codes == tuple(spec.sid_of(t)[1] for t in sids)
        assert [ids[s.sid_pos] for s in p.steps] == sids
        assert ids[p.eos_pos] == spec.eos_id
    else:
        assert p.error
