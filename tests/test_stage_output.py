"""Half-written stage outputs (issue 13): the note `writing` leaves, the readers that refuse it in one line, the
newest complete checkpoint, `genrec run` redoing a stage killed mid-way, and a real SIGKILL of `genrec fit-tokenizer`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genrec.cli import main, run_command
from genrec.stage_output import (
    WRITING_FILE,
    IncompleteOutputError,
    check_complete,
    is_complete,
    latest_checkpoint,
    running,
    writing,
)
from tests.helpers_tiny import tiny_sid_map


def _half_written(folder: Path, command: str = "genrec fit-tokenizer --data d --out o") -> Path:
    """A folder as a command killed mid-way leaves it: some files, and the note."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny_sid_map().save(folder / "sid_map.json")
    with pytest.raises(KeyboardInterrupt):
        with writing(folder, command):
            raise KeyboardInterrupt  # stands for the kill: the note stays
    return folder


def test_note_stays_on_failure_and_goes_on_success(tmp_path):
    with writing(tmp_path / "ok", "genrec x"):
        assert not is_complete(tmp_path / "ok")
    assert is_complete(tmp_path / "ok") and not (tmp_path / "ok" / WRITING_FILE).exists()

    folder = _half_written(tmp_path / "tok")
    assert not is_complete(folder)
    with pytest.raises(IncompleteOutputError) as e:
        check_complete(folder)
    msg = str(e.value)
    assert "\n" not in msg and "incomplete output" in msg and "rerun `genrec fit-tokenizer --data d --out o`" in msg


def test_note_names_the_outermost_command(tmp_path):
    with running("genrec run --data d --out o"), running("genrec traces --output_dir o/traces"):
        with writing(tmp_path / "t"):
            pass
        with pytest.raises(RuntimeError):
            with writing(tmp_path / "t"):
                raise RuntimeError
    assert json.loads((tmp_path / "t" / WRITING_FILE).read_text())["command"] == "genrec run --data d --out o"


