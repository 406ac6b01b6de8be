"""`genrec run`: the recipe end to end on a dataset folder (a miniature synthetic market here), resume, bad input."""

from __future__ import annotations

import json
import time

import pytest
import torch

from genrec.cli import main, run_command
from genrec.commands.run import RunConfig, auto_codebook_size, stage_flags
from genrec.data.config import DataConfig
from genrec.prompts import PromptConfig

TINY = ["--sft1_steps", "4", "--sft2_steps", "4", "--rl_steps", "1", "--rl_prompts", "4", "--eval_users", "8",
        "--num_beams", "4", "--sasrec_epochs", "2", "--sft_processes", "1"]


def test_run_end_to_end_resumes(tmp_path):
    data, out = tmp_path / "data", tmp_path / "run"
    run_command("synth", ["--out", str(data), "--num_jobs", "120", "--num_users", "60", "--seed", "0"])
    argv = ["--data", str(data), "--out", str(out), *TINY, "--max_history", "5"]
    run_command("run", argv)

    report = json.loads((out / "eval" / "eval_report.json").read_text())
    results = report["results"]
    assert {"mostpop", "recent", "sasrec"} <= set(results)
    generative = [name for name in results if name.startswith("genrec")]
    models = [name for name in generative if not name.endswith(("+repeat", "+sasrec"))]
    assert sorted(name.rsplit(":", 1)[1] for name in models) == ["rl", "sft1", "sft2"], generative
    # the repeat-prior rows re-rank each model's own beams (rows only when train targets repeat history items), the
    # '+sasrec' rows fuse them with the run's SASRec (sasrec is a baseline, so they are on)
    assert all(name[: -len("+repeat")] in generative for name in generative if name.endswith("+repeat"))
    assert [name[: -len("+sasrec")] for name in generative if name.endswith("+sasrec")] == models
    assert (len(generative) == 12) == (report["meta"]["repeat_prior"]["weight"] > 0)
    assert (out / "eval" / "sasrec" / "collab_prior.json").is_file()
    for name in generative:
        for protocol, metrics in results[name].items():
            assert metrics["invalid"] == 0, (name, protocol)
    assert report["meta"]["data_config"]["max_history"] == 5  # a data flag given once reaches the evaluation
    md = (out / "eval" / "report.md").read_text()
    assert all(m in md for m in ("mostpop", "recent", "sasrec", ":sft1", ":sft2", ":rl"))

    summary = json.loads((out / "run_summary.json").read_text())
    assert list(summary["stage_seconds"]) == ["fit-tokenizer", "build-model", "traces", "sft1", "sft2", "rl",
                                              "evaluate"]
    assert summary["status"] == "finished" and summary["peak_rss_mb"] > 0
    if summary["peak_memory_mb"] is not None:  # measured where /proc can be read: the process tree's peak, per stage
        ran = [s for s in summary["stages"] if s["status"] == "ran"]
        assert all(0 < s["peak_memory_mb"] <= summary["peak_memory_mb"] for s in ran)
    assert summary["codebook_size"] == auto_codebook_size(120) == 8
    stages = json.loads((out / "run_stages.json").read_text())
    assert "--max_history" in stages["sft1"]["argv"] and "--max_history" in stages["rl"]["argv"]
    assert "--history_format" not in stages["rl"]["argv"]  # rl takes no prompt flags (it reads the model's)

    # A second call finds every stage done and runs none of them.
    run_command("run", argv)
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["stage_seconds"] == {}
    assert {s["status"] for s in summary["stages"]} == {"skipped"}
    assert all(s["seconds_when_run"] is not None for s in summary["stages"])


