"""SFT through TRL on the tiny model: stage-1 rows, loss goes down, resume, stage-2 output format, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import LogitsProcessorList

from genrec.cli import main
from genrec.constrained import SIDLogitsProcessor
from genrec.modeling import load_model_and_tokenizer
from genrec.prompts import PromptConfig, build_prompt
from genrec.response import ResponseSpec, parse_response
from genrec.sft import GenrecSFTConfig, SFTStageConfig, stage1_rows, train_sft
from genrec.traces.build import TraceConfig, make_traces
from genrec.traces.dataset import load_traces
from genrec.trie import SIDTrie
from sid_tokenizer.sidmap import SIDMap
from tests.helpers_tiny import (
    tiny_model_dir,
    tiny_recdata,
    tiny_sid_map,
    tiny_trace_rows,
    train_tiny_stage2,
    write_tiny_data_dir,
)

torch.set_num_threads(1)  # tiny matrices: one thread is several times faster on a shared 2-core machine
REC, SIDS = tiny_recdata(), tiny_sid_map()
QUIET = ["--disable_tqdm", "true", "--report_to", "none", "--seed", "0"]


def _losses(checkpoint: Path) -> list[float]:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


def test_stage1_rows():
    _, tok = load_model_and_tokenizer(tiny_model_dir())
    rows = stage1_rows(REC.catalog, SIDS, REC.train, tok, PromptConfig())
    n = len(REC.catalog)
    assert rows["task"].count("item2sid") == n and rows["task"].count("sid2item") == n
    assert rows["task"].count("history2sid") == len(REC.train)
    i = rows["task"].index("item2sid")
    assert rows["prompt"][i] == "Job: Data Analyst\nSemantic ID:" and rows["completion"][i] == "<a_0><b_0>"
    i = rows["task"].index("sid2item")
    assert rows["prompt"][i] == "Semantic ID: <a_0><b_0>\nJob:" and rows["completion"][i] == " Data Analyst"
    i = rows["task"].index("history2sid")
    assert "semantic ID only" in rows["prompt"][i]
    assert rows["completion"][i] == SIDS.sid_string(REC.train[0].target)
    # With a chat template every prompt is a wrapped user turn.
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    rows = stage1_rows(REC.catalog, SIDS, REC.train[:2], tok, PromptConfig(use_chat_template=True))
    assert all(p.endswith("<|assistant|>\n") and "<|user|>" in p for p in rows["prompt"])
    assert rows["completion"][rows["task"].index("sid2item")] == "Data Analyst"


def test_stage1_cli_lowers_loss_logs_and_resumes(tmp_path):
    data = write_tiny_data_dir(tmp_path / "data")
    SIDS.save(tmp_path / "sid_map.json")
    out = tmp_path / "sft1"
    common = ["sft", "--stage", "1", "--model", str(tiny_model_dir()), "--sid_map", str(tmp_path / "sid_map.json"),
              "--data", str(data), "--output_dir", str(out), "--per_device_train_batch_size", "16",
              "--learning_rate", "5e-3", "--logging_steps", "5", "--save_steps", "15", "--eval_valid", "false"]
    assert main(common + ["--max_steps", "30", "--report_to", "tensorboard", "--disable_tqdm", "true"]) == 0
    losses = _losses(out / "checkpoint-30")
    assert len(losses) == 6 and losses[-1] < 0.7 * losses[0]
    assert list((out / "runs").rglob("events.out.tfevents*"))  # TensorBoard
    final = out / "final"
    for name in ("model.safetensors", "tokenizer.json", "sid_map.json", "prompt_config.json", "genrec_model.json"):
        assert (final / name).is_file(), name
    info = json.loads((final / "genrec_model.json").read_text())
    assert info["sft_stage"] == 1 and info["origin"] == "tiny" and info["final_train_loss"] == pytest.approx(losses[-1])
    assert SIDMap.load(final).item_to_codes == SIDS.item_to_codes
    # Resume: continues at step 30 (its log history is kept) and stops at 35.
    assert main(common + ["--max_steps", "35", "--save_steps", "35", "--resume", "true"] + QUIET) == 0
    state = json.loads((out / "checkpoint-35" / "trainer_state.json").read_text())
    assert state["global_step"] == 35
    assert [h["loss"] for h in state["log_history"] if "loss" in h][:6] == losses


def test_length_balanced_batches_resume_mid_epoch_to_the_same_weights(tmp_path):
    """The configs' `batch_rebalance` sampler (a batch sampler, seeded by --seed): a run resumed from a checkpoint in
    the middle of an epoch skips the batches it already trained on and ends with the uninterrupted run's weights;
    another --data_seed (or --seed) draws other batches."""
    import shutil

    from safetensors.torch import load_file

    data = write_tiny_data_dir(tmp_path / "data")
    SIDS.save(tmp_path / "sid_map.json")

    def train(out: Path, *extra: str) -> dict:
        argv = ["sft", "--stage", "1", "--model", str(tiny_model_dir()), "--sid_map", str(tmp_path / "sid_map.json"),
                "--data", str(data), "--output_dir", str(out), "--per_device_train_batch_size", "4",
                "--gradient_accumulation_steps", "2", "--train_sampling_strategy", "batch_rebalance",
                "--learning_rate", "5e-3", "--max_steps", "10", "--save_steps", "5", "--eval_valid", "false",
                *QUIET, *extra]
        assert main(argv) == 0
        return load_file(out / "final" / "model.safetensors")

    whole = train(tmp_path / "a")
    shutil.copytree(tmp_path / "a" / "checkpoint-5", tmp_path / "b" / "checkpoint-5")
    resumed = train(tmp_path / "b", "--resume", "true")
    assert json.loads((tmp_path / "b" / "checkpoint-10" / "trainer_state.json").read_text())["global_step"] == 10
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    other = train(tmp_path / "c", "--data_seed", "1")  # the sampler's seed (transformers' default would be 42)
    assert not all(torch.equal(whole[k], other[k]) for k in whole)


def test_stage2_output_parses_to_catalog_items(tmp_path):
    """Stage 2 on grounded traces; constrained decoding always yields valid items, unconstrained is measured."""
    _, tok = load_model_and_tokenizer(tiny_model_dir())
    pc, ds = tiny_trace_rows(tmp_path / "tr", tok)
    args = GenrecSFTConfig(output_dir=str(tmp_path / "sft2"), max_steps=40, per_device_train_batch_size=8,
                           learning_rate=5e-3, logging_steps=10, save_strategy="no", report_to="none",
                           disable_tqdm=True, seed=0, lr_scheduler_type="constant")
    final = train_sft(tiny_model_dir(), SIDS, ds, args, stage=SFTStageConfig(stage=2), prompt_cfg=pc)
    info = json.loads((final / "genrec_model.json").read_text())
    assert info["final_train_loss"] < 2.5  # from ~5.7 at the start
    assert PromptConfig.load(final) == pc
    model, tok = load_model_and_tokenizer(final)
    tok.padding_side = "left"
    prompts = [build_prompt(e, REC.catalog, SIDS, tok, pc) for e in REC.valid[:8]]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    spec = ResponseSpec.from_tokenizer(tok, SIDS)
    proc = SIDLogitsProcessor(spec, SIDTrie.from_sid_map(SIDS, tok), max_block_tokens=48)
    gen = dict(do_sample=False, top_k=None, top_p=None, repetition_penalty=1.0, pad_token_id=tok.pad_token_id)
    out = model.generate(**enc, max_new_tokens=proc.max_response_tokens, logits_processor=LogitsProcessorList([proc]),
                         **gen)
    parsed = [parse_response(row.tolist(), spec) for row in out[:, enc["input_ids"].shape[1]:]]
    assert all(p.ok for p in parsed), [p.error for p in parsed]
    assert all(SIDS.item_for_codes(p.codes) is not None for p in parsed)
    assert all(len(p.steps) == SIDS.num_levels for p in parsed)
    # Unconstrained: the same model writes the tags itself; the rate is checked after longer training (slow test).
    out = model.generate(**enc, max_new_tokens=120, **gen)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert all(t.startswith("<think>") for t in texts)


def test_bad_inputs_give_precise_errors(tmp_path, capsys):
    data = write_tiny_data_dir(tmp_path / "data")
    SIDMap({i: (c[0], c[1] + 4) for i, c in SIDS.item_to_codes.items()}, [4, 16]).save(tmp_path / "wide.json")
    base = ["--model", str(tiny_model_dir()), "--output_dir", str(tmp_path / "o")] + QUIET
    # SID map that does not match the model's vocabulary.
    assert main(["sft", "--stage", "1", "--sid_map", str(tmp_path / "wide.json"), "--data", str(data)] + base) == 1
    err = capsys.readouterr().err
    assert "lacks 4 of the" in err and "<b_12>" in err and "codebook sizes [4, 16]" in err
    # Traces whose SIDs are not in the SID map's catalog.
    _, tok = load_model_and_tokenizer(tiny_model_dir())
    make_traces(REC, SIDS, tok, TraceConfig(output_dir=str(tmp_path / "tr"), splits="train", max_examples=4),
                PromptConfig())
    shrunk = SIDMap({i: c for i, c in SIDS.item_to_codes.items() if c[0] != 0}, SIDS.codebook_sizes)
    shrunk.save(tmp_path / "shrunk.json")
    assert main(["sft", "--stage", "2", "--sid_map", str(tmp_path / "shrunk.json"), "--traces",
                 str(tmp_path / "tr")] + base) == 1
    err = capsys.readouterr().err
    assert re.search(r"field 'codes': row \d+:", err) and "is not in the SID map" in err
    # Missing inputs.
    assert main(["sft", "--stage", "2", "--sid_map", str(tmp_path / "shrunk.json")] + base) == 1
    assert "--traces is required" in capsys.readouterr().err
    assert main(["sft", "--stage", "1", "--sid_map", str(tmp_path / "shrunk.json"), "--data", str(data), "--model",
                 str(tmp_path / "nope"), "--output_dir", str(tmp_path / "o")] + QUIET) == 1
    assert "model folder not found" in capsys.readouterr().err


def test_lora_merges_into_final(tmp_path):
    m0, tok = load_model_and_tokenizer(tiny_model_dir())
    from datasets import Dataset

    rows = stage1_rows(REC.catalog, SIDS, REC.train, tok, PromptConfig(), ["item2sid"])
    args = GenrecSFTConfig(output_dir=str(tmp_path / "lora"), max_steps=3, per_device_train_batch_size=8,
                           learning_rate=1e-2, save_strategy="no", report_to="none", disable_tqdm=True)
    final = train_sft(tiny_model_dir(), SIDS, Dataset.from_dict(rows), args,
                      stage=SFTStageConfig(stage=1, use_lora=True, lora_r=4))
    m1, _ = load_model_and_tokenizer(final)
    assert set(m1.state_dict()) == set(m0.state_dict())  # merged: a plain model, no adapter weights
    sid = tok.convert_tokens_to_ids("<a_1>")
    assert not torch.equal(m0.get_input_embeddings().weight[sid], m1.get_input_embeddings().weight[sid])
    assert not torch.equal(m0.model.layers[0].self_attn.q_proj.weight, m1.model.layers[0].self_attn.q_proj.weight)


@pytest.mark.slow
def test_stage1_then_stage2_writes_well_formed_output_unconstrained(tmp_path):
    data = write_tiny_data_dir(tmp_path / "data")
    SIDS.save(tmp_path / "sid_map.json")
    sm = str(tmp_path / "sid_map.json")
    assert main(["sft", "--stage", "1", "--model", str(tiny_model_dir()), "--sid_map", sm, "--data", str(data),
                 "--output_dir", str(tmp_path / "sft1"), "--max_steps", "100", "--learning_rate", "5e-3",
                 "--save_strategy", "no"] + QUIET) == 0
    assert main(["traces", "--data", str(data), "--sid_map", sm, "--model", str(tmp_path / "sft1" / "final"),
                 "--output_dir", str(tmp_path / "tr"), "--history_format", "sid", "--include_profile", "false"]) == 0
    assert main(["sft", "--stage", "2", "--model", str(tmp_path / "sft1" / "final"), "--sid_map", sm, "--traces",
                 str(tmp_path / "tr"), "--output_dir", str(tmp_path / "sft2"), "--max_steps", "300",
                 "--per_device_train_batch_size", "8", "--learning_rate", "5e-3", "--save_strategy", "no"]
                + QUIET) == 0
    final = tmp_path / "sft2" / "final"
    model, tok = load_model_and_tokenizer(final)
    tok.padding_side = "left"
    pc = PromptConfig.load(final)
    prompts = [build_prompt(e, REC.catalog, SIDS, tok, pc) for e in REC.test]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=160, do_sample=False, top_k=None, top_p=None,
                         pad_token_id=tok.pad_token_id)
    spec = ResponseSpec.from_tokenizer(tok, SIDS)
    parsed = [parse_response(row.tolist(), spec) for row in out[:, enc["input_ids"].shape[1]:]]
    ok = [p for p in parsed if p.ok]
    rate = len(ok) / len(parsed)
    valid = sum(SIDS.item_for_codes(p.codes) is not None for p in ok)
    print(f"unconstrained parse rate {rate:.2f}, valid items {valid}/{len(parsed)}")
    assert rate >= 0.75 and valid == len(ok)


def test_sequence_rows_loss_mask_on_hand_built_history():
    """The `sequence` task: one row per user window, loss exactly on the SID tokens of target items, and the text
    before each target's SID is token for token the inference prompt of that (history, target)."""
    from genrec.data.schema import Example
    from genrec.data.sequences import reconstruct_sequences
    from genrec.sft import sequence_rows

    _, tok = load_model_and_tokenizer(tiny_model_dir())
    cat = REC.catalog
    items = ["j000", "j001", "j002", "j105"]
    # Leave-one-out style rows of one user (histories grow), then a second user whose only row is independent.
    examples = [Example("u1", tuple(items[:i]), items[i], "Skills: sql.") for i in range(1, 4)]
    examples.append(Example("u2", ("j006",), "j007", ""))
    assert reconstruct_sequences(examples) == [(tuple(items), 1), (("j006", "j007"), 1)]
    for fmt in ("sid", "both"):
        cfg = PromptConfig(history_format=fmt, reasoning=False)
        rows = sequence_rows(cat, SIDS, examples, tok, cfg)
        assert len(rows["input_ids"]) == 2
        ids, mask = rows["input_ids"][0], rows["completion_mask"][0]
        masked = [t for t, m in zip(tok.convert_ids_to_tokens(ids), mask) if m]
        assert masked == [t for item in items[1:] for t in SIDS.tokens(item)]  # not the first item, nothing else
        for ex in examples[:3]:
            prompt_ids = tok(build_prompt(ex, cat, SIDS, tok, cfg))["input_ids"]
            assert ids[: len(prompt_ids)] == prompt_ids
            n = len(SIDS.tokens(ex.target))
            assert ids[len(prompt_ids): len(prompt_ids) + n] == tok.convert_tokens_to_ids(SIDS.tokens(ex.target))
            assert mask[len(prompt_ids) - 1] == 0 and all(mask[len(prompt_ids): len(prompt_ids) + n])
    # A long sequence: windows of at most prompt_max_history + 1 lines, every target's SID trained exactly once.
    long_items = [f"j{i:03d}" for i in range(12)] + ["j100", "j101", "j102"]
    long = [Example("u3", tuple(long_items[max(0, i - 10):i]), long_items[i], "") for i in range(1, len(long_items))]
    rows = sequence_rows(cat, SIDS, long, tok, PromptConfig(history_format="sid", reasoning=False))
    assert len(rows["input_ids"]) > 1
    import re
    assert all(len(re.findall(r"^\d+\. <a_", tok.decode(ids), re.M)) <= 11 for ids in rows["input_ids"])
    masked = sum(sum(m) for m in rows["completion_mask"])
    assert masked == (len(long_items) - 1) * SIDS.num_levels
    with pytest.raises(ValueError, match="plain prompts"):
        sequence_rows(cat, SIDS, examples, tok, PromptConfig(use_chat_template=True))
    # Text-only history lines have no SID tokens to train: an error, not rows without loss.
    with pytest.raises(ValueError, match="history_format 'text' writes no SID tokens"):
        sequence_rows(cat, SIDS, examples, tok, PromptConfig(history_format="text", reasoning=False))


