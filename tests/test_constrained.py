"""Constrained decoding: masks vs a reference state machine, and real generation on a tiny random Llama."""

from __future__ import annotations

import functools
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList, PreTrainedTokenizerFast

from genrec.constrained import ConstrainedDecodingError, SIDLogitsProcessor
from genrec.grammar import block_levels
from genrec.response import BLOCKS_FIRST, COARSE, DIRECT, INTERLEAVED, LAYOUTS, ResponseSpec, parse_response
from genrec.trie import SIDTrie
from sid_tokenizer.sidmap import SIDMap

torch.set_num_threads(1)
WORDS = [f"w{i}" for i in range(10)]
PAD, UNK, BOS, EOS = 0, 1, 2, 3


def toy_tokenizer(sid_map: SIDMap) -> PreTrainedTokenizerFast:
    vocab = {"[PAD]": PAD, "[UNK]": UNK, "[BOS]": BOS, "[EOS]": EOS}
    for w in WORDS:
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    t = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]"
    )
    t.add_tokens(["<think>", "</think>"] + sid_map.all_tokens())
    return t


def random_sid_map(seed: int, sizes=(4, 3, 4), n_items: int = 14) -> SIDMap:
    """Random distinct SIDs over `sizes` codes (the last level acts as the dedup level)."""
    rng = random.Random(seed)
    items: dict[str, tuple[int, ...]] = {}
    while len(items) < n_items:
        c = tuple(rng.randrange(s) for s in sizes)
        if c not in items.values():
            items[f"job{len(items)}"] = c
    return SIDMap(items, list(sizes))


CATALOG_SHAPES = [(4, 3, 4), (2, 5, 1), (3, 2, 3, 2)]  # the last level acts as the dedup level


@functools.lru_cache(maxsize=None)
def setup(seed: int = 0):
    sizes = CATALOG_SHAPES[seed % len(CATALOG_SHAPES)]
    n_items = min(14, int(torch.tensor(sizes).prod()))
    sid_map = random_sid_map(seed, sizes, n_items)
    tok = toy_tokenizer(sid_map)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok) + 3,  # a few unused logits beyond the tokenizer, like a padded embedding matrix
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    model = LlamaForCausalLM(cfg).eval()
    trie = SIDTrie.from_sid_map(sid_map, tok)
    return sid_map, tok, model, trie


# ------------------------------------------------------------------------------------------ reference


def reference_allowed(comp, spec: ResponseSpec, catalog, max_block, min_block, vocab):
    """Allowed next tokens after `comp`, by direct simulation of the grammar; None when comp is illegal."""
    k = spec.num_levels
    text = {v for v in range(min(vocab, spec.vocab_size)) if bool(spec.text_allowed[v])}
    phase = "sid" if spec.layout == DIRECT else "open"
    blocks, blen, sid = 0, 0, []

    def allowed():
        if phase == "open":
            return {spec.think_open_id}
        if phase == "block":
            out = set(text) if blen < max_block[blocks] else set()
            if blen >= min_block[blocks]:
                out.add(spec.think_close_id)
            return out
        if phase == "sid":
            d = len(sid)
            return {spec.level_token_ids[d][c[d]] for c in catalog if list(c[:d]) == sid}
        if phase == "eos":
            return {spec.eos_id}
        return {spec.eos_id, spec.pad_id}

    for t in comp:
        if phase == "done":
            continue  # after EOS generate pads with its own pad id; the processor accepts anything there
        if t not in allowed():
            return None
        if phase == "open":
            phase, blen = "block", 0
        elif phase == "block":
            if t == spec.think_close_id:
                blocks += 1
                phase = "sid" if spec.layout in (INTERLEAVED, COARSE) or blocks == k else "open"
            else:
                blen += 1
        elif phase == "sid":
            sid.append(spec.sid_of(t)[1])
            if len(sid) == k:
                phase = "eos"
            elif spec.layout == INTERLEAVED:
                phase = "open"
            elif spec.layout == COARSE and len(sid) < max(1, k - 2):  # blocks before all but the last two levels
                phase = "open"
        else:
            phase = "done"
    return allowed()


