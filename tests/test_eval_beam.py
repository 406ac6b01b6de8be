"""Constrained SID beam search on the tiny model (random weights, perturbed so outputs vary by prompt).

Checked against independent references: HF `generate` (greedy, with the team's SIDLogitsProcessor) for
one beam, and exhaustive teacher-forced scoring of every catalog item when the beam is wide enough to
keep every prefix.
"""

from __future__ import annotations

import pytest
import torch

from eval.beam import SIDBeamSearch
from genrec.constrained import SIDLogitsProcessor
from genrec.response import ResponseSpec, parse_response
from genrec.trie import SIDTrie
from tests.helpers_tiny import perturbed_tiny_model as _model
from tests.helpers_tiny import tiny_prompts as _prompts
from tests.helpers_tiny import tiny_sid_map

MAX_BLOCK = 5


def _hf_greedy(layout: str, prompts: list[str]) -> list[list[int]]:
    model, tok = _model()
    spec = ResponseSpec.from_tokenizer(tok, tiny_sid_map(), layout)
    proc = SIDLogitsProcessor(spec, SIDTrie.from_spec(tiny_sid_map(), spec), max_block_tokens=MAX_BLOCK)
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(
        **enc, do_sample=False, num_beams=1, top_k=None, top_p=None, temperature=None, repetition_penalty=1.0,
        logits_processor=[proc], max_new_tokens=proc.max_response_tokens,
    )
    return [row[enc["input_ids"].shape[1]:].tolist() for row in out]


@pytest.mark.parametrize("layout", ["interleaved", "coarse", "blocks_first", "direct"])
def test_one_beam_equals_hf_greedy_constrained_generation(layout):
    model, tok = _model()
    prompts = _prompts()
    search = SIDBeamSearch(model, tok, tiny_sid_map(), layout, num_beams=1, max_block_tokens=MAX_BLOCK)
    ours = search.search(prompts, 1)
    spec = search.spec
    lengths = set()
    for beams, completion in zip(ours, _hf_greedy(layout, prompts)):
        parsed = parse_response(completion, spec)
        assert parsed.ok, parsed.error
        assert beams[0].codes == parsed.codes
        if layout != "direct":
            hf_blocks = [completion[s.block_start + 1:s.block_end - 1] for s in parsed.steps if s.block_end > s.block_start]
            assert [list(b) for b in beams[0].block_token_ids] == hf_blocks
            lengths.update(len(b) for b in hf_blocks)
    if layout != "direct":
        assert len(lengths) > 1, "the fixture should give blocks of different lengths (exercises waiting rows)"
    assert len({b[0].item_id for b in ours}) > 1, "perturbed model should recommend different items to different users"


def _teacher_forced_direct_scores(prompt: str) -> dict[str, float]:
    """log p(SID tokens of item | prompt), summed over levels, for every catalog item."""
    model, tok = _model()
    sid_map = tiny_sid_map()
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    items = list(sid_map.item_to_codes)
    seqs = torch.tensor([p_ids + tok.convert_tokens_to_ids(sid_map.tokens(it)) for it in items])
    with torch.no_grad():
        logp = torch.log_softmax(model(seqs).logits.float(), -1)
    k = sid_map.num_levels
    n = len(p_ids)
    out = {}
    for r, it in enumerate(items):
        out[it] = float(sum(logp[r, n - 1 + j, seqs[r, n + j]] for j in range(k)))
    return out


def test_wide_direct_beam_is_exact_ranking_of_all_items():
    model, tok = _model()
    sid_map = tiny_sid_map()
    prompt = _prompts(1)[0]
    n_items = len(sid_map)
    search = SIDBeamSearch(model, tok, sid_map, "direct", num_beams=n_items)
    beams = search.search([prompt], n_items)[0]
    exact = _teacher_forced_direct_scores(prompt)
    assert [b.item_id for b in beams] == sorted(exact, key=exact.get, reverse=True)
    for b in beams:
        assert b.score == pytest.approx(exact[b.item_id], abs=1e-4)
        assert sum(b.step_logprobs) == pytest.approx(b.score, abs=1e-4)