def test_reasoned_sequence_rows_carry_the_teachers_answers():
    """history_reasoning: every history line is the grounded teacher's answer for that item (blocks + SID), so a
    stage-2 `sequence` row is the user's reasoning prompts written out: the text before each target's answer is token
    for token its inference prompt, the loss covers exactly the blocks and SID tokens of the target lines, and the
    answer equals the trace completion of that (history, target)."""
    from genrec.data.schema import Example
    from genrec.response import INTERLEAVED
    from genrec.sft import sequence_rows
    from genrec.traces.dataset import render_completion
    from genrec.traces.grounded import GroundedConfig, grounded_blocks

    _, tok = load_model_and_tokenizer(tiny_model_dir())
    cat = REC.catalog
    items = ["j000", "j001", "j002", "j000"]
    examples = [Example("u1", tuple(items[:i]), items[i], "") for i in range(1, 4)]
    cfg = PromptConfig(history_format="both", reasoning=True, history_reasoning="evidence", max_prompt_tokens=4096)
    teacher = GroundedConfig(history_lines=cfg.prompt_max_history, cite_titles=True, style="evidence")
    rows = sequence_rows(cat, SIDS, examples, tok, cfg, reasoning=True)
    assert len(rows["input_ids"]) == 1
    ids, mask = rows["input_ids"][0], rows["completion_mask"][0]
    n_masked = 0
    for ex in examples:
        prompt = build_prompt(ex, cat, SIDS, tok, cfg)
        completion = render_completion(grounded_blocks(ex, cat, SIDS, teacher), SIDS.codes(ex.target), INTERLEAVED)
        p_ids, full = tok(prompt)["input_ids"], tok(prompt + completion)["input_ids"]
        assert ids[: len(full)] == full  # prompt, then exactly the teacher's answer
        assert mask[len(p_ids) - 1] == 0 and all(mask[len(p_ids): len(full)]) and mask[len(full)] == 0
        n_masked += len(full) - len(p_ids)
    assert sum(mask) == n_masked  # nothing else carries loss (not the first item, not the titles)
    # The last example's prompt shows the earlier answers verbatim: worked examples of the format.
    last = build_prompt(examples[-1], cat, SIDS, tok, cfg)
    first_answer = render_completion(grounded_blocks(examples[0], cat, SIDS, teacher), SIDS.codes(items[1]), INTERLEAVED)
    assert f"2. {first_answer} " in last and last.count("<think>") == 3 * SIDS.num_levels
    # Direct prompts (stage 1) never show blocks, whatever history_reasoning says.
    assert "<think>" not in build_prompt(examples[-1], cat, SIDS, tok, PromptConfig(history_reasoning="evidence",
                                                                                      reasoning=False))
    with pytest.raises(ValueError, match="history_reasoning"):
        sequence_rows(cat, SIDS, examples, tok, PromptConfig(history_format="both"), reasoning=True)
    with pytest.raises(ValueError, match="history_format sid or both"):
        PromptConfig(history_format="text", history_reasoning="evidence")
    with pytest.raises(ValueError, match="history_reasoning must be one of"):
        PromptConfig(history_reasoning="chain")


