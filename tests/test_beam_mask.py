"""The beam search's additive masks (eval/beam.py) give the same choices as the bool-mask form they replaced, and
the thinking-block budget (min and max) matches HF greedy generation through the team's SIDLogitsProcessor."""

from __future__ import annotations

import pytest
import torch

from eval.beam import NEG_INF, SIDBeamSearch
from genrec.constrained import SIDLogitsProcessor
from genrec.response import ResponseSpec, parse_response
from genrec.trie import SIDTrie
from tests.helpers_tiny import tiny_sid_map
from tests.helpers_tiny import perturbed_tiny_model as _model
from tests.helpers_tiny import tiny_prompts as _prompts

MIN_BLOCK, MAX_BLOCK = 3, 6


def _bool_mask_choice(search: SIDBeamSearch, logits, blen, level):
    """The previous form: bool mask of text-under-budget + </think>-after-min, then masked_fill and argmax."""
    text = search._block_bias_rows[torch.device("cpu")][1].isfinite()
    text[search.spec.think_close_id] = False
    allow = text[None, :] & (blen < search.max_block[level])[:, None]
    allow[:, search.spec.think_close_id] = blen >= search.min_block[level]
    return logits.masked_fill(~allow, NEG_INF).argmax(dim=1), allow


def test_block_bias_equals_bool_mask_for_every_budget_status():
    model, tok = _model()
    search = SIDBeamSearch(model, tok, tiny_sid_map(), "interleaved", num_beams=1,
                           max_block_tokens=[MAX_BLOCK, 3], min_block_tokens=[MIN_BLOCK, 3])
    spec = search.spec
    gen = torch.Generator().manual_seed(0)
    for level in range(2):
        blen = torch.arange(MAX_BLOCK + 2).repeat(40)
        for logits in (torch.randn(len(blen), search.vocab, generator=gen),
                       torch.randint(0, 3, (len(blen), search.vocab), generator=gen).float()):  # many ties
            ref, allow = _bool_mask_choice(search, logits, blen, level)
            bias = search._block_bias(blen, level)
            assert torch.equal(bias.isfinite(), allow)
            assert torch.equal((logits + bias).argmax(dim=1), ref)
        lo, hi = search.min_block[level], search.max_block[level]
        bias = search._block_bias(torch.tensor([0, lo, hi]), level)
        close = spec.think_close_id
        assert bias[0, close] == NEG_INF or lo == 0  # under min: no </think>
        assert bias[2].isfinite().nonzero().flatten().tolist() == [close]  # at max: only </think>
        assert not bias[:, spec.level_token_ids[0][0]].isfinite().any()  # never a SID token inside a block


def _hf_greedy(layout: str, prompts: list[str]) -> list[list[int]]:
    model, tok = _model()
    spec = ResponseSpec.from_tokenizer(tok, tiny_sid_map(), layout)
    proc = SIDLogitsProcessor(spec, SIDTrie.from_spec(tiny_sid_map(), spec), max_block_tokens=MAX_BLOCK,
                              min_block_tokens=MIN_BLOCK)
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(
        **enc, do_sample=False, num_beams=1, top_k=None, top_p=None, temperature=None, repetition_penalty=1.0,
        logits_processor=[proc], max_new_tokens=proc.max_response_tokens,
    )
    return [row[enc["input_ids"].shape[1]:].tolist() for row in out]


@pytest.mark.parametrize("layout", ["interleaved", "coarse", "blocks_first"])
def test_min_and_max_block_budget_equal_hf_greedy(layout):
    model, tok = _model()
    prompts = _prompts()
    search = SIDBeamSearch(model, tok, tiny_sid_map(), layout, num_beams=1, max_block_tokens=MAX_BLOCK,
                           min_block_tokens=MIN_BLOCK)
    lengths = set()
    for beams, completion in zip(search.search(prompts, 1), _hf_greedy(layout, prompts)):
        parsed = parse_response(completion, search.spec)
        assert parsed.ok, parsed.error
        assert beams[0].codes == parsed.codes
        hf_blocks = [completion[s.block_start + 1:s.block_end - 1] for s in parsed.steps if s.block_end > s.block_start]
        assert [list(b) for b in beams[0].block_token_ids] == hf_blocks
        lengths.update(len(b) for b in hf_blocks)
    assert min(lengths) >= MIN_BLOCK and max(lengths) <= MAX_BLOCK
    assert MIN_BLOCK in lengths, "the fixture closes some blocks as early as allowed (exercises the min budget)"