def test_level_weights_rank_by_weighted_log_probability_and_keep_the_plain_score():
    """A wide beam with level weights is the exact ranking by sum_l w_l log p_l of every item, computed here from
    teacher-forced per-level log-probabilities; the returned score stays the plain log-probability."""
    model, tok = _model()
    sid_map = tiny_sid_map()
    prompt = _prompts(1)[0]
    n_items = len(sid_map)
    weights = [0.05] + [1.0] * (sid_map.num_levels - 2) + [4.0]
    plain = SIDBeamSearch(model, tok, sid_map, "direct", num_beams=n_items).search([prompt], n_items)[0]
    steps = {b.item_id: b.step_logprobs for b in plain}
    weighted = {item: sum(w * lp for w, lp in zip(weights, lps)) for item, lps in steps.items()}
    beams = SIDBeamSearch(model, tok, sid_map, "direct", num_beams=n_items, level_weights=weights).search([prompt], n_items)[0]
    assert [b.item_id for b in beams] == sorted(weighted, key=weighted.get, reverse=True)
    assert [b.item_id for b in beams] != [b.item_id for b in plain], "the weights should change this ranking"
    exact = _teacher_forced_direct_scores(prompt)
    for b in beams:
        assert b.score == pytest.approx(exact[b.item_id], abs=1e-4)
    ones = SIDBeamSearch(model, tok, sid_map, "direct", num_beams=4, level_weights=[1.0] * sid_map.num_levels)
    assert ones.level_weights is None  # all ones is the plain search
    with pytest.raises(ValueError, match="SID levels"):
        SIDBeamSearch(model, tok, sid_map, "direct", level_weights=[1.0] * (sid_map.num_levels + 1))
    with pytest.raises(ValueError, match="> 0"):
        SIDBeamSearch(model, tok, sid_map, "direct", level_weights=[0.0] * sid_map.num_levels)


def test_auto_level_weights_halve_the_last_two_levels():
    from eval.beam import auto_level_weights, check_level_weights

    assert auto_level_weights(4) == [1.0, 1.0, 0.5, 0.5]
    assert auto_level_weights(3) == [1.0, 0.5, 0.5]
    assert auto_level_weights(2) == [1.0, 1.0]  # halving every level would be the plain ranking
    assert check_level_weights("auto", 4) == [1.0, 1.0, 0.5, 0.5]
    assert check_level_weights("none", 4) is None
    model, tok = _model()
    sid_map = tiny_sid_map()  # 2 levels: "auto" is the plain search
    assert SIDBeamSearch(model, tok, sid_map, "direct", level_weights="auto").level_weights is None
    with pytest.raises(ValueError, match="auto"):
        check_level_weights("fine", 4)


def test_interleaved_returns_k_distinct_valid_items_sorted_by_score():
    model, tok = _model()
    sid_map = tiny_sid_map()
    search = SIDBeamSearch(model, tok, sid_map, "interleaved", num_beams=20, max_block_tokens=MAX_BLOCK)
    for beams in search.search(_prompts(), 20):
        ids = [b.item_id for b in beams]
        assert len(ids) == 20 and len(set(ids)) == 20
        assert all(i in sid_map for i in ids)
        assert all(sid_map.codes(b.item_id) == b.codes for b in beams)
        scores = [b.score for b in beams]
        assert scores == sorted(scores, reverse=True)
        assert all(len(b.blocks) == sid_map.num_levels for b in beams)


def test_k_larger_than_beams_is_completed_from_final_level_children():
    model, tok = _model()
    search = SIDBeamSearch(model, tok, tiny_sid_map(), "interleaved", num_beams=2, max_block_tokens=MAX_BLOCK)
    beams = search.search(_prompts(2), 10)
    for b in beams:
        assert len(b) == 10 and len({x.item_id for x in b}) == 10
        # only 2 level-a prefixes survive, so all 10 items share at most 2 first codes
        assert len({x.codes[0] for x in b}) <= 2