def test_stage2_sequence_rows_from_reasoned_traces_through_the_cli(tmp_path, capsys):
    """stage 1 -> traces with --history_reasoning -> stage 2 on reasoned `sequence` rows only: trains through TRL
    (loss falls), keeps the traces' prompt settings; without history_reasoning the same flags stop with one line."""
    data = write_tiny_data_dir(tmp_path / "data")
    SIDS.save(tmp_path / "sid_map.json")
    common = ["--sid_map", str(tmp_path / "sid_map.json"), "--per_device_train_batch_size", "8", "--eval_valid",
              "false", "--logging_steps", "5", "--include_profile", "false"] + QUIET
    assert main(["sft", "--stage", "1", "--model", str(tiny_model_dir()), "--data", str(data), "--output_dir",
                 str(tmp_path / "sft1"), "--max_steps", "4", "--save_steps", "4"] + common) == 0
    stage1 = tmp_path / "sft1" / "final"
    for name, extra in (("tr", ["--history_reasoning", "evidence", "--max_prompt_tokens", "2048", "--layout",
                                "interleaved"]), ("plain", [])):
        assert main(["traces", "--data", str(data), "--sid_map", str(tmp_path / "sid_map.json"), "--model",
                     str(stage1), "--output_dir", str(tmp_path / name), "--splits", "train",
                     "--include_profile", "false"] + extra) == 0
    stage2 = ["sft", "--stage", "2", "--model", str(stage1), "--data", str(data), "--stage2_tasks", "sequence",
              "--replay_tasks", "", "--learning_rate", "5e-3", "--max_steps", "20", "--save_steps", "20",
              "--max_length", "2048"] + common
    assert main(stage2 + ["--traces", str(tmp_path / "tr"), "--output_dir", str(tmp_path / "sft2")]) == 0
    losses = _losses(tmp_path / "sft2" / "checkpoint-20")
    assert losses[-1] < 0.8 * losses[0]
    final = tmp_path / "sft2" / "final"
    assert PromptConfig.load(final).history_reasoning == "evidence" and PromptConfig.load(final).reasoning
    info = json.loads((final / "genrec_model.json").read_text())
    assert info["layout"] == "interleaved" and info["train_rows"] < len(load_traces(tmp_path / "tr", SIDS))
    capsys.readouterr()
    # reasoned history lines are interleaved: traces in another layout are refused before any work
    assert main(["traces", "--data", str(data), "--sid_map", str(tmp_path / "sid_map.json"), "--model", str(stage1),
                 "--output_dir", str(tmp_path / "co"), "--splits", "train", "--include_profile", "false",
                 "--history_reasoning", "evidence"]) == 1
    assert "pass --layout interleaved (got 'coarse')" in capsys.readouterr().err
    assert main(stage2 + ["--traces", str(tmp_path / "plain"), "--output_dir", str(tmp_path / "sft2b")]) == 1
    assert "--history_reasoning" in capsys.readouterr().err and not (tmp_path / "sft2b" / "final").exists()


