"""The README's first command, `genrec demo`, on a miniature market: every stage runs and hands over to the next."""

from __future__ import annotations

import json

from genrec.cli import run_command


def test_demo_runs_end_to_end_and_resumes(tmp_path):
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--num_jobs", "120", "--num_users", "60", "--sft1_epochs", "1", "--sft2_steps", "4",
            "--rl_steps", "1", "--rl_prompts", "4", "--eval_users", "8", "--num_beams", "4", "--sft_processes", "1"]
    run_command("demo", argv)
    report = json.loads((out / "eval" / "eval_report.json").read_text())
    summary = json.loads((out / "run_summary.json").read_text())
    assert set(summary["stage_seconds"]) >= {"synth", "fit-tokenizer", "sft1", "sft2", "rl", "evaluate"}
    results = report["results"]
    assert {"mostpop", "recent", "sasrec"} <= set(results)
    generative = [name for name in results if name.startswith("genrec")]
    models = [name for name in generative if not name.endswith(("+repeat", "+sasrec"))]
    assert len(models) == 3, results.keys()  # no-reasoning (sft1), reasoning (sft2), SAPO (rl)
    assert all(m + "+sasrec" in results for m in models)  # each also fused with the demo's SASRec
    assert report["meta"]["sasrec_prior"]["fit_users"] > 0  # its weight fitted on valid users (at most 200)
    for name in generative:
        for protocol, metrics in results[name].items():
            assert metrics["invalid"] == 0, (name, protocol)  # every recommendation is a catalog item
            assert 0.0 <= metrics["ndcg@10"] <= 1.0
    assert (out / "eval" / "report.md").exists()
    assert report["meta"]["config"]["batch_size"] == 32  # the demo's evaluation batch (its short prompts gain from it)
    # A second call finds every stage done and runs none of them again.
    run_command("demo", argv)
    assert json.loads((out / "run_summary.json").read_text())["stage_seconds"] == {}