def test_batched_equals_one_at_a_time():
    model, tok = _model()
    prompts = _prompts(4)
    search = SIDBeamSearch(model, tok, tiny_sid_map(), "interleaved", num_beams=4, max_block_tokens=MAX_BLOCK)
    batched = search.search(prompts, 5)
    single = [search.search([p], 5)[0] for p in prompts]
    for a, b in zip(batched, single):
        assert [x.item_id for x in a] == [x.item_id for x in b]
        assert [x.score for x in a] == pytest.approx([x.score for x in b], abs=1e-4)


def _gqa_model():
    """The perturbed tiny model's shape with 2 key/value heads for 4 query heads (grouped-query attention)."""
    from transformers import LlamaForCausalLM

    base, tok = _model()
    config = base.config.__class__.from_dict({**base.config.to_dict(), "num_key_value_heads": 2})
    torch.manual_seed(1)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
        model.get_input_embeddings().weight[tok.convert_tokens_to_ids("</think>")] *= 6.0
    return model.eval(), tok


@pytest.mark.parametrize("gqa", [False, True])
@pytest.mark.parametrize("layout", ["interleaved", "coarse", "blocks_first", "direct"])
def test_cache_layouts_give_the_same_search(layout, gqa):
    """The shared-prefix cache (prompt keys once per user) and the dynamic cache return the static cache's lists,
    reasoning and scores, with left-padded prompts of different lengths and blocks that end at different lengths."""
    model, tok = _gqa_model() if gqa else _model()
    prompts = _prompts(4)
    kw = dict(num_beams=3, max_block_tokens=MAX_BLOCK)
    ref = SIDBeamSearch(model, tok, tiny_sid_map(), layout, cache="static", **kw).search(prompts, 4)
    assert len({len(tok(p)["input_ids"]) for p in prompts}) > 1, "prompts of different lengths exercise the padding"
    for cache in ("shared", "dynamic"):
        other = SIDBeamSearch(model, tok, tiny_sid_map(), layout, cache=cache, **kw).search(prompts, 4)
        for x, y in zip(ref, other):
            assert [i.item_id for i in x] == [i.item_id for i in y]
            assert [i.block_token_ids for i in x] == [i.block_token_ids for i in y]
            assert [i.score for i in x] == pytest.approx([i.score for i in y], abs=1e-4)


def test_shared_cache_is_the_default_and_restores_the_attention():
    model, tok = _model()
    before = model.config._attn_implementation
    search = SIDBeamSearch(model, tok, tiny_sid_map(), "coarse", num_beams=3, max_block_tokens=MAX_BLOCK)
    assert search.cache_impl == "shared"
    search.search(_prompts(2), 3)
    assert model.config._attn_implementation == before
    with pytest.raises(IndexError):  # a failure inside the model's forward still restores the attention
        search.search([[10**6]], 3)
    assert model.config._attn_implementation == before
    with pytest.raises(ValueError, match="cache must be one of"):
        SIDBeamSearch(model, tok, tiny_sid_map(), "coarse", cache="paged")


def test_exclusion_masks_items_at_last_level():
    model, tok = _model()
    prompt = _prompts(1)[0]
    search = SIDBeamSearch(model, tok, tiny_sid_map(), "direct", num_beams=5)
    top = [b.item_id for b in search.search([prompt], 5)[0]]
    again = [b.item_id for b in search.search([prompt], 5, exclude=[set(top[:2])])[0]]
    assert not set(top[:2]) & set(again)
    assert again[:3] == top[2:5]