def test_stage1_sequence_task_trains_through_trl(tmp_path):
    data = write_tiny_data_dir(tmp_path / "data")
    SIDS.save(tmp_path / "sid_map.json")
    out = tmp_path / "sft1"
    assert main(["sft", "--stage", "1", "--model", str(tiny_model_dir()), "--sid_map", str(tmp_path / "sid_map.json"),
                 "--data", str(data), "--output_dir", str(out), "--stage1_tasks", "sequence,item2sid",
                 "--history_format", "sid", "--per_device_train_batch_size", "8", "--learning_rate", "5e-3",
                 "--logging_steps", "5", "--max_steps", "30", "--save_steps", "30", "--eval_valid", "false"]
                + QUIET) == 0
    losses = _losses(out / "checkpoint-30")
    assert losses[-1] < 0.7 * losses[0]
    assert PromptConfig.load(out / "final").history_format == "sid"


def test_stage2_from_a_real_stage1_output_replays_and_keeps_settings(tmp_path, capsys):
    """stage 1 (CLI) -> traces with the same prompt flags -> stage 2 (CLI, replaying stage-1 rows): the stage-2 model
    keeps the SID vocabulary, SID map and prompt settings; traces built with other prompt flags are refused."""
    data = write_tiny_data_dir(tmp_path / "data")
    SIDS.save(tmp_path / "sid_map.json")
    prompt_flags = ["--history_format", "sid", "--include_profile", "false"]
    common = ["--sid_map", str(tmp_path / "sid_map.json"), "--per_device_train_batch_size", "8", "--max_steps", "6",
              "--save_steps", "6", "--eval_valid", "false"] + QUIET
    assert main(["sft", "--stage", "1", "--model", str(tiny_model_dir()), "--data", str(data), "--output_dir",
                 str(tmp_path / "sft1")] + prompt_flags + common) == 0
    stage1 = tmp_path / "sft1" / "final"
    assert main(["traces", "--data", str(data), "--sid_map", str(tmp_path / "sid_map.json"), "--model", str(stage1),
                 "--output_dir", str(tmp_path / "tr"), "--splits", "train"] + prompt_flags) == 0
    assert main(["sft", "--stage", "2", "--model", str(stage1), "--traces", str(tmp_path / "tr"), "--data", str(data),
                 "--output_dir", str(tmp_path / "sft2")] + common) == 0
    final = tmp_path / "sft2" / "final"
    n_traces = len(load_traces(tmp_path / "tr", SIDS))
    info = json.loads((final / "genrec_model.json").read_text())
    assert info["sft_stage"] == 2 and info["train_rows"] > n_traces  # trace rows + replayed sequence rows
    # traces sampled from the split (`genrec traces --max_examples`): the replayed stage-1 rows at the same rate
    replayed, kept = info["train_rows"] - n_traces, n_traces // 2
    assert main(["traces", "--data", str(data), "--sid_map", str(tmp_path / "sid_map.json"), "--model", str(stage1),
                 "--output_dir", str(tmp_path / "half"), "--splits", "train", "--max_examples", str(kept)]
                + prompt_flags) == 0
    assert len(load_traces(tmp_path / "half", SIDS)) == kept
    assert main(["sft", "--stage", "2", "--model", str(stage1), "--traces", str(tmp_path / "half"), "--data", str(data),
                 "--output_dir", str(tmp_path / "sft2_half")] + common) == 0
    half = json.loads((tmp_path / "sft2_half" / "final" / "genrec_model.json").read_text())
    assert half["train_rows"] == kept + round(replayed * kept / n_traces)
    # genrec_model.json (genrec/model_folder.py): stage 1 says direct, stage 2 its traces' layout and budget
    from genrec.traces.budget import traces_block_budget

    info1 = json.loads((stage1 / "genrec_model.json").read_text())
    assert (info1["stage"], info1["layout"], info1["base"]) == ("sft1", "direct", str(tiny_model_dir()))
    assert (info["stage"], info["layout"], info["base"]) == ("sft2", "coarse", str(stage1))  # the traces' default layout
    assert info["max_block_tokens"] == traces_block_budget(tmp_path / "tr")[0]
    assert not list(tmp_path.glob("sft*/.final*")), "no temporary folder left behind"
    assert PromptConfig.load(final) == PromptConfig.load(tmp_path / "tr")
    assert PromptConfig.load(final).history_format == PromptConfig.load(stage1).history_format == "sid"
    assert SIDMap.load(final).item_to_codes == SIDS.item_to_codes
    _, tok1 = load_model_and_tokenizer(stage1)
    _, tok2 = load_model_and_tokenizer(final)
    assert tok1.get_vocab() == tok2.get_vocab()
    # Traces written with other prompt settings than the stage-1 model's: one clear error, no training.
    assert main(["traces", "--data", str(data), "--sid_map", str(tmp_path / "sid_map.json"), "--model", str(stage1),
                 "--output_dir", str(tmp_path / "tr_both"), "--splits", "train"]) == 0
    assert main(["sft", "--stage", "2", "--model", str(stage1), "--traces", str(tmp_path / "tr_both"),
                 "--output_dir", str(tmp_path / "sft2b")] + common) == 1
    err = capsys.readouterr().err
    assert "history_format: model 'sid' vs traces 'both'" in err and not (tmp_path / "sft2b" / "final").exists()

    # A real SFT output given the wrong layout: `genrec rl` and `genrec evaluate` stop with a one-line error before
    # loading the model.
    def one_line_error(argv: list[str], expected: str) -> None:
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 2 and expected in err[0] and err[1].startswith("(set GENREC_DEBUG=1"), err

    rl_common = ["--data", str(data), "--sid_map", str(tmp_path / "sid_map.json"), "--output_dir",
                 str(tmp_path / "rl"), "--use_cpu", "true", "--report_to", "none"]
    one_line_error(["rl", "--model", str(stage1), *rl_common], "a stage-1 model (layout 'direct' in genrec_model.json)")
    one_line_error(["rl", "--model", str(final), "--layout", "blocks_first", *rl_common],
                   "the model was trained on the 'coarse' layout")
    one_line_error(["rl", "--model", str(final), "--layout", "direct", *rl_common], "--layout direct is for stage-1")
    ev_common = ["--data", str(data), "--output_dir", str(tmp_path / "ev"), "--baselines", "", "--progress", "false"]
    one_line_error(["evaluate", "--model", str(stage1), "--layout", "interleaved", *ev_common],
                   "it needs --layout direct (got 'interleaved')")
    one_line_error(["evaluate", "--model", f"{stage1},{final}", "--layout", "direct,blocks_first", *ev_common],
                   "the model was trained on the 'coarse' layout")
    assert not (tmp_path / "rl").exists() and not (tmp_path / "ev" / "eval_report.json").exists()