def mask_set(mask_row: torch.Tensor) -> set[int]:
    return set(torch.nonzero(mask_row).flatten().tolist())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=st.sampled_from(LAYOUTS),
    catalog_seed=st.integers(0, 5),
    min_frac=st.integers(0, 2),
    length=st.integers(0, 30),
    rows=st.integers(1, 4),
    data=st.data(),
)
def test_masks_match_reference_state_machine(layout, catalog_seed, min_frac, length, rows, data):
    """Random legal walks (plus, sometimes, one illegal last token): the batched mask equals the reference."""
    sid_map, tok, _, trie = setup(catalog_seed)
    max_block = data.draw(st.lists(st.integers(0, 4), min_size=sid_map.num_levels, max_size=sid_map.num_levels))
    spec = ResponseSpec.from_tokenizer(tok, sid_map, layout)
    min_block = [min(m, min_frac) for m in max_block]
    vocab = len(tok) + 3
    catalog = list(sid_map.item_to_codes.values())
    proc = SIDLogitsProcessor(spec, trie, max_block, min_block, on_invalid="eos")
    walks, illegal = [], []
    for _ in range(rows):
        comp: list[int] = []
        for _ in range(length):
            options = sorted(reference_allowed(comp, spec, catalog, max_block, min_block, vocab))
            # favour structure tokens so walks reach the SID phases
            pick = data.draw(st.one_of(st.sampled_from(options), st.sampled_from([o for o in options if o not in range(4, 14)] or options)))
            comp.append(pick)
        bad = data.draw(st.booleans()) and length > 0
        if bad:
            comp[-1] = data.draw(st.integers(0, vocab - 1))
        walks.append(comp)
        illegal.append(reference_allowed(comp, spec, catalog, max_block, min_block, vocab) is None)
    # left-padded prompts of different lengths, with format tokens in them (a SID history): they are ignored
    v = tok.get_vocab()
    history = [v["<a_0>"], v["</think>"], v["<think>"]]
    prompt = [[PAD] * r + [BOS] + history[: 3 - r] for r in range(rows)]
    ids = torch.tensor([p + w for p, w in zip(prompt, walks)], dtype=torch.long).view(rows, 4 + length)
    mask = proc.allowed_mask(ids, prompt_len=4, vocab_size=vocab)
    assert mask.shape == (rows, vocab)
    for r in range(rows):
        if illegal[r]:
            assert mask_set(mask[r]) == {spec.eos_id}  # ended with EOS, never unconstrained
        else:
            assert mask_set(mask[r]) == reference_allowed(walks[r], spec, catalog, max_block, min_block, vocab)
    assert proc.num_invalid_rows == sum(illegal)
    if any(illegal):
        strict = SIDLogitsProcessor(spec, trie, max_block, min_block)
        with pytest.raises(ConstrainedDecodingError, match="left the .* response grammar"):
            strict.allowed_mask(ids, prompt_len=4, vocab_size=vocab)


# ------------------------------------------------------------------------------------------ generation


def generate(model, tok, proc, prompts, **kw):
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    kw.setdefault("max_new_tokens", proc.max_response_tokens)
    out = model.generate(
        **enc,
        logits_processor=LogitsProcessorList([proc]),
        pad_token_id=PAD,
        eos_token_id=EOS,
        top_k=None,
        top_p=None,
        **kw,
    )
    return out[:, enc.input_ids.shape[1] :]


def check_outputs(comp, spec, sid_map, max_block, min_block):
    """Every row parses into K steps, names a catalog item, keeps the block budgets; only pad/EOS after EOS."""
    parsed = [parse_response(row, spec) for row in comp]
    for p, row in zip(parsed, comp.tolist()):
        assert p.ok, (p.error, row)
        assert sid_map.item_for_codes(p.codes) is not None
        for s in p.steps:
            if s.level in block_levels(spec.layout, spec.num_levels):
                n_text = s.block_end - s.block_start - 2
                assert min_block[s.level] <= n_text <= max_block[s.level]
                assert all(t in range(4, 4 + len(WORDS)) for t in row[s.block_start + 1 : s.block_end - 1])
        assert all(t in (PAD, EOS) for t in row[p.eos_pos + 1 :])
    return parsed