def test_run_with_reasoned_history_trains_stage2_on_sequences(tmp_path):
    """The reasoned-history recipe through `genrec run`: traces, SFT 2 and evaluation all see history lines with their
    reasoning (one prompt config from traces to evaluation), and stage 2 trains on `sequence` rows only."""
    data, out = tmp_path / "data", tmp_path / "run"
    run_command("synth", ["--out", str(data), "--num_jobs", "120", "--num_users", "60", "--seed", "0"])
    run_command("run", ["--data", str(data), "--out", str(out), *TINY, "--skip_rl", "true", "--baselines", "",
                        "--sft2_tasks", "sequence", "--history_reasoning", "evidence", "--max_prompt_tokens", "2048"])
    assert PromptConfig.load(out / "sft2" / "final") == PromptConfig.load(out / "traces")
    assert PromptConfig.load(out / "sft2" / "final").history_reasoning == "evidence"
    argv = json.loads((out / "run_stages.json").read_text())["sft2"]["argv"]
    assert argv[argv.index("--stage2_tasks") + 1] == "sequence" and argv[argv.index("--replay_tasks") + 1] == ""
    eval_argv = json.loads((out / "run_stages.json").read_text())["evaluate"]["argv"]
    assert eval_argv[eval_argv.index("--level_weights") + 1] == "auto"
    results = json.loads((out / "eval" / "eval_report.json").read_text())["results"]
    assert sorted(n.rsplit(":", 1)[1] for n in results if not n.endswith("+repeat")) == ["sft1", "sft2"]
    assert all(m["invalid"] == 0 for r in results.values() for m in r.values())


def test_run_on_an_id_only_dataset(tmp_path):
    """No item file: the recipe still runs end to end, its SIDs from co-views and its prompts naming items by id."""
    data, out = tmp_path / "data", tmp_path / "run"
    run_command("synth", ["--out", str(data), "--num_jobs", "120", "--num_users", "60", "--seed", "0"])
    (data / "jobs-synth.item").unlink()
    run_command("run", ["--data", str(data), "--out", str(out), *TINY, "--skip_rl", "true", "--baselines", "sasrec"])
    assert json.loads((out / "tokenizer" / "tokenizer_config.json").read_text())["encoder"]["kind"] == "none"
    results = json.loads((out / "eval" / "eval_report.json").read_text())["results"]
    assert "sasrec" in results and any(name.endswith(":sft2") for name in results)
    assert all(m["invalid"] == 0 for r in results.values() for m in r.values())
    from datasets import load_from_disk

    row = load_from_disk(str(out / "traces"))["train"][0]
    first_item = row["prompt"].split("1. ", 1)[1].split("\n", 1)[0]
    assert first_item.split()[-1].startswith("J")  # the history line names the item by its id


def test_run_with_items_missing_from_the_item_file(tmp_path):
    """RecBole keeps interactions whose item lacks a `.item` row, and items with empty text; so does the recipe: the
    tokenizer gives those items SIDs (named by their id) and every stage runs on the same catalog."""
    data, out = tmp_path / "data", tmp_path / "run"
    run_command("synth", ["--out", str(data), "--num_jobs", "120", "--num_users", "60", "--seed", "0"])
    lines = (data / "jobs-synth.item").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    missing = [r.split("\t", 1)[0] for r in rows[::3]]
    blank = rows[1].split("\t", 1)[0]
    kept = [r if not r.startswith(blank + "\t") else blank + "\t" * header.count("\t") for r in rows[1::3] + rows[2::3]]
    (data / "jobs-synth.item").write_text("\n".join([header, *kept]) + "\n", encoding="utf-8")
    run_command("run", ["--data", str(data), "--out", str(out), *TINY, "--skip_rl", "true", "--baselines", ""])
    sid_map = json.loads((out / "tokenizer" / "sid_map.json").read_text())
    text = json.dumps(sid_map)
    viewed = {line.split("\t")[1] for line in (data / "jobs-synth.inter").read_text().splitlines()[1:]}
    assert [item for item in missing if item in viewed] and blank in viewed  # the test's own premise
    assert all(f'"{item}"' in text for item in [*missing, blank] if item in viewed)
    results = json.loads((out / "eval" / "eval_report.json").read_text())["results"]
    assert any(name.endswith(":sft2") for name in results)
    assert all(m["invalid"] == 0 for r in results.values() for m in r.values())