def test_sid_weighted_loss_on_hand_built_logits():
    from genrec.sft import sid_weighted_loss

    class Out:
        logits = torch.log_softmax(torch.tensor([[[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0],
                                                  [0.0, 0.0, 0.0, 0.0]]]), dim=-1)

    labels = torch.tensor([[-100, 1, 3, 0]])  # targets of positions 0..2 after the shift: 1, 3 (a SID id), 0
    ce = -Out.logits[0, torch.arange(3), torch.tensor([1, 3, 0])]
    plain = sid_weighted_loss([3], 1.0)(Out, labels)
    assert plain.item() == pytest.approx(ce.mean().item())
    assert plain.item() == pytest.approx(torch.nn.functional.cross_entropy(Out.logits[0, :3], labels[0, 1:]).item())
    weighted = sid_weighted_loss([3], 4.0)(Out, labels)
    assert weighted.item() == pytest.approx(((ce[0] + 4 * ce[1] + ce[2]) / 6).item())
    # num_items_in_batch (tokens of the whole step, gradient accumulation): scaled by this batch's share
    assert sid_weighted_loss([3], 1.0)(Out, labels, num_items_in_batch=6).item() == pytest.approx(ce.sum().item() / 6)
    # ... and with weights, the step's total weight divides this batch's weighted sum
    assert sid_weighted_loss([3], 4.0).target_weights(labels).tolist() == [[1.0, 4.0, 1.0]]
    assert sid_weighted_loss([3], 4.0)(Out, labels, num_items_in_batch=12).item() == pytest.approx(
        ((ce[0] + 4 * ce[1] + ce[2]) / 12).item())


