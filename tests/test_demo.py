"""The README's first command, `genrec demo`, on a miniature market: every stage runs and hands over to the next."""

from __future__ import annotations

import json

import pytest

from genrec.cli import run_command


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path):
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--num_jobs", "120", "--num_users", "60", "--sft1_steps", "4", "--sft2_steps", "4",
            "--rl_steps", "1", "--rl_prompts", "4", "--eval_users", "8", "--num_beams", "4"]
    run_command("demo", argv)
    report = json.loads((out / "eval" / "eval_report.json").read_text())
    summary = json.loads((out / "demo_summary.json").read_text())
    assert set(summary["stage_seconds"]) >= {"synth", "fit-tokenizer", "sft1", "sft2", "rl", "evaluate"}
    text = json.dumps(report)
    for method in ("mostpop", "recent"):
        assert method in text
    assert (out / "eval" / "report.md").exists()
    # Every generated recommendation is a real catalog item.
    assert '"invalid": 0' in text.replace(".0", "")
    # A second call finds every stage done and runs none of them again.
    run_command("demo", argv)
    assert json.loads((out / "demo_summary.json").read_text())["stage_seconds"] == {}
