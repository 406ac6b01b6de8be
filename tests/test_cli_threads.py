"""`genrec --threads N <command>` / GENREC_THREADS: torch's thread counts are set before the command runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genrec.cli import THREADS_ENV, main
from tests.helpers_tiny import write_tiny_data_dir

REPO = Path(__file__).resolve().parents[1]

# A real process running the real CLI with one extra command whose run() reports torch's thread counts.
PROBE = """
import sys, types
from dataclasses import dataclass
import torch
from genrec import cli

@dataclass
class ProbeConfig:
    note: str = ""

mod = types.ModuleType("genrec_probe")
mod.HELP = "print torch's thread counts"
mod.CONFIG_CLASSES = (ProbeConfig,)
mod.run = lambda cfg: print("threads", torch.get_num_threads(), torch.get_num_interop_threads())
sys.modules["genrec_probe"] = mod
cli.COMMANDS["probe"] = "genrec_probe"
sys.exit(cli.main(sys.argv[1:]))
"""


def _probe(*args: str, env_threads: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != THREADS_ENV}
    env["PYTHONPATH"] = str(REPO)
    env["HF_HUB_OFFLINE"] = "1"
    if env_threads is not None:
        env[THREADS_ENV] = env_threads
    return subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


def _counts(proc: subprocess.CompletedProcess) -> tuple[int, int]:
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("threads ")][-1]
    intra, inter = line.split()[1:]
    return int(intra), int(inter)


def test_flag_and_env_set_torch_threads_in_a_real_process():
    default = _counts(_probe("probe"))
    want = 3 if default[0] != 3 else 5  # differs from the machine's default, so the check can fail
    assert _counts(_probe("--threads", str(want), "probe")) == (want, want)
    assert _counts(_probe("probe", env_threads=str(want))) == (want, want)
    assert _counts(_probe("--threads", "1", "probe", env_threads=str(want))) == (1, 1)  # the flag wins
    assert _counts(_probe("--threads", "0", "probe")) == default  # 0 = torch's default
    assert _counts(_probe("probe", env_threads="")) == default


def test_real_command_runs_with_the_thread_count(tmp_path):
    data = write_tiny_data_dir(tmp_path / "data")
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    try:
        rc = main([f"--threads={want}", "evaluate", "--data", str(data), "--baselines", "mostpop",
                   "--output_dir", str(tmp_path / "out"), "--progress", "false"])
        assert rc == 0
        assert torch.get_num_threads() == want
        assert (tmp_path / "out" / "eval_report.json").is_file()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    "argv,env,message",
    [
        (["--threads", "two", "evaluate"], None, "--threads: expected a whole number of torch threads >= 0"),
        (["--threads=-2", "evaluate"], None, "got -2"),
        (["--threads"], None, "expected a number of torch threads before the command"),
        (["--threadsx", "evaluate"], None, "unknown global option '--threadsx'"),
        (["evaluate"], "1.5", "GENREC_THREADS: expected a whole number of torch threads >= 0"),
    ],
)
def test_bad_thread_values_give_a_clear_error(argv, env, message, capsys, monkeypatch):
    if env is None:
        monkeypatch.delenv(THREADS_ENV, raising=False)
    else:
        monkeypatch.setenv(THREADS_ENV, env)
    before = torch.get_num_threads()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert torch.get_num_threads() == before


def test_commands_show_genrec_info_messages(tmp_path, capsys):
    """`genrec sft` through the command line prints genrec's info messages, e.g. the epoch budget cut to the step
    cap (without a handler Python shows only warnings)."""
    from tests.helpers_tiny import copy_tiny_model, tiny_sid_map, write_tiny_data_dir

    model = copy_tiny_model(tmp_path / "model")
    data = write_tiny_data_dir(tmp_path / "data")
    tiny_sid_map().save(tmp_path / "sid_map.json")
    rc = main(["--threads", "1", "sft", "--stage", "1", "--model", str(model),
               "--sid_map", str(tmp_path / "sid_map.json"), "--data", str(data), "--output_dir", str(tmp_path / "sft"), "--num_train_epochs", "50",
               "--max_steps_cap", "2", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
               "--save_strategy", "no", "--eval_valid", "false", "--report_to", "none", "--disable_tqdm", "true"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "[genrec.sft]" in err and "capped at --max_steps_cap 2" in err
    assert "is the first thing to raise" in err  # 2 steps are far under two epochs of the rows