def test_sid_loss_weight_trains_the_sid_tokens_faster(tmp_path):
    """Stage 2 on the same traces and seed: with SID targets weighted 8x the model's cross-entropy on the SID
    tokens of the training rows ends lower than with the plain token mean."""
    _, tok = load_model_and_tokenizer(tiny_model_dir())
    pc, ds = tiny_trace_rows(tmp_path / "tr", tok)
    sid_ids = torch.tensor(tok.convert_tokens_to_ids(SIDS.all_tokens()))

    def sid_ce(final) -> float:
        model, tk = load_model_and_tokenizer(final)
        total, n = 0.0, 0
        with torch.no_grad():
            for row in ds.select(range(32)):
                p = tk(row["prompt"])["input_ids"]
                ids = torch.tensor([p + tk(row["prompt"] + row["completion"])["input_ids"][len(p):]])
                logp = torch.log_softmax(model(ids).logits[0, :-1], -1)
                tgt = ids[0, 1:]
                keep = torch.isin(tgt, sid_ids) & (torch.arange(len(tgt)) >= len(p) - 1)
                total += -logp[keep.nonzero().flatten(), tgt[keep]].sum().item()
                n += int(keep.sum())
        return total / n

    ce = {}
    for weight in (1.0, 8.0):
        final = train_tiny_stage2(tmp_path / f"w{weight}", ds, pc, SFTStageConfig(stage=2, sid_loss_weight=weight), 25)
        ce[weight] = sid_ce(final)
    assert ce[8.0] < ce[1.0], ce
    with pytest.raises(ValueError, match="sid_loss_weight"):
        SFTStageConfig(stage=2, sid_loss_weight=0)