@pytest.mark.parametrize("argv, message", [
    (["--data", "{tmp}/missing"], "no such dataset folder"),
    (["--data", "{tmp}", "--sft2_steps", "-1"], "--sft2_steps must be >= 0"),
    (["--data", "{tmp}", "--sft2_tasks", "sequence"], "set --history_reasoning evidence"),
    (["--data", "{tmp}", "--sft2_tasks", "chains"], "--sft2_tasks must be traces and/or sequence"),
    (["--data", "{tmp}", "--sft1_steps", "0", "--sft1_epochs", "0"], "--sft1_epochs must be > 0"),
    (["--data", "{tmp}/bad"], "timestamp"),
    (["--data", "{tmp}", "--tokenizer_config", "{tmp}/nope.yaml"], "nope.yaml: config file not found"),
    (["--data", "{tmp}", "--level_weights", "1,half"], "--level_weights: expected 'auto', 'none' or comma-separated"),
])
def test_run_bad_input_is_one_line_error(tmp_path, capsys, argv, message):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "bad.inter").write_text("user_id:token\titem_id:token\nu1\ti1\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["run", *argv, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("genrec run: error: ") and message in err.splitlines()[0], err
    assert not (tmp_path / "out" / "run_summary.json").exists()


def test_tokenizer_config_reaches_fit_tokenizer(tmp_path):
    """`--tokenizer_config` becomes fit-tokenizer's --config (the run's codebook size after it, so it still wins)."""
    from genrec.cli import parse_command
    from genrec.commands.run import build_stages

    yaml_file = tmp_path / "tok.yaml"
    yaml_file.write_text("encoder: tfidf\ncollab_dim: 16\nlevels: 2\n")
    cfg = RunConfig(data=str(tmp_path), out=str(tmp_path / "out"), tokenizer_config=str(yaml_file))
    stage = build_stages(cfg, DataConfig(), PromptConfig(), codebook_size=8)[0]
    assert stage.key == "fit-tokenizer" and stage.argv[:2] == ["--config", str(yaml_file)]
    parsed = parse_command("fit-tokenizer", stage.argv)
    tok_cfg = next(c for c in parsed if type(c).__name__ == "TokenizerConfig")
    assert (tok_cfg.encoder, tok_cfg.collab_dim, tok_cfg.levels, tok_cfg.codebook_size) == ("tfidf", 16, 2, 8)
    default = build_stages(RunConfig(data=str(tmp_path), out=str(tmp_path / "o")), DataConfig(), PromptConfig(), 8)
    assert "--config" not in default[0].argv


def test_stage_flags_forward_shared_configs_generically():
    data_cfg, prompt_cfg = DataConfig(collapse_repeats=False, item_text_fields=["title", "company"]), PromptConfig(
        history_format="sid")
    flags = stage_flags("traces", ["--data", "d"], data_cfg, prompt_cfg)
    assert flags[:2] == ["--data", "d"]
    assert flags[2:] == ["--collapse_repeats", "false", "--item_text_fields", "title", "company",
                         "--history_format", "sid"]
    # rl accepts DataConfig but not PromptConfig; every forwarded command line parses.
    rl_flags = stage_flags("rl", [], data_cfg, prompt_cfg)
    assert "--collapse_repeats" in rl_flags and "--history_format" not in rl_flags
    from genrec.cli import parse_command

    parsed = parse_command("traces", flags)
    assert parsed[1].history_format == "sid" and parsed[2].item_text_fields == ["title", "company"]
    assert parsed[2].collapse_repeats is False


def test_auto_codebook_size_and_budget_checks():
    assert [auto_codebook_size(n) for n in (50, 600, 3000, 7047, 100_000, 10**7, 10**9)] == [8, 8, 16, 16, 64, 256, 256]
    with pytest.raises(ValueError, match="rl_steps"):
        RunConfig(rl_steps=0)
    with pytest.raises(ValueError, match="baselines"):
        RunConfig(baselines="mostpop,bogus")
    with pytest.raises(ValueError, match="sft1_epochs"):
        RunConfig(sft1_steps=0, sft1_epochs=0)  # 0 steps = train by epochs, which must then be > 0


def test_run_yaml_parses():
    from genrec.cli import parse_command
    from genrec.commands.run import CONFIGS

    cfg, data_cfg, prompt_cfg = parse_command("run", ["--config", str(CONFIGS / "run.yaml"), "--data", "d",
                                                      "--rl_steps", "5", "--collapse_repeats", "false"])
    assert (cfg.data, cfg.rl_steps, cfg.codebook_size, data_cfg.collapse_repeats) == ("d", 5, 0, False)
    assert cfg.rl_config == "configs/rl_sapo_gated.yaml" and prompt_cfg.history_format == "both"


def test_stage_selection(tmp_path):
    from genrec.commands.run import build_stages

    def keys_and_eval(**kw):
        stages = build_stages(RunConfig(data="d", out=str(tmp_path), **kw), DataConfig(), PromptConfig(), 8)
        ev = stages[-1].argv
        return [s.key for s in stages], ev[ev.index("--model") + 1].count(",") + 1, ev[ev.index("--layout") + 1]

    assert keys_and_eval() == (["fit-tokenizer", "build-model", "traces", "sft1", "sft2", "rl", "evaluate"], 3,
                               "direct,auto,auto")
    assert keys_and_eval(skip_rl=True) == (["fit-tokenizer", "build-model", "traces", "sft1", "sft2", "evaluate"], 2,
                                           "direct,auto")
    assert keys_and_eval(skip_reasoning=True) == (["fit-tokenizer", "build-model", "sft1", "evaluate"], 1, "direct")


def test_stage_budgets_reach_their_sft_commands(tmp_path):
    """Each stage's budget (steps, or epochs cut to a step cap) reaches the `genrec sft` command that trains it."""
    from genrec.commands.run import build_stages

    def stage_argv(stage_key: str, **kw) -> list[str]:
        return next(s for s in build_stages(RunConfig(data="d", out=str(tmp_path), **kw), DataConfig(),
                                            PromptConfig(), 8) if s.key == stage_key).argv

    def budget(stage_key: str, **kw) -> tuple[str, str, str]:
        argv = stage_argv(stage_key, **kw)
        return tuple(argv[argv.index(flag) + 1] for flag in ("--max_steps", "--num_train_epochs", "--max_steps_cap"))

    assert budget("sft1", sft1_steps=0, sft1_epochs=4, sft1_max_steps=70) == ("-1", "4", "70")
    assert budget("sft2", sft2_steps=0, sft2_epochs=2.5, sft2_max_steps=90) == ("-1", "2.5", "90")
    assert budget("sft2", sft2_steps=30, sft2_max_steps=0) == ("30", "2.0", "0")
    assert budget("sft2") == ("-1", "2.0", "3200")  # the recipe: 2 epochs, at most 3,200 steps

    # the evaluation's batch size reaches `genrec evaluate` only when set (0: its auto size, argv unchanged)
    assert "--batch_size" not in stage_argv("evaluate")
    argv = stage_argv("evaluate", eval_batch_size=32)
    assert argv[argv.index("--batch_size") + 1] == "32"
    with pytest.raises(ValueError, match="eval_batch_size"):
        RunConfig(data="d", eval_batch_size=-1)

    # the stage-1 learning rate reaches `genrec sft` only when set (0: the stage config's, argv unchanged)
    assert "--learning_rate" not in stage_argv("sft1")
    argv = stage_argv("sft1", sft1_learning_rate=1.5e-3)
    assert argv[argv.index("--learning_rate") + 1] == "0.0015"
    with pytest.raises(ValueError, match="sft1_learning_rate"):
        RunConfig(data="d", sft1_learning_rate=-1.0)

    def traces_cap(**kw) -> int:
        argv = stage_argv("traces", **kw)
        return int(argv[argv.index("--max_examples") + 1])

    # the traces stage samples no more examples than stage 2's steps can train on (16 rows per step in
    # configs/sft_stage2.yaml); reasoned sequence rows need every user's traces
    assert traces_cap() == 3200 * 16 and traces_cap(sft2_steps=30) == 30 * 16
    assert traces_cap(sft2_max_steps=0) == 0
    assert traces_cap(sft2_tasks="sequence") == 0
    with pytest.raises(ValueError, match="--sft2_max_steps must be >= 0"):
        RunConfig(data="d", sft2_max_steps=-1)


def test_changed_sources_names_edited_added_and_removed_files(tmp_path):
    """`genrec run` stops before a stage when its source changed since it started (stages import lazily, so an
    edit mid-run would give a later stage a mix of old and new modules)."""
    import os

    from genrec.commands.run import changed_sources, source_stamp

    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for name in ("a.py", "sub/b.py", "c.py"):
        (pkg / name).write_text("x = 1\n")
    (pkg / "notes.txt").write_text("not code\n")
    stamp = source_stamp([pkg])
    assert changed_sources(stamp, [pkg]) == []
    st = (pkg / "a.py").stat()
    os.utime(pkg / "a.py", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    (pkg / "sub" / "new.py").write_text("y = 2\n")
    (pkg / "c.py").unlink()
    (pkg / "notes.txt").write_text("edited\n")
    assert changed_sources(stamp, [pkg]) == sorted(str(pkg / n) for n in ("a.py", "c.py", "sub/new.py"))


def test_run_stops_before_a_stage_when_its_source_changed_and_resumes(tmp_path, monkeypatch, capsys):
    """A source file edited while `genrec run` works (simulated after the tokenizer stage) stops the run before the
    next stage with a one-line error naming the file; the same command then resumes with the finished stage kept."""
    import genrec.commands.run as run_module

    pkg = tmp_path / "src"
    pkg.mkdir()
    (pkg / "module.py").write_text("x = 1\n")
    monkeypatch.setattr(run_module, "SOURCE_ROOTS", [pkg])
    import genrec.cli as cli

    original = cli.run_command

    def edit_after_tokenizer(name, argv):
        original(name, argv)
        if name == "fit-tokenizer":
            (pkg / "module.py").write_text("x = 2  # edited during the run\n")

    monkeypatch.setattr(cli, "run_command", edit_after_tokenizer)
    data, out = tmp_path / "data", tmp_path / "run"
    original("synth", ["--out", str(data), "--num_jobs", "120", "--num_users", "60", "--seed", "0"])
    argv = ["run", "--data", str(data), "--out", str(out), *TINY, "--skip_rl", "true", "--baselines", ""]
    assert main(argv) == 1
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("genrec run: error: "))
    assert "source changed" in line and str(pkg / "module.py") in line and "build-model" not in json.loads(
        (out / "run_stages.json").read_text())
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["status"] == "failed" and summary["stages"][-1]["status"] == "failed"
    monkeypatch.setattr(cli, "run_command", original)
    assert main(argv) == 0
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["status"] == "finished" and summary["stages"][0]["status"] == "skipped"


@pytest.mark.skipif(torch.cuda.is_available(), reason="several SFT processes are a CPU option")
def test_run_trains_sft_in_two_processes_like_in_one(tmp_path):
    """--sft_processes 2: stage 1 trains data parallel in two torchrun processes (one thread and half of each step's
    micro-batches each) and ends where one process ends on the same rows and seed."""
    from genrec.modeling import load_model_and_tokenizer

    data = tmp_path / "data"
    run_command("synth", ["--out", str(data), "--num_jobs", "120", "--num_users", "60", "--seed", "0"])
    weights, records = {}, {}
    for n in (1, 2):
        out = tmp_path / f"run{n}"
        run_command("run", ["--data", str(data), "--out", str(out), *TINY, "--skip_reasoning", "true",
                            "--baselines", "", "--sft_processes", str(n)])
        weights[n] = load_model_and_tokenizer(out / "sft1" / "final")[0].state_dict()
        summary = json.loads((out / "run_summary.json").read_text())
        records[n] = next(r for r in summary["stages"] if r["stage"] == "sft1")
    assert "processes" not in records[1] and records[2]["processes"] == 2
    start = load_model_and_tokenizer(tmp_path / "run1" / "model")[0].state_dict()
    assert any(not torch.allclose(weights[1][k], start[k]) for k in start)
    gap = max((weights[1][k] - weights[2][k]).abs().max().item() for k in start)
    assert gap < 1e-6, gap  # one process training alone (no gradient sync) ends 4e-4 away


def test_sft_process_count(monkeypatch):
    """Auto: two processes on a CPU-only machine with >= 2 threads; one with a single thread, a GPU, or a gradient
    accumulation the processes cannot share; several processes with a GPU are refused. A stage's processes name
    the parent's command in their incomplete-output note."""
    from genrec.parallel import training_processes
    from genrec.stage_output import RERUN_ENV, current_command, running

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_processes(0, 2, 4) == (2, "")
    assert training_processes(0, 1, 4) == (1, "")
    n, why = training_processes(0, 2, 3)
    assert n == 1 and "not a multiple of 2" in why
    assert training_processes(3, 1, 6) == (3, "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert training_processes(0, 8, 4) == (1, "")
    with pytest.raises(ValueError, match="GPU"):
        training_processes(2, 8, 4)
    with running("genrec sft --stage 1"):
        assert current_command() == "genrec sft --stage 1"
        monkeypatch.setenv(RERUN_ENV, "genrec run --data d --out o")
        assert current_command() == "genrec run --data d --out o"


def test_run_trains_in_this_process_when_the_sft_processes_cannot_start(tmp_path, monkeypatch, capsys):
    """If the data-parallel processes cannot start (here: no Python at sys.executable), the stage runs in the
    `genrec run` process instead, and says so."""
    import sys

    data, out = tmp_path / "data", tmp_path / "run"
    run_command("synth", ["--out", str(data), "--num_jobs", "120", "--num_users", "60", "--seed", "0"])
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    run_command("run", ["--data", str(data), "--out", str(out), *TINY, "--skip_reasoning", "true", "--baselines", "",
                        "--sft_processes", "2"])
    record = next(r for r in json.loads((out / "run_summary.json").read_text())["stages"] if r["stage"] == "sft1")
    assert record["status"] == "ran" and "processes" not in record
    assert (out / "sft1" / "final" / "config.json").is_file()
    assert "running the stage in this process instead" in capsys.readouterr().err


def test_many_collapsed_repeats_are_noted(tmp_path):
    """`genrec run` notes when the default --collapse_repeats merged a large share of the interactions (the protocol
    then differs from a repeats-kept one), and stays quiet when it merged none."""
    from genrec.commands.run import collapsed_repeats_note
    from genrec.data.loader import load_data
    from genrec.data.recbole import write_atomic

    rows, t = [], 0
    for u in range(12):
        for item in ["a", "a", "b", f"c{u}", f"c{u}", "d", "e"]:  # two consecutive repeats per user: 2 of 7
            rows.append([f"u{u}", item, t])
            t += 1
    folder = tmp_path / "views"
    folder.mkdir()
    write_atomic(folder / "views.inter", ["user_id:token", "item_id:token", "timestamp:float"], rows)
    note = collapsed_repeats_note(load_data(str(folder), DataConfig(), verbose=False).summary)
    assert "24 of the 84 interactions (29%)" in note and "--collapse_repeats false" in note
    assert collapsed_repeats_note(load_data(str(folder), DataConfig(collapse_repeats=False), verbose=False).summary) == ""
    write_atomic(folder / "views.inter", ["user_id:token", "item_id:token", "timestamp:float"],
                 [r for i, r in enumerate(rows) if i % 7 not in (1, 4)])
    assert collapsed_repeats_note(load_data(str(folder), DataConfig(), verbose=False).summary) == ""


def test_an_interrupted_run_records_where_it_stopped(tmp_path, monkeypatch):
    """Ctrl-C (or a SIGTERM passed on to a stage's processes) during a stage: the summary says which stage stopped,
    and the interrupt still ends the run."""
    import genrec.cli

    data, out = tmp_path / "data", tmp_path / "run"
    run_command("synth", ["--out", str(data), "--num_jobs", "120", "--num_users", "60", "--seed", "0"])
    real = genrec.cli.run_command  # what `genrec run` calls for each in-process stage

    def interrupted_at_traces(command, argv):
        if command == "traces":
            raise KeyboardInterrupt
        return real(command, argv)

    monkeypatch.setattr(genrec.cli, "run_command", interrupted_at_traces)
    with pytest.raises(KeyboardInterrupt):
        run_command("run", ["--data", str(data), "--out", str(out), *TINY])
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["status"] == "stopped"
    assert [(r["stage"], r["status"]) for r in summary["stages"]][-1] == ("traces", "stopped")


def test_sigterm_stops_a_run_like_ctrl_c(tmp_path):
    """A SIGTERM (a scheduler's stop) during an in-process stage ends `genrec run` with exit code 143 and a summary
    that names the stopped stage, instead of killing it on the spot with nothing recorded."""
    import signal
    import subprocess
    import sys

    data, out = tmp_path / "data", tmp_path / "run"
    run_command("synth", ["--out", str(data), "--num_jobs", "120", "--num_users", "60", "--seed", "0"])
    argv = [sys.executable, "-m", "genrec.cli", "run", "--data", str(data), "--out", str(out), *TINY,
            "--sft1_steps", "5000"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "SFT stage 1" in line:  # stage 1 has started training in this process
                break
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        proc.stderr.read()
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["status"] == "stopped"
    assert (summary["stages"][-1]["stage"], summary["stages"][-1]["status"]) == ("sft1", "stopped")


def _as_movielens(src, dst) -> None:
    """The synthetic market rewritten in RecBole's ml-100k layout: numeric ids, a `rating:float` column, float
    timestamps, `movie_title` / `release_year` / `class` item fields and ml-100k's user fields."""
    dst.mkdir()
    lines = lambda name: [r.split("\t") for r in (src / f"jobs-synth.{name}").read_text(encoding="utf-8").splitlines()]
    items, users, inter = lines("item"), lines("user"), lines("inter")
    item_id = {row[0]: str(k) for k, row in enumerate(items[1:], 1)}
    user_id = {row[0]: str(k) for k, row in enumerate(users[1:], 1)}
    col = {name.split(":")[0]: k for k, name in enumerate(items[0])}
    (dst / "ml-100k.item").write_text("\n".join(
        ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
        + [f"{item_id[r[0]]}\t{r[col['title']]} ({1990 + k % 9})\t{1990 + k % 9}\t{r[col['industry']]}"
           for k, r in enumerate(items[1:])]) + "\n", encoding="utf-8")
    (dst / "ml-100k.user").write_text("\n".join(
        ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
        + [f"{user_id[r[0]]}\t{20 + k % 40}\t{'MF'[k % 2]}\ttechnician\t{85711 + k}" for k, r in enumerate(users[1:])])
        + "\n", encoding="utf-8")
    (dst / "ml-100k.inter").write_text("\n".join(
        ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
        + [f"{user_id[u]}\t{item_id[i]}\t{1 + k % 5}.0\t{float(t)}" for k, (u, i, t) in enumerate(inter[1:])])
        + "\n", encoding="utf-8")


def test_run_on_a_movielens_shaped_dataset(tmp_path):
    """A set in RecBole's ml-100k layout (the issue's held-out set has this shape) runs end to end: numeric ids, extra
    float columns, the `movie_title` field as the title, items worded as "item"."""
    synth, data, out = tmp_path / "synth", tmp_path / "ml-100k", tmp_path / "run"
    run_command("synth", ["--out", str(synth), "--num_jobs", "120", "--num_users", "60", "--seed", "0"])
    _as_movielens(synth, data)
    run_command("run", ["--data", str(data), "--out", str(out), *TINY, "--skip_rl", "true"])
    report = json.loads((out / "eval" / "eval_report.json").read_text())
    assert report["meta"]["data_summary"]["users_read"] == 60
    results = report["results"]
    assert {"mostpop", "recent", "sasrec"} <= set(results) and any(name.endswith(":sft2") for name in results)
    assert all(m["invalid"] == 0 for r in results.values() for m in r.values())
    from datasets import load_from_disk

    row = load_from_disk(str(out / "traces"))["train"][0]
    assert "item" in row["prompt"] and "job" not in row["prompt"].lower()  # item_noun auto: not a job dataset
    first_line = row["prompt"].split("1. ", 1)[1].split("\n", 1)[0]
    assert first_line.endswith(")") and "(19" in first_line  # the history line shows the movie title, year included
    assert "Last viewed: item" in row["completion"]