@pytest.mark.parametrize("layout", ["interleaved", "coarse", "direct"])
def test_exclusion_variants_share_one_decoding_and_equal_separate_searches(layout):
    """The `all` and `new` protocols from one pass: each variant equals its own search, in fewer forwards."""
    model, tok = _model()
    prompts = _prompts(3)
    search = SIDBeamSearch(model, tok, tiny_sid_map(), layout, num_beams=3, max_block_tokens=MAX_BLOCK)
    top = [[b.item_id for b in beams] for beams in search.search(prompts, 6)]
    exclude = [set(t[:2]) for t in top]  # every user's two best items: the excluded list must change
    calls = search.forward_calls
    plain, excluded = search.search_variants(prompts, 6, [None, exclude])
    shared_calls = search.forward_calls - calls
    calls = search.forward_calls
    separate = [search.search(prompts, 6), search.search(prompts, 6, exclude)]
    assert shared_calls * 2 == search.forward_calls - calls
    for got, want in zip((plain, excluded), separate):
        for x, y in zip(got, want):
            assert [i.item_id for i in x] == [i.item_id for i in y]
            assert [i.block_token_ids for i in x] == [i.block_token_ids for i in y]
            assert [i.score for i in x] == pytest.approx([i.score for i in y], abs=1e-5)
    for t, x in zip(top, excluded):
        assert not set(t[:2]) & {i.item_id for i in x}


def test_bad_settings():
    model, tok = _model()
    with pytest.raises(ValueError, match="num_beams"):
        SIDBeamSearch(model, tok, tiny_sid_map(), "direct", num_beams=0)
    with pytest.raises(ValueError, match="unknown response layout"):
        SIDBeamSearch(model, tok, tiny_sid_map(), "sideways")
    with pytest.raises(ValueError, match="min_block_tokens"):
        SIDBeamSearch(model, tok, tiny_sid_map(), "interleaved", max_block_tokens=2, min_block_tokens=3)


def test_level_weights_flag_parsing():
    from eval.config import EvalConfig

    assert EvalConfig(data="d", level_weights="").level_weight_list() is None
    assert EvalConfig(data="d", level_weights="none").level_weight_list() is None
    assert EvalConfig(data="d", level_weights="auto").level_weight_list() == "auto"
    assert EvalConfig(data="d", level_weights="1,1,0.5,0.5").level_weight_list() == [1.0, 1.0, 0.5, 0.5]
    with pytest.raises(ValueError, match="comma-separated numbers"):
        EvalConfig(data="d", level_weights="1,x")
    with pytest.raises(ValueError, match="> 0"):
        EvalConfig(data="d", level_weights="1,-1")


def test_recommend_rejects_a_bad_level_weights_flag_before_loading():
    from genrec.commands.recommend import RecommendConfig

    assert RecommendConfig(level_weights="1,1,0.5,0.5").level_weights == "1,1,0.5,0.5"
    with pytest.raises(ValueError, match="comma-separated numbers"):
        RecommendConfig(level_weights="0.5;1")


def test_shared_cache_only_for_plain_causal_attention():
    """Sliding-window attention is not what the shared-prefix softmax computes, so such a model keeps the static cache
    (and asking for 'shared' is a clear error); the same architecture without a window gets the shared cache."""
    from transformers import MistralConfig, MistralForCausalLM

    from eval.shared_prefix import supports_shared_prefix

    _, tok = _model()
    shape = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                 num_attention_heads=2, num_key_value_heads=2)
    windowed = MistralForCausalLM(MistralConfig(sliding_window=16, **shape))
    plain = MistralForCausalLM(MistralConfig(sliding_window=None, **shape))
    assert not supports_shared_prefix(windowed) and supports_shared_prefix(plain)
    assert SIDBeamSearch(windowed, tok, tiny_sid_map(), "direct").cache_impl == "static"
    assert SIDBeamSearch(plain, tok, tiny_sid_map(), "direct").cache_impl == "shared"
    with pytest.raises(ValueError, match="cache 'shared' needs"):
        SIDBeamSearch(windowed, tok, tiny_sid_map(), "direct", cache="shared")


def _first_violation(tokens: list[int], n: int, run: int) -> int | None:
    """Index of the first token that completes an n-gram seen earlier in `tokens` (n > 0) or a run of more than
    `run` identical tokens (run > 0), or None."""
    for end in range(1, len(tokens) + 1):
        if n and end >= n and any(tokens[end - n:end] == tokens[j:j + n] for j in range(end - n)):
            return end - 1
        if run and end > run and len(set(tokens[end - run - 1:end])) == 1:
            return end - 1
    return None