PROMPTS = ["w1 w2 <a_0> <think> w5", "w6", "w7 </think>"]  # format tokens in a prompt are ignored


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=st.sampled_from(LAYOUTS),
    catalog_seed=st.integers(0, 5),
    seed=st.integers(0, 2**16),
    data=st.data(),
    min_block=st.integers(0, 2),
    temperature=st.sampled_from([0.7, 1.0, 3.0]),
)
def test_sampling_always_yields_catalog_items(layout, catalog_seed, seed, data, min_block, temperature):
    sid_map, tok, model, trie = setup(catalog_seed)
    max_block = data.draw(st.lists(st.integers(0, 6), min_size=sid_map.num_levels, max_size=sid_map.num_levels))
    spec = ResponseSpec.from_tokenizer(tok, sid_map, layout)
    mins = [min(min_block, m) for m in max_block]
    proc = SIDLogitsProcessor(spec, trie, max_block, mins)
    torch.manual_seed(seed)
    comp = generate(model, tok, proc, PROMPTS, do_sample=True, num_return_sequences=3, temperature=temperature)
    assert comp.shape[0] == 9
    check_outputs(comp, spec, sid_map, max_block, mins)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=st.sampled_from(LAYOUTS),
    catalog_seed=st.integers(0, 5),
    num_beams=st.integers(1, 24),
    data=st.data(),
)
def test_beam_search_always_yields_catalog_items(layout, catalog_seed, num_beams, data):
    sid_map, tok, model, trie = setup(catalog_seed)
    num_return = data.draw(st.integers(1, num_beams))
    max_block = data.draw(st.integers(0, 4))
    spec = ResponseSpec.from_tokenizer(tok, sid_map, layout)
    proc = SIDLogitsProcessor(spec, trie, max_block_tokens=max_block)
    k = sid_map.num_levels
    comp = generate(model, tok, proc, PROMPTS[:2], num_beams=num_beams, num_return_sequences=num_return, do_sample=False)
    assert comp.shape[0] == 2 * num_return
    check_outputs(comp, spec, sid_map, [max_block] * k, [0] * k)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_beam_search_20_beams_distinct_best_beams(layout):
    sid_map, tok, model, trie = setup(0)
    spec = ResponseSpec.from_tokenizer(tok, sid_map, layout)
    proc = SIDLogitsProcessor(spec, trie, max_block_tokens=3)
    out = model.generate(
        **tok(PROMPTS[:2], return_tensors="pt", padding=True, padding_side="left"),
        logits_processor=LogitsProcessorList([proc]), max_new_tokens=proc.max_response_tokens, num_beams=20,
        num_return_sequences=20, do_sample=False, top_k=None, top_p=None, pad_token_id=PAD, eos_token_id=EOS,
        return_dict_in_generate=True, output_scores=True,
    )
    comp = out.sequences[:, 5:]  # both prompts are padded to 5 tokens
    check_outputs(comp, spec, sid_map, [3] * 3, [0] * 3)
    # beams with a real score (not HF's -1e9 filler for exhausted searches) are distinct completions
    for g in range(2):
        rows = [tuple(r) for r, sc in zip(comp[g * 20 : (g + 1) * 20].tolist(), out.sequences_scores[g * 20 : (g + 1) * 20]) if sc > -1e8]
        assert rows and len(set(rows)) == len(rows)


def test_greedy_left_padded_batch_matches_single_prompts():
    """Rows with different prompt lengths (left padding) are constrained like the same prompts run alone."""
    sid_map, tok, model, trie = setup(0)
    spec = ResponseSpec.from_tokenizer(tok, sid_map, INTERLEAVED)
    proc = SIDLogitsProcessor(spec, trie, max_block_tokens=4)
    batch = generate(model, tok, proc, PROMPTS, do_sample=False)
    check_outputs(batch, spec, sid_map, [4] * 3, [0] * 3)
    for i, prompt in enumerate(PROMPTS):  # the same processor object is reused: it detects each new generation
        alone = generate(model, tok, proc, [prompt], do_sample=False)
        check_outputs(alone, spec, sid_map, [4] * 3, [0] * 3)
        n = alone.shape[1]
        assert batch[i, :n].tolist() == alone[0].tolist()


def test_rows_may_be_reordered_between_calls():
    """Beam search permutes rows within a prompt's group every step; the state follows the rows."""
    sid_map, tok, _, trie = setup(0)
    spec = ResponseSpec.from_tokenizer(tok, sid_map, INTERLEAVED)
    proc = SIDLogitsProcessor(spec, trie, max_block_tokens=2)
    v = tok.get_vocab()
    prompt = [BOS, 4, 5]
    a = [v["<think>"], 6, v["</think>"]]  # expects a level-0 SID next
    b = [v["<think>"], 6, 7]  # budget of 2 reached: expects </think>
    scores = torch.zeros(2, len(tok))
    for n in range(3):  # the generation starts: prompt, then two shared tokens
        proc(torch.tensor([prompt + a[:n], prompt + a[:n]]), scores)
    out = proc(torch.tensor([prompt + b, prompt + a]), scores)  # rows differ in their last token
    assert proc._prompt_len == 3
    assert mask_set(out[0] > float("-inf")) == {v["</think>"]}
    assert mask_set(out[1] > float("-inf")) == set(trie.allowed_tokens(trie.root))
    first = trie.allowed_tokens(trie.root)[0]
    swapped = proc(torch.tensor([prompt + b + [v["</think>"]], prompt + a + [first]]), scores)
    assert mask_set(swapped[0] > float("-inf")) == set(trie.allowed_tokens(trie.root))
    assert mask_set(swapped[1] > float("-inf")) == {v["<think>"]}


