"""One SFT training in several CPU processes (data parallel through `torchrun` and gloo) instead of one process.

Why: the tiny model's matrices are too small for two threads to share one forward and backward well. Two 1-thread
processes, each on half of every step's rows, ran 150 demo stage-2 steps in 56 s where one 2-thread process took
67 s, with the same logged losses and eval loss (docs/bench/learning.md, session 34). transformers' Trainer does the
data parallelism (DistributedDataParallel); `GenrecSFTTrainer` keeps a step's loss that of one batch of its rows
(tests/test_sft_multiproc.py), and each process accumulates 1/N of the step's micro-batches, so the step is the same.
"""

from __future__ import annotations

import os
import subprocess
import sys

AUTO_CPU_PROCESSES = 2  # measured at 2 threads (the demo's machine); more processes are untested


def cpu_only() -> bool:
    import torch

    return not torch.cuda.is_available()


def launched_by_torchrun_on_cpu() -> bool:
    """True in a process that `torchrun` started as one of several (WORLD_SIZE > 1) on a machine without a GPU.

    transformers then trains each process as a separate one-process run unless `use_cpu` is set: N copies that
    race on one output folder (seen: a final folder without its weights). The SFT and RL configs set it."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and cpu_only()


def wanted_processes(requested: int, threads: int) -> int:
    """`requested` if > 0, else auto: AUTO_CPU_PROCESSES on a machine without a GPU when the run has at least that
    many torch `threads`, else 1. Several processes with a GPU are refused (each would claim one)."""
    if requested > 1 and not cpu_only():
        raise ValueError(f"--sft_processes {requested}: several processes are a CPU option (each would claim a GPU); "
                         "with GPUs launch `genrec sft` with accelerate or torchrun (docs/rl.md)")
    return requested if requested > 0 else (AUTO_CPU_PROCESSES if cpu_only() and threads >= AUTO_CPU_PROCESSES else 1)


def training_processes(requested: int, threads: int, grad_accum: int) -> tuple[int, str]:
    """(processes, why) for one SFT stage (`wanted_processes`). The step's micro-batches are shared out, so the count
    must divide `grad_accum` (else 1, and `why` says so)."""
    n = wanted_processes(requested, threads)
    if n > 1 and grad_accum % n:
        return 1, (f"one process: gradient_accumulation_steps {grad_accum} is not a multiple of {n} processes "
                   "(each process takes an equal share of a step's micro-batches)")
    return n, ""


def torchrun_argv(command: str, argv: list[str], processes: int, threads_each: int) -> list[str]:
    """`genrec <command> <argv>` in `processes` processes of `threads_each` torch threads; `--standalone` picks a
    free rendezvous port on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            "-m", "genrec.cli", "--threads", str(threads_each), command, *argv]


def run_in_processes(command: str, argv: list[str], processes: int, threads_each: int) -> None:
    """Run `genrec <command>` data parallel in child processes; their output goes to this process's terminal.
    A failure raises ValueError naming the exit code (the stage's own error is printed above it), or OSError when
    the processes cannot be started."""
    from genrec.stage_output import RERUN_ENV, current_command

    # the children's incomplete-output note names this command (rerunning one child's command alone would train
    # steps of 1/N of the rows)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads_each), **{RERUN_ENV: current_command()})
    proc = subprocess.run(torchrun_argv(command, argv, processes, threads_each), env=env)
    if proc.returncode != 0:
        raise ValueError(f"genrec {command} in {processes} processes failed (exit code {proc.returncode}); its error "
                         "is printed above")