@pytest.mark.parametrize("n,run", [(1, 0), (2, 0), (0, 1), (0, 2), (6, 3)])
def test_block_guard_cuts_repeats_and_changes_nothing_before(n, run):
    """With the guard no block repeats an n-gram or runs a token more than `run` times; one beam per user writes the
    same block as without the guard up to the first token that broke a rule, and the same SIDs wherever no block
    was cut."""
    model, tok = _model()
    prompts = _prompts()

    def echo(_module, args, kwargs, out):  # the model favours the token it was just fed: it loops, as small ones do
        ids = kwargs.get("input_ids", args[0] if args else None)
        out.logits[:, -1, :].scatter_add_(1, ids[:, -1:], torch.full_like(ids[:, -1:], 4.0, dtype=out.logits.dtype))
        return out

    kw = dict(num_beams=1, max_block_tokens=40, min_block_tokens=30)
    free = SIDBeamSearch(model, tok, tiny_sid_map(), "interleaved", block_no_repeat_ngram=0, block_max_run=0, **kw)
    held = SIDBeamSearch(model, tok, tiny_sid_map(), "interleaved", block_no_repeat_ngram=n, block_max_run=run, **kw)
    handle = model.register_forward_hook(echo, with_kwargs=True)
    try:
        results = list(zip(free.search(prompts, 1), held.search(prompts, 1)))
    finally:
        handle.remove()
    cut = 0
    for a, b in results:
        same_so_far = True
        for fa, fb in zip(a[0].block_token_ids, b[0].block_token_ids):
            assert _first_violation(list(fb), n, run) is None
            if not same_so_far:
                continue
            stop = _first_violation(list(fa), n, run)
            if stop is None:
                assert fa == fb
            else:
                cut += 1
                assert fb[:stop] == fa[:stop] and (len(fb) <= stop or fb[stop] != fa[stop])
                same_so_far = False
        if same_so_far:
            assert a[0].codes == b[0].codes and a[0].score == pytest.approx(b[0].score, rel=1e-5, abs=1e-4)
    assert cut > 0, "the fixture should write some repeating blocks without the guard"


def test_block_guard_bans_what_hf_no_repeat_ngram_bans():
    """The ban rule is transformers' `no_repeat_ngram_size`, applied to each row's block tokens only."""
    from transformers import NoRepeatNGramLogitsProcessor

    from eval.beam import repeated_ngram_bans

    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        n = int(torch.randint(1, 5, (1,), generator=g))
        hist = torch.randint(0, 4, (5, 12), generator=g)  # 4 token ids: many repeats
        length = torch.randint(0, 13, (5,), generator=g)
        rows, toks = repeated_ngram_bans(hist, length, n)
        ours = set(zip(rows.tolist(), toks.tolist()))
        ref = set()
        for r in range(5):
            if length[r] > 0:
                out = NoRepeatNGramLogitsProcessor(n)(hist[r:r + 1, :length[r]], torch.zeros(1, 4))
                ref |= {(r, int(t)) for t in torch.isinf(out[0]).nonzero().flatten()}
        assert ours == ref
    with pytest.raises(ValueError, match="block_no_repeat_ngram must be >= 0"):
        SIDBeamSearch(*_model(), tiny_sid_map(), "interleaved", block_no_repeat_ngram=-1)
    with pytest.raises(ValueError, match="block_max_run must be >= 0"):
        SIDBeamSearch(*_model(), tiny_sid_map(), "interleaved", block_max_run=-1)


def test_block_run_guard_bans_the_token_that_would_run_too_long():
    from eval.beam import long_run_bans

    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        run = int(torch.randint(1, 4, (1,), generator=g))
        hist = torch.randint(0, 2, (6, 8), generator=g)
        length = torch.randint(0, 9, (6,), generator=g)
        rows, toks = long_run_bans(hist, length, run)
        ours = set(zip(rows.tolist(), toks.tolist()))
        ref = set()
        for r in range(6):
            for t in range(2):
                seq = hist[r, :length[r]].tolist() + [t]
                if len(seq) > run and len(set(seq[-run - 1:])) == 1:  # ends in run + 1 identical tokens
                    ref.add((r, t))
        assert ours == ref
