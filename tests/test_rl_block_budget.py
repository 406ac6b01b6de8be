"""Auto thinking-block budget (max_block_tokens 0) from the block lengths `genrec traces` records, for `genrec rl`
and `genrec evaluate`, on a tiny real traces folder (grounded teacher, tiny model tokenizer)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from trl import TrlParser

from genrec.data.errors import DataFormatError
from genrec.modeling import load_model_and_tokenizer
from genrec.prompts import PromptConfig
from genrec.traces.build import TraceConfig, make_traces
from genrec.traces.dataset import load_traces
from tests.helpers_tiny import (copy_tiny_model, tiny_model_dir, tiny_recdata, tiny_sid_map, write_tiny_data_dir,
                          write_tiny_tokenizer_dir)
from rl.config import DEFAULT_MAX_BLOCK_TOKENS, SAPOConfig, traces_block_budget

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> Path:
    _, tok = load_model_and_tokenizer(tiny_model_dir())
    out = tmp_path_factory.mktemp("traces") / "tr"
    return make_traces(tiny_recdata(), tiny_sid_map(), tok, TraceConfig(output_dir=str(out)), PromptConfig())


def _block_lengths(traces: Path) -> list[list[int]]:
    """Token count of every block of every trace row, per level, measured here from the saved rows."""
    _, tok = load_model_and_tokenizer(tiny_model_dir())
    k = tiny_sid_map().num_levels
    out: list[list[int]] = [[] for _ in range(k)]
    for split in ("train", "valid"):
        for blocks in load_traces(traces, tiny_sid_map(), split)["blocks"]:
            for lvl, text in enumerate(blocks):
                out[lvl].append(len(tok.encode(" " + text, add_special_tokens=False)) if text else 0)
    return out


def _sapo(*flags: str) -> SAPOConfig:
    (args,) = TrlParser((SAPOConfig,)).parse_args_and_config(["--output_dir", "/tmp/unused", "--use_cpu", "true", *flags])
    return args


def test_budget_covers_95_percent_of_every_level(traces):
    budget, p95 = traces_block_budget(traces, num_levels=2)
    lengths = _block_lengths(traces)
    assert budget == max(p95) and len(p95) == 2
    for lvl, ns in enumerate(lengths):
        assert sum(n <= p95[lvl] for n in ns) >= 0.95 * len(ns)
        assert p95[lvl] <= max(ns)
    longest_level = max(range(2), key=lambda lvl: sorted(lengths[lvl])[len(lengths[lvl]) // 2])
    assert budget == p95[longest_level]  # the level with the long blocks sets it, not the short dedup level
    assert budget != DEFAULT_MAX_BLOCK_TOKENS  # measured from the traces, not the fixed fallback
    assert traces_block_budget(traces / "traces_config.json")[0] == budget  # the file itself works too


def test_sapo_config_auto_explicit_and_fallback(traces):
    auto = _sapo()
    assert auto.max_block_tokens_auto and auto.max_block_tokens == DEFAULT_MAX_BLOCK_TOKENS  # usable before resolving
    budget = traces_block_budget(traces)[0]
    msg = auto.resolve_block_budget(traces, num_levels=2)
    assert auto.max_block_tokens == budget and "p95" in msg
    assert auto.max_completion_length >= 2 * (budget + 3) + 1
    short = _sapo("--max_completion_length", "24")
    msg = short.resolve_block_budget(traces, num_levels=2)
    assert short.max_completion_length == 2 * (budget + 3) + 1 and "raised from 24" in msg
    explicit = _sapo("--max_block_tokens", "7", "--max_completion_length", "24")
    explicit.resolve_block_budget(traces, num_levels=2)
    assert (explicit.max_block_tokens, explicit.max_completion_length) == (7, 24)
    no_traces = _sapo()
    no_traces.resolve_block_budget(None, num_levels=2)
    assert no_traces.max_block_tokens == DEFAULT_MAX_BLOCK_TOKENS
    with pytest.raises(ValueError, match="max_block_tokens must be >= 1, or 0 for auto"):
        _sapo("--max_block_tokens", "-1")


def test_bad_traces_give_clear_errors(traces, tmp_path):
    with pytest.raises(FileNotFoundError, match="output folder of `genrec traces`"):
        traces_block_budget(tmp_path / "nope")
    with pytest.raises(ValueError, match="the traces have 2 SID levels but the SID map has 3"):
        traces_block_budget(traces, num_levels=3)
    bad = tmp_path / "bad"
    bad.mkdir()
    info = json.loads((traces / "traces_config.json").read_text())
    (bad / "traces_config.json").write_text(json.dumps({k: v for k, v in info.items() if k != "block_tokens"}))
    with pytest.raises(DataFormatError, match="field 'block_tokens'.*re-run `genrec traces`"):
        traces_block_budget(bad)
    (bad / "traces_config.json").write_text(json.dumps({**info, "block_tokens": [{"max": 3, "mean": 2.0}]}))
    with pytest.raises(DataFormatError, match="level 0: expected a non-negative number 'p95'"):
        traces_block_budget(bad)
    (bad / "traces_config.json").write_text('{"block_tokens": [\n  {"p95": 3},,\n]}')
    with pytest.raises(DataFormatError, match="line 2: not valid JSON"):
        traces_block_budget(bad)


def test_eval_config_auto_budget(traces):
    from eval.config import EvalConfig

    assert EvalConfig(data="d").max_block_tokens == 48
    assert EvalConfig(data="d", traces=str(traces)).max_block_tokens == traces_block_budget(traces)[0]
    assert EvalConfig(data="d", traces=str(traces), max_block_tokens=9).max_block_tokens == 9
    with pytest.raises(ValueError, match="0 for auto"):
        EvalConfig(data="d", max_block_tokens=-3)


def test_shipped_rl_configs_are_auto():
    from genrec.commands import rl

    for name in ("rl_sapo", "rl_grpo", "rl_grpo_prefix", "rl_sapo_gated", "rl_grpo_beam", "bench_rl"):
        _, _, args = TrlParser(rl.CONFIG_CLASSES).parse_args_and_config(
            ["--config", str(REPO / "configs" / f"{name}.yaml"), "--output_dir", "/tmp/unused", "--use_cpu", "true"])
        assert args.max_block_tokens_auto, name
        # the fallback budget fits the shipped completion length for K = 4 levels (the synthetic market)
        assert args.max_completion_length >= 4 * (args.max_block_tokens + 3) + 1, name


def test_rl_command_uses_the_traces_budget(traces, tmp_path, capsys):
    from genrec.cli import main

    copy_tiny_model(tmp_path / "model")
    write_tiny_data_dir(tmp_path / "data")
    write_tiny_tokenizer_dir(tmp_path / "tok")
    shutil.copytree(traces, tmp_path / "traces")
    argv = ["rl", "--config", str(REPO / "configs" / "rl_sapo.yaml"), "--model", str(tmp_path / "model"),
            "--data", str(tmp_path / "data"), "--sid_map", str(tmp_path / "tok"), "--traces", str(tmp_path / "traces"),
            "--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--save_steps", "100", "--max_examples", "2",
            "--num_generations", "2", "--per_device_train_batch_size", "2", "--use_cpu", "true",
            "--report_to", "none", "--disable_tqdm", "true"]
    assert main(argv) == 0
    budget = traces_block_budget(traces)[0]
    info = json.loads((tmp_path / "out" / "final" / "genrec_model.json").read_text())
    assert info["max_block_tokens"] == budget and info["stage"] == "rl" and info["layout"] == "interleaved"
    # ... and evaluation with the auto budget and no --traces reads it from the folder
    from genrec.model_folder import load_info, resolve_block_budget

    assert resolve_block_budget(load_info(tmp_path / "out" / "final"), 0) == budget
    assert f"max_block_tokens {budget} (auto" in capsys.readouterr().err
    bad = argv[:argv.index("--traces") + 1] + [str(tmp_path / "missing")] + argv[argv.index("--traces") + 2:]
    assert main(bad) == 1
    assert "--traces expects the output folder of `genrec traces`" in capsys.readouterr().err