def test_readers_refuse_a_half_written_folder_in_one_line(tmp_path, capsys):
    from genrec.traces.budget import traces_block_budget
    from genrec.traces.dataset import load_traces
    from sid_tokenizer.sidmap import SIDMap
    from sid_tokenizer.tokenizer import SIDTokenizer

    tok = _half_written(tmp_path / "tok")
    for read in (lambda: SIDMap.load(tok), lambda: SIDMap.load(tok / "sid_map.json"), lambda: SIDTokenizer.load(tok)):
        with pytest.raises(IncompleteOutputError, match="incomplete output"):
            read()
    traces = _half_written(tmp_path / "traces", "genrec traces --output_dir traces")
    for read in (lambda: load_traces(traces, tiny_sid_map()), lambda: traces_block_budget(traces)):
        with pytest.raises(IncompleteOutputError, match=r"rerun `genrec traces --output_dir traces`"):
            read()

    # through the CLI: one line, no traceback, the command to rerun
    assert main(["build-model", "--sid_map", str(tok), "--data", str(tmp_path), "--output_dir",
                 str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("genrec build-model: error: ") and "incomplete output" in err[0], err
    assert "rerun `genrec fit-tokenizer --data d --out o`" in err[0] and "Traceback" not in "\n".join(err)


def _checkpoint(folder: Path, complete: bool) -> None:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x")
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    else:
        (folder / "trainer_state.json").write_text('{"global_step": 1, "log_hist')  # cut short by the kill


def test_latest_checkpoint_skips_and_removes_incomplete_ones(tmp_path):
    assert latest_checkpoint(tmp_path / "none") is None
    _checkpoint(tmp_path / "checkpoint-2", True)
    _checkpoint(tmp_path / "checkpoint-10", True)
    _checkpoint(tmp_path / "checkpoint-12", False)
    (tmp_path / "checkpoint-14").mkdir()  # the kill came right after the folder was made
    notes = []
    assert latest_checkpoint(tmp_path, log=notes.append) == tmp_path / "checkpoint-10"  # numeric order, not text
    assert len(notes) == 2 and not (tmp_path / "checkpoint-12").exists() and not (tmp_path / "checkpoint-14").exists()


def test_checkpoint_finished(tmp_path):
    from genrec.stage_output import checkpoint_finished

    for name, step, total in (("end", 8, 8), ("mid", 6, 8), ("epochs", 5, 0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": total}))
    assert checkpoint_finished(tmp_path / "end") and not checkpoint_finished(tmp_path / "mid")
    assert not checkpoint_finished(tmp_path / "end", max_steps=10)  # rerun asked for more steps: train on
    assert not checkpoint_finished(tmp_path / "epochs") and not checkpoint_finished(tmp_path / "missing")


def test_fit_tokenizer_replaces_a_half_written_folder_without_overwrite(tmp_path):
    data, tok = tmp_path / "data", tmp_path / "tok"
    run_command("synth", ["--out", str(data), "--num_jobs", "40", "--num_users", "20", "--seed", "0"])
    _half_written(tok)
    run_command("fit-tokenizer", ["--data", str(data), "--out", str(tok), "--codebook_size", "4"])
    assert is_complete(tok) and (tok / "tokenizer_report.json").exists()
    before = (tok / "sid_map.json").stat().st_mtime_ns
    # the same command again (e.g. after a kill that came once it had finished): nothing to do
    run_command("fit-tokenizer", ["--data", str(data), "--out", str(tok), "--codebook_size", "4"])
    assert (tok / "sid_map.json").stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="--overwrite"):  # other settings over a complete one: --overwrite
        run_command("fit-tokenizer", ["--data", str(data), "--out", str(tok), "--codebook_size", "5"])


def test_run_redoes_a_stage_whose_folder_carries_the_note(tmp_path, monkeypatch):
    """`genrec run` with every stage stubbed (each writes its finished marker): a stage folder with the note of an
    interrupted command is run again, with every stage after it; the ones before stay skipped."""
    import genrec.cli
    from genrec.commands.run import RunConfig, execute
    from genrec.data.config import DataConfig
    from genrec.prompts import PromptConfig

    data, out = tmp_path / "data", tmp_path / "run"
    run_command("synth", ["--out", str(data), "--num_jobs", "40", "--num_users", "20", "--seed", "0"])
    ran: list[str] = []

    def fake_run_command(name, argv):
        from genrec.commands.run import build_stages

        stages = build_stages(RunConfig(data=str(data), out=str(out)), DataConfig(), PromptConfig(), 8)
        out_flag = next(a for a in ("--out", "--output_dir") if a in argv)
        folder = argv[argv.index(out_flag) + 1]
        stage = next(s for s in stages if str(s.folder) == folder and s.command == name)
        stage.marker.parent.mkdir(parents=True, exist_ok=True)
        stage.marker.write_text("{}")
        ran.append(stage.key)

    monkeypatch.setattr(genrec.cli, "run_command", fake_run_command)

    def run():
        ran.clear()
        execute(RunConfig(data=str(data), out=str(out), sft_processes=1), DataConfig(), PromptConfig())
        return list(ran)

    assert run() == ["fit-tokenizer", "build-model", "traces", "sft1", "sft2", "rl", "evaluate"]
    assert run() == []
    _half_written(out / "sft1", "genrec sft --stage 1")  # killed while a rerun was writing it; final/ still there
    assert (out / "sft1" / "final" / "config.json").exists()
    assert run() == ["sft1", "sft2", "rl", "evaluate"]


def test_killed_fit_tokenizer_is_refused_then_rerun_matches(tmp_path):
    """A real SIGKILL while `genrec fit-tokenizer` writes its folder: the folder is refused, the rerun finishes
    and writes the same sid_map.json as an uninterrupted fit."""
    from sid_tokenizer.sidmap import SIDMap

    data, ref, tok = tmp_path / "data", tmp_path / "ref", tmp_path / "tok"
    run_command("synth", ["--out", str(data), "--num_jobs", "40", "--num_users", "20", "--seed", "0"])
    fit = ["fit-tokenizer", "--data", str(data), "--codebook_size", "4", "--seed", "0"]
    run_command(fit[0], [*fit[1:], "--out", str(ref)])

    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENREC_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "genrec.cli", *fit, "--out", str(tok)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (tok / WRITING_FILE).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        killed = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    if not killed:
        pytest.skip("fit-tokenizer finished before it could be killed")
    with pytest.raises(IncompleteOutputError, match=r"rerun `genrec fit-tokenizer"):
        SIDMap.load(tok)
    run_command(fit[0], [*fit[1:], "--out", str(tok)])  # the same command, no --overwrite
    assert (tok / "sid_map.json").read_bytes() == (ref / "sid_map.json").read_bytes()