def test_a_step_split_into_length_balanced_micro_batches_trains_as_one_batch(tmp_path):
    """`--train_sampling_strategy batch_rebalance` with gradient accumulation (the CPU configs: less padding) must
    train the weights one batch of the same rows trains, with SID targets weighted and distillation on: each
    micro-batch's weighted sum is divided by the whole step's weight. The rows mix long reasoning rows and short
    SID-only rows, so the two micro-batches have different SID shares (a per-micro-batch mean would differ)."""
    from datasets import Dataset

    _, tok = load_model_and_tokenizer(tiny_model_dir())
    pc, ds = tiny_trace_rows(tmp_path / "tr", tok)
    long_rows = ds.select(range(4)).to_dict()
    rows = Dataset.from_dict({
        "prompt": long_rows["prompt"] * 2,
        "completion": long_rows["completion"] + ["".join(SIDS.tokens(ex.target)) for ex in REC.train[:4]]})
    stage = SFTStageConfig(stage=2, sid_loss_weight=16.0, distill_weight=0.5)
    weights = {}
    for name, batch, accum, sampling in (("one", 8, 1, "random"), ("split", 4, 2, "batch_rebalance")):
        args = GenrecSFTConfig(output_dir=str(tmp_path / name), max_steps=1, per_device_train_batch_size=batch,
                               gradient_accumulation_steps=accum, train_sampling_strategy=sampling, optim="sgd",
                               learning_rate=0.5, max_grad_norm=0.0, warmup_steps=0, lr_scheduler_type="constant",
                               save_strategy="no", report_to="none", disable_tqdm=True, seed=0)
        final = train_sft(tiny_model_dir(), SIDS, rows, args, stage=stage, prompt_cfg=pc)
        weights[name] = load_model_and_tokenizer(final)[0].state_dict()
    start = load_model_and_tokenizer(tiny_model_dir())[0].state_dict()
    moved = max((weights["one"][k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-3  # the step changed the weights
    for k in start:
        assert torch.allclose(weights["split"][k], weights["one"][k], atol=1e-5 * max(1.0, moved)), k
    # The step's divisor is its total loss weight (SID targets x16), so one batch keeps the weighted mean.
    from genrec.sft import GenrecSFTTrainer, sid_weighted_loss

    sid_ids = tok.convert_tokens_to_ids(SIDS.all_tokens())
    loss_func = sid_weighted_loss(sid_ids, 16.0)
    model = load_model_and_tokenizer(tiny_model_dir())[0]
    trainer = GenrecSFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tok, sid_loss=loss_func)
    batches = list(trainer.get_train_dataloader())
    assert len(batches) == 2
    total = trainer._get_num_items_in_batch(batches, torch.device("cpu"))
    labels = [b["labels"] for b in batches]
    assert total.item() == pytest.approx(sum(float(loss_func.target_weights(x).sum()) for x in labels))
    tokens = sum(int(x[:, 1:].ne(-100).sum()) for x in labels)
    assert tokens < total.item()  # 16x on the SID targets


def test_full_logits_loss_trains_like_trls_fused_lm_head(tmp_path):
    """--loss_impl full (the CPU default) is TRL's loss computed from the full logits: the same seed and rows train
    the same weights as TRL's fused LM head."""
    from genrec.sft import full_logits_loss

    _, tok = load_model_and_tokenizer(tiny_model_dir())
    pc, ds = tiny_trace_rows(tmp_path / "tr", tok)
    weights = {}
    for impl in ("fused", "full"):
        args = GenrecSFTConfig(output_dir=str(tmp_path / impl), max_steps=6, per_device_train_batch_size=8,
                               learning_rate=5e-3, logging_steps=2, save_strategy="no", report_to="none",
                               disable_tqdm=True, seed=0, bf16=False)  # fp32: bf16 rounds the two orders apart
        final = train_sft(tiny_model_dir(), SIDS, ds, args, stage=SFTStageConfig(stage=2, loss_impl=impl),
                          prompt_cfg=pc)
        model, _ = load_model_and_tokenizer(final)
        weights[impl] = torch.cat([p.detach().flatten() for p in model.parameters()])
    start = torch.cat([p.detach().flatten() for p in load_model_and_tokenizer(tiny_model_dir())[0].parameters()])
    assert not torch.allclose(weights["full"], start)  # it trained
    assert torch.allclose(weights["fused"], weights["full"], atol=1e-4, rtol=1e-3)
    assert full_logits_loss("full") and not full_logits_loss("fused")
    assert full_logits_loss("auto") == (not torch.cuda.is_available())
    with pytest.raises(ValueError, match="loss_impl"):
        SFTStageConfig(stage=2, loss_impl="chunked")


def test_max_steps_cap_cuts_an_epoch_budget_and_leaves_a_smaller_one(tmp_path):
    data = write_tiny_data_dir(tmp_path / "data")
    SIDS.save(tmp_path / "sid_map.json")
    base = ["sft", "--stage", "1", "--model", str(tiny_model_dir()), "--sid_map", str(tmp_path / "sid_map.json"),
            "--data", str(data), "--stage1_tasks", "item2sid", "--per_device_train_batch_size", "4",
            "--num_train_epochs", "3", "--save_steps", "1000", "--eval_valid", "false"] + QUIET

    uncapped, capped = tmp_path / "uncapped", tmp_path / "capped"
    assert main(base + ["--output_dir", str(uncapped), "--max_steps_cap", "0"]) == 0
    rows = json.loads((uncapped / "final" / "genrec_model.json").read_text())["train_rows"]
    full = 3 * -(-rows // 4)  # 3 epochs of ceil(rows / 4) batches
    assert _global_step(uncapped) == full > 5
    assert main(base + ["--output_dir", str(capped), "--max_steps_cap", "5"]) == 0
    assert _global_step(capped) == 5
    # a cap above the epoch budget changes nothing
    assert main(base + ["--output_dir", str(tmp_path / "loose"), "--max_steps_cap", str(full + 10)]) == 0
    assert _global_step(tmp_path / "loose") == full
    with pytest.raises(ValueError, match="max_steps_cap"):
        SFTStageConfig(max_steps_cap=-1)


def test_a_cap_that_leaves_under_two_epochs_says_so(tmp_path, caplog):
    """The cap's warning fires when the capped budget is under FEW_EPOCHS epochs (ml-100k's stage 1: 1.7), not at
    amazon's 5 or when the cap does not bind; the cap itself applies either way."""
    from genrec.sft import FEW_EPOCHS, GenrecSFTConfig, cap_epoch_budget

    def capped(epochs: float, cap: int) -> tuple[int, bool]:
        args = GenrecSFTConfig(output_dir=str(tmp_path), report_to="none", num_train_epochs=epochs, max_steps=-1,
                               per_device_train_batch_size=4, gradient_accumulation_steps=1)
        caplog.clear()
        with caplog.at_level("WARNING", logger="genrec.sft"):
            cap_epoch_budget(args, rows=400, cap=cap)  # 100 steps per epoch
        return args.max_steps, any("first thing to raise" in r.message for r in caplog.records)

    assert FEW_EPOCHS == 2.0
    assert capped(10, 170) == (170, True)  # 1.7 epochs
    assert capped(10, 500) == (500, False)  # 5 epochs
    assert capped(10, 2000) == (-1, False)  # 10 epochs fit under the cap: not capped


def test_sequence_rows_sample_keeps_whole_rows_in_order_by_seed():
    """`keep`: a seeded sample of the windows, each row exactly as the full build writes it, in the full order."""
    from genrec.sft import sequence_rows, sequence_window_list

    _, tok = load_model_and_tokenizer(tiny_model_dir())
    cfg = PromptConfig(history_format="sid", reasoning=False)
    full = sequence_rows(REC.catalog, SIDS, REC.train, tok, cfg)
    n = len(full["input_ids"])
    assert n == len(sequence_window_list(REC.train, SIDS, cfg)) > 4
    a = sequence_rows(REC.catalog, SIDS, REC.train, tok, cfg, keep=n // 2, seed=1)
    assert len(a["input_ids"]) == n // 2
    rows = iter(zip(full["input_ids"], full["completion_mask"], full["user"]))
    assert all(row in rows for row in zip(a["input_ids"], a["completion_mask"], a["user"]))  # whole rows, in order
    assert sequence_rows(REC.catalog, SIDS, REC.train, tok, cfg, keep=n // 2, seed=1) == a
    assert sequence_rows(REC.catalog, SIDS, REC.train, tok, cfg, keep=n // 2, seed=2)["input_ids"] != a["input_ids"]
    assert sequence_rows(REC.catalog, SIDS, REC.train, tok, cfg, keep=n, seed=1) == full  # nothing to leave out


def test_row_budget_builds_only_the_rows_a_step_cap_reaches(tmp_path):
    """Stage 1 on more `sequence` rows than --max_steps_cap x rows per step can reach builds a seeded sample of
    exactly that many and trains one pass over it: the same steps, not minutes of rows the trainer never draws."""
    from trl import SFTConfig

    from genrec.sft import row_budget, sequence_window_list

    args = SFTConfig(output_dir=str(tmp_path / "x"), per_device_train_batch_size=4, gradient_accumulation_steps=4,
                     num_train_epochs=10, report_to=[], use_cpu=True, bf16=False)
    assert row_budget(args, 5) == 80 and row_budget(args, 0) == 0
    args.num_train_epochs = 0.5  # half an epoch of 160 rows is the cap's 5 steps
    assert row_budget(args, 5) == 160
    args.max_steps = 7  # a step budget: the cap does not apply
    assert row_budget(args, 5) == 0

    data = write_tiny_data_dir(tmp_path / "data")
    SIDS.save(tmp_path / "sid_map.json")
    windows = len(sequence_window_list(REC.train, SIDS, PromptConfig(history_format="sid", reasoning=False)))
    assert windows > 8  # the test's premise: a cap of 2 steps of 4 rows reaches fewer rows than there are
    out = tmp_path / "capped"
    assert main(["sft", "--stage", "1", "--model", str(tiny_model_dir()), "--sid_map", str(tmp_path / "sid_map.json"),
                 "--data", str(data), "--stage1_tasks", "sequence", "--history_format", "sid",
                 "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--num_train_epochs", "3",
                 "--max_steps_cap", "2", "--save_steps", "1000", "--eval_valid", "false", "--output_dir", str(out)]
                + QUIET) == 0
    assert json.loads((out / "final" / "genrec_model.json").read_text())["train_rows"] == 8
    assert _global_step(out) == 2


def _global_step(out: Path) -> int:
    """Steps trained, from the trainer state saved with the last checkpoint."""
    states = sorted(out.glob("checkpoint-*/trainer_state.json"))
    return json.loads(states[-1].read_text())["global_step"]


def test_cpu_bf16_is_autocast_over_fp32_weights_where_the_cpu_has_native_bf16(tmp_path):
    """On a CPU-only machine bf16 is off by default; `cpu_bf16` (stage 2's config) follows the CPU's native bf16
    support, as autocast (use_cpu) over fp32 weights; an explicit --bf16 wins; a trained folder keeps fp32 weights."""
    from genrec.modeling import cpu_native_bf16, weights_dtype

    if torch.cuda.is_available():
        pytest.skip("CPU-only default")
    assert not GenrecSFTConfig(output_dir=str(tmp_path / "a"), report_to="none").bf16  # fp32 unless asked
    auto = GenrecSFTConfig(output_dir=str(tmp_path / "a"), report_to="none", cpu_bf16=True)
    assert auto.bf16 == cpu_native_bf16()
    assert auto.use_cpu == auto.bf16
    off = GenrecSFTConfig(output_dir=str(tmp_path / "b"), report_to="none", bf16=False, cpu_bf16=True)
    assert not off.bf16 and not off.use_cpu
    on = GenrecSFTConfig(output_dir=str(tmp_path / "c"), report_to="none", bf16=True)
    assert on.use_cpu and weights_dtype(on) == torch.float32

    _, tok = load_model_and_tokenizer(tiny_model_dir())
    pc, ds = tiny_trace_rows(tmp_path / "tr", tok)
    args = GenrecSFTConfig(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=8,
                           save_strategy="no", report_to="none", disable_tqdm=True, seed=0, bf16=True)
    final = train_sft(tiny_model_dir(), SIDS, ds, args, stage=SFTStageConfig(stage=2), prompt_cfg=pc)
    from safetensors import safe_open

    with safe_open(str(final / "model.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}


def test_resumed_run_continues_its_tensorboard_log(tmp_path):
    """A run killed after its last checkpoint and resumed logs into the same TensorBoard folder, and the steps it
    trains again replace the first attempt's (one value per step), instead of a second, overlapping run."""
    import shutil
    import time

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = write_tiny_data_dir(tmp_path / "data")
    SIDS.save(tmp_path / "sid_map.json")
    out = tmp_path / "sft1"
    argv = ["sft", "--stage", "1", "--model", str(tiny_model_dir()), "--sid_map", str(tmp_path / "sid_map.json"),
            "--data", str(data), "--output_dir", str(out), "--per_device_train_batch_size", "8",
            "--learning_rate", "5e-3", "--max_steps", "8", "--save_steps", "4", "--logging_steps", "1",
            "--eval_valid", "false", "--report_to", "tensorboard", "--disable_tqdm", "true", "--seed", "0"]
    assert main(argv) == 0
    first = _losses(out / "checkpoint-8")
    shutil.rmtree(out / "checkpoint-8")  # killed after logging step 8, before its checkpoint and final folder
    shutil.rmtree(out / "final")
    time.sleep(1.1)  # transformers names a new log folder by the second
    assert main(argv + ["--resume", "true"]) == 0
    folders = [p for p in (out / "runs").iterdir() if any(p.glob("events.out.tfevents*"))]
    assert len(folders) == 1
    events = EventAccumulator(str(folders[0]), size_guidance={"scalars": 0})
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 9))
    assert [e.value for e in loss] == pytest.approx(first, rel=1e-6)


def test_tokenized_dataset_in_chunks_equals_the_rows_tokenized_at_once(tmp_path):
    """Stage 2 tokenizes its traces chunk by chunk into Arrow (memory); the rows and their order are unchanged."""
    from genrec.sft import tokenize_prompt_completion, tokenized_dataset

    _, tok = load_model_and_tokenizer(tiny_model_dir())
    _, ds = tiny_trace_rows(tmp_path / "tr", tok)
    rows = {**ds.select_columns(["prompt", "completion"]).to_dict(), "task": ["traces"] * len(ds)}
    assert len(ds) > 7
    whole = tokenize_prompt_completion(rows, tok)
    for chunk in (3, 7, len(ds), 10 * len(ds)):
        got = tokenized_dataset(rows, tok, chunk=chunk)
        assert got.to_dict() == whole, chunk
    empty = tokenized_dataset({"prompt": [], "completion": [], "task": []}, tok)
    assert len(empty) == 0


def test_training_dropout_is_active_in_train_mode_only_and_leaves_the_saved_model_plain(tmp_path):
    from genrec.sft import add_training_dropout

    model, tok = load_model_and_tokenizer(tiny_model_dir())
    ids = tok("history: <a_0><b_1> then", return_tensors="pt").input_ids
    keys = set(model.state_dict())
    model.eval()
    plain = model(ids).logits
    handles = add_training_dropout(model, 0.3)
    assert len(handles) == 1 + 2 * model.config.num_hidden_layers  # embeddings + o_proj, down_proj per layer
    assert torch.equal(model(ids).logits, plain)  # eval mode: the hooks pass outputs through
    model.train()
    torch.manual_seed(0)
    a = model(ids).logits
    b = model(ids).logits
    assert not torch.allclose(a, b) and not torch.allclose(a, plain)
    assert set(model.state_dict()) == keys  # hooks add no weights: the saved folder is a plain model
    with pytest.raises(ValueError, match="--dropout"):
        SFTStageConfig(dropout=1.0)
    no_mlp = torch.nn.Module()  # attention but no MLP output projection: a clear error, not a silent half
    no_mlp.get_input_embeddings = lambda: model.get_input_embeddings()
    no_mlp.self_attn = model.model.layers[0].self_attn
    with pytest.raises(ValueError, match="found no mlp.down_proj modules"):
        add_training_dropout(no_mlp, 0.1)

    # through the CLI: trains, and the saved model reloads as a plain transformers model without the hooks
    data = write_tiny_data_dir(tmp_path / "data")
    SIDS.save(tmp_path / "sid_map.json")
    out = tmp_path / "sft1"
    assert main(["sft", "--stage", "1", "--model", str(tiny_model_dir()), "--sid_map", str(tmp_path / "sid_map.json"),
                 "--data", str(data), "--output_dir", str(out), "--dropout", "0.2", "--learning_rate", "5e-3",
                 "--per_device_train_batch_size", "8", "--logging_steps", "5", "--max_steps", "20", "--save_steps",
                 "20", "--eval_valid", "false"] + QUIET) == 0
    losses = _losses(out / "checkpoint-20")
    assert losses[-1] < losses[0]
    trained, _ = load_model_and_tokenizer(out / "final")
    trained.train()
    assert torch.equal(trained(ids).logits, trained(ids).logits)  # no dropout travels with the saved model