def test_no_allowed_token_raises():
    sid_map, tok, model, trie = setup(0)
    spec = ResponseSpec.from_tokenizer(tok, sid_map, DIRECT)
    proc = SIDLogitsProcessor(spec, trie)
    # min_new_tokens runs before our processor and removes EOS, the only allowed token after the SID
    with pytest.raises(ConstrainedDecodingError, match="already had score -inf before this processor"):
        generate(model, tok, proc, PROMPTS[:1], do_sample=False, min_new_tokens=10, max_new_tokens=20)
    # a model whose logits do not cover the SID tokens
    with pytest.raises(ValueError, match="resize the model's embeddings"):
        proc(torch.tensor([[BOS]]), torch.zeros(1, 20))
    # every allowed token removed: the row has no allowed token at all
    proc2 = SIDLogitsProcessor(spec.with_layout(INTERLEAVED), trie)
    with pytest.raises(ConstrainedDecodingError, match="row 0 .* has no allowed token|already had score -inf"):
        proc2(torch.tensor([[BOS]]), torch.full((1, len(tok)), float("-inf")))


def test_invalid_rows_are_never_unconstrained():
    sid_map, tok, _, trie = setup(0)
    spec = ResponseSpec.from_tokenizer(tok, sid_map, INTERLEAVED)
    v = tok.get_vocab()
    bad = torch.tensor([[BOS, 4, 5, v["<a_0>"]], [BOS, 4, 5, v["<think>"]]])  # row 0 starts with a SID token
    with pytest.raises(ConstrainedDecodingError, match="1 row\\(s\\) left the interleaved response grammar"):
        SIDLogitsProcessor(spec, trie, prompt_len=3)(bad, torch.zeros(2, len(tok)))
    lenient = SIDLogitsProcessor(spec, trie, prompt_len=3, on_invalid="eos")
    out = lenient(bad, torch.zeros(2, len(tok)))
    assert mask_set(out[0] > float("-inf")) == {EOS}
    assert len(mask_set(out[1] > float("-inf"))) == len(WORDS) + 1
    assert lenient.num_invalid_rows == 1


def test_spec_and_trie_must_agree():
    sid_map, tok, _, trie = setup(0)
    spec = ResponseSpec.from_tokenizer(tok, sid_map, BLOCKS_FIRST)
    other = SIDTrie.from_codes([(0, 0, 0)], [list(reversed(ids)) for ids in spec.level_token_ids])
    with pytest.raises(ValueError, match="disagree on the token ids of SID level 0"):
        SIDLogitsProcessor(spec, other)
    with pytest.raises(ValueError, match="min_block_tokens 3 > max_block_tokens 2"):
        SIDLogitsProcessor(spec, trie, 2, 3)
    with pytest.raises(ValueError, match="2 per-level values for 3 levels"):
        SIDLogitsProcessor(spec, trie, [1, 2])
    with pytest.raises(ValueError, match="pass prompt_len"):
        SIDLogitsProcessor(spec, trie).allowed_mask(torch.tensor([[1, 2]]))


def test_beam_sampling_needs_on_invalid_eos():
    """transformers' beam sampling draws zero-probability candidates when few tokens are allowed; those rows
    are ended with EOS under on_invalid='eos' and never returned."""
    sid_map, tok, model, trie = setup(0)
    spec = ResponseSpec.from_tokenizer(tok, sid_map, INTERLEAVED)
    torch.manual_seed(0)
    with pytest.raises(ConstrainedDecodingError, match="Beam sampling"):
        generate(model, tok, SIDLogitsProcessor(spec, trie, 3), PROMPTS[:2], do_sample=True, num_beams=4)
    proc = SIDLogitsProcessor(spec, trie, 3, on_invalid="eos")
    comp = generate(model, tok, proc, PROMPTS[:2], do_sample=True, num_beams=4, num_return_sequences=2)
    check_outputs(comp, spec, sid_map, [3] * 3, [0] * 3)
    assert proc.num_invalid_rows > 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=st.sampled_from(LAYOUTS), data=st.data())
