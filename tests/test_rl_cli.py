"""`genrec rl` end to end on tiny files: the shipped YAML configs parse, a run writes <output_dir>/final and
checkpoints, a second run resumes from the checkpoint, and bad input gives a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers_tiny import copy_tiny_model, write_tiny_data_dir, write_tiny_tokenizer_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name,algorithm", [("rl_sapo", "sapo"), ("rl_grpo", "grpo"), ("rl_grpo_prefix", "grpo_prefix"),
                                            ("rl_sapo_gated", "sapo"), ("rl_grpo_beam", "grpo")])
def test_shipped_configs_parse(name, algorithm):
    from trl import TrlParser

    from genrec.commands import rl

    script, data_cfg, args = TrlParser(rl.CONFIG_CLASSES).parse_args_and_config(
        ["--config", str(REPO / "configs" / f"{name}.yaml"), "--output_dir", "/tmp/unused"]
    )
    assert args.algorithm == algorithm and args.loss_type == "grpo" and script.model
    assert args.rollouts == ("beam" if name in ("rl_sapo_gated", "rl_grpo_beam") else "sample")


def _args(tmp_path: Path, max_steps: int, algorithm: str = "sapo") -> list[str]:
    return [
        "rl", "--config", str(REPO / "configs" / "rl_sapo.yaml"),
        "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data"), "--sid_map", str(tmp_path / "tok"),
        "--output_dir", str(tmp_path / "out"), "--algorithm", algorithm, "--max_steps", str(max_steps),
        "--save_steps", "1", "--max_examples", "8", "--num_generations", "4", "--per_device_train_batch_size", "4",
        "--max_block_tokens", "4", "--max_completion_length", "24", "--use_cpu", "true", "--report_to", "none",
        "--disable_tqdm", "true",
    ]


def test_rl_command_trains_saves_and_resumes(tmp_path):
    from genrec.cli import main

    copy_tiny_model(tmp_path / "model")
    write_tiny_data_dir(tmp_path / "data")
    write_tiny_tokenizer_dir(tmp_path / "tok")
    assert main(_args(tmp_path, 2)) == 0
    final = tmp_path / "out" / "final"
    for name in ("model.safetensors", "sid_map.json", "prompt_config.json", "genrec_model.json", "tokenizer.json"):
        assert (final / name).is_file(), name
    info = json.loads((final / "genrec_model.json").read_text())
    assert info["rl_algorithm"] == "sapo" and info["rl_steps"] == 2
    # the users whose targets RL trained on, for the evaluation to fit nothing on them
    assert info["rl_split"] in ("train", "valid") and len(info["rl_prompt_users"]) == len(set(info["rl_prompt_users"]))
    assert 0 < len(info["rl_prompt_users"]) <= 8 and info["rl_prompt_users"] == sorted(info["rl_prompt_users"])
    assert (tmp_path / "out" / "checkpoint-2").is_dir()
    # Same command with more steps resumes from checkpoint-2 instead of starting over: a marker written into that
    # checkpoint's log history must survive into checkpoint-3.
    state_file = tmp_path / "out" / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["log_history"][0]["loss"] = 123.0
    state_file.write_text(json.dumps(state))
    # A kill after step 2 could have logged step 3's rollouts (and torn a line) before checkpoint-3 existed: the
    # resumed run logs step 3 again, so those lines must go, and no (step, group) may appear twice.
    rollouts = tmp_path / "out" / "rollouts.jsonl"
    first_run = rollouts.read_text().splitlines()
    assert first_run and {json.loads(x)["step"] for x in first_run} <= {1, 2}
    with rollouts.open("a") as f:
        f.write(json.dumps({**json.loads(first_run[-1]), "step": 3, "user_id": "stale"}) + "\n" + '{"step": 3, "gro')
    assert main(_args(tmp_path, 3)) == 0
    records = [json.loads(x) for x in rollouts.read_text().splitlines()]
    assert records[: len(first_run)] == [json.loads(x) for x in first_run]
    assert all(r["user_id"] != "stale" for r in records) and 3 in {r["step"] for r in records}
    keys = [(r["step"], r["group"]) for r in records]
    assert len(keys) == len(set(keys))
    state = json.loads((tmp_path / "out" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3]
    assert state["log_history"][0]["loss"] == 123.0


def test_rl_command_errors_are_one_line(tmp_path, capsys):
    from genrec.cli import main

    assert main(["rl", "--output_dir", str(tmp_path / "o"), "--use_cpu", "true"]) == 1
    assert "--model is required" in capsys.readouterr().err
    (tmp_path / "m").mkdir()
    assert main(["rl", "--model", str(tmp_path / "m"), "--data", "x", "--output_dir", str(tmp_path / "o"),
                 "--use_cpu", "true"]) == 1
    err = capsys.readouterr().err
    assert "not a model folder, it has no config.json" in err  # an empty folder (genrec.checks.require_model_folder)
    (tmp_path / "m" / "config.json").write_text("{}")
    assert main(["rl", "--model", str(tmp_path / "m"), "--data", "x", "--output_dir", str(tmp_path / "o"),
                 "--use_cpu", "true"]) == 1
    err = capsys.readouterr().err
    assert "sid_map.json" in err and "SID map not found" in err
    # a model trained on another layout
    model = copy_tiny_model(tmp_path / "model")
    info = json.loads((model / "genrec_model.json").read_text())
    assert info["stage"] == "base" and "layout" not in info  # build-model output: any layout
    (model / "genrec_model.json").write_text(json.dumps({**info, "stage": "sft2", "layout": "blocks_first"}))
    write_tiny_tokenizer_dir(tmp_path / "tok")
    assert main(["rl", "--model", str(model), "--data", "x", "--sid_map", str(tmp_path / "tok"),
                 "--output_dir", str(tmp_path / "o"), "--use_cpu", "true"]) == 1
    assert "trained on the 'blocks_first' layout" in capsys.readouterr().err
    # a stage-1 model (SID tokens only) needs --layout direct, a stage-2 model must not get it
    (model / "genrec_model.json").write_text(json.dumps({**info, "stage": "sft1", "layout": "direct"}))
    assert main(["rl", "--model", str(model), "--data", "x", "--sid_map", str(tmp_path / "tok"),
                 "--output_dir", str(tmp_path / "o"), "--use_cpu", "true"]) == 1
    assert "needs --layout direct" in capsys.readouterr().err
    (model / "genrec_model.json").write_text(json.dumps({**info, "stage": "sft2", "layout": "interleaved"}))
    assert main(["rl", "--model", str(model), "--data", "x", "--sid_map", str(tmp_path / "tok"), "--layout", "direct",
                 "--output_dir", str(tmp_path / "o"), "--use_cpu", "true"]) == 1
    assert "--layout direct is for stage-1 models" in capsys.readouterr().err