def test_incremental_state_equals_fresh_computation(layout, data):
    """One processor called step by step (it updates its sums incrementally when rows only grow) gives the
    same masks as a fresh processor on each prefix, also when rows get reordered or the buffer is reused."""
    sid_map, tok, _, trie = setup(0)
    spec = ResponseSpec.from_tokenizer(tok, sid_map, layout)
    k, vocab = sid_map.num_levels, len(tok) + 3
    catalog = list(sid_map.item_to_codes.values())
    budgets = [2] * k
    rows = 3
    walks = [[] for _ in range(rows)]
    buf = torch.full((rows, 3 + 20), PAD, dtype=torch.long)
    buf[:, :3] = torch.tensor([BOS, 4, 5])
    proc = SIDLogitsProcessor(spec, trie, budgets, prompt_len=3)
    for step in range(20):
        if data.draw(st.booleans()):  # beam-search-like reordering (in place, in the same buffer)
            perm = data.draw(st.lists(st.integers(0, rows - 1), min_size=rows, max_size=rows))
            buf[:, : 3 + step] = buf[perm, : 3 + step].clone()
            walks = [list(walks[i]) for i in perm]
        incremental = proc.allowed_mask(buf[:, : 3 + step], vocab_size=vocab)
        fresh = SIDLogitsProcessor(spec, trie, budgets, prompt_len=3).allowed_mask(buf[:, : 3 + step], vocab_size=vocab)
        assert torch.equal(incremental, fresh)
        for r in range(rows):
            assert mask_set(incremental[r]) == reference_allowed(walks[r], spec, catalog, budgets, [0] * k, vocab)
            tok_id = data.draw(st.sampled_from(sorted(mask_set(incremental[r]))))
            walks[r].append(tok_id)
            buf[r, 3 + step] = tok_id


@pytest.mark.parametrize("layout", [INTERLEAVED, BLOCKS_FIRST, COARSE])
def test_greedy_text_writes_blocks_greedily_and_samples_sid_tokens(layout):
    """greedy_text: every block token a sampling `generate` writes is the most likely allowed token given what came
    before it, while the SID tokens are still sampled; without it the same sampling writes other blocks."""
    sid_map, tok, model, trie = setup(0)
    spec = ResponseSpec.from_tokenizer(tok, sid_map, layout)
    prompt = PROMPTS[:1]
    enc = tok(prompt, return_tensors="pt")
    n_prompt = enc.input_ids.shape[1]
    proc = SIDLogitsProcessor(spec, trie, max_block_tokens=4, greedy_text=True)
    torch.manual_seed(0)
    comp = generate(model, tok, proc, prompt, do_sample=True, num_return_sequences=12, temperature=3.0)
    parsed = check_outputs(comp, spec, sid_map, [4] * 3, [0] * 3)
    assert len({tuple(p.codes) for p in parsed}) > 1  # SID tokens are sampled
    text_checked = 0
    for row, p in zip(comp.tolist(), parsed):
        ids = torch.tensor([enc.input_ids[0].tolist() + row[: p.eos_pos + 1]])
        with torch.no_grad():
            logits = model(ids).logits[0]
        allowed = SIDLogitsProcessor(spec, trie, max_block_tokens=4)
        for s in p.steps:
            for pos in range(s.block_start + 1, s.block_end):  # block text and its </think>
                mask = allowed.allowed_mask(ids[:, : n_prompt + pos], n_prompt, logits.shape[-1])[0]
                if int(mask.sum()) > 1:
                    best = int(logits[n_prompt + pos - 1].masked_fill(~mask, float("-inf")).argmax())
                    assert row[pos] == best
                    text_checked += 1
    assert text_checked > 0
    first_block = {tuple(row[: p.steps[0].block_end]) for row, p in zip(comp.tolist(), parsed) if p.steps[0].block_end}
    assert len(first_block) == 1  # one prompt, one greedy first block
    sampled = generate(model, tok, SIDLogitsProcessor(spec, trie, max_block_tokens=4), prompt, do_sample=True,
                       num_return_sequences=12, temperature=3.0)
    sampled_parsed = check_outputs(sampled, spec, sid_map, [4] * 3, [0] * 3)
    assert len({tuple(row[: p.steps[0].block_end]) for row, p in zip(sampled.tolist(), sampled_parsed)}) > 1
