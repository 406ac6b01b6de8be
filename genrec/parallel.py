"""One SFT training in several CPU processes (data parallel through `torchrun` and gloo) instead of one process.

Why: the tiny model's matrices are too small for two threads to share one forward and backward well. Two 1-thread
processes, each on half of every step's rows, ran 150 demo stage-2 steps in 56 s where one 2-thread process took
67 s, with the same logged losses and eval loss (docs/bench/learning.md, session 34). transformers' Trainer does the
data parallelism (DistributedDataParallel); `GenrecSFTTrainer` keeps a step's loss that of one batch of its rows
(tests/test_sft_multiproc.py), and each process accumulates 1/N of the step's micro-batches, so the step is the same.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

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
    proc = subprocess.Popen(torchrun_argv(command, argv, processes, threads_each), env=env)
    returncode = _wait_forwarding_sigterm(proc)
    if returncode != 0:
        raise ValueError(f"genrec {command} in {processes} processes failed (exit code {returncode}); its error "
                         "is printed above")


def _wait_forwarding_sigterm(proc: subprocess.Popen) -> int:
    """Wait for `proc`; a SIGTERM to this process meanwhile (a scheduler's stop, `kill`) goes to `proc` too, which
    stops its workers (torchrun forwards it), and this process then exits 143. Without it the workers kept
    training, orphaned, in the stage's output folder. Ctrl-C reaches them anyway (the terminal signals the whole
    process group)."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread only
        return proc.wait()
    received: list[int] = []

    def forward(signum, frame):  # only forward: the interrupted wait() below resumes and sees the child end
        received.append(signum)
        proc.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        returncode = proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if received:
        print(f"stopped by signal {received[0]}, and the stage's processes with it; the same command resumes",
              file=sys.stderr, flush=True)
        raise SystemExit(128 + received[0])
    return returncode


# ---- one pure function over many inputs in forked worker processes (the evaluation's beam searches) ----

_FORKED: tuple | None = None  # (fn, inputs) of the running `forked_map`: the workers inherit it through fork


def can_fork() -> bool:
    """Whether worker processes can start as copies of this one (Linux and other 'fork' platforms)."""
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def worker_processes(requested: int, device_type: str, threads: int, option: str = "--processes") -> int:
    """Forked CPU workers for one job (`forked_map`): `requested` if > 0, else auto: AUTO_CPU_PROCESSES when the job
    runs on the CPU with at least that many torch `threads` and this platform can fork, else 1. More than one on
    another device, or where fork is missing, is refused."""
    if requested < 0:
        raise ValueError(f"{option} must be >= 0 (0 = auto), got {requested}")
    if requested > 1 and device_type != "cpu":
        raise ValueError(f"{option} {requested}: worker processes are a CPU option; on {device_type} use 1")
    if requested > 1 and not can_fork():
        raise ValueError(f"{option} {requested}: this platform cannot fork worker processes; use 1")
    if requested:
        return requested
    return AUTO_CPU_PROCESSES if device_type == "cpu" and can_fork() and threads >= AUTO_CPU_PROCESSES else 1


def _start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)  # as DataLoader workers do: OpenMP after fork is safe with one thread each


def _call_forked(i: int):
    fn, inputs = _FORKED
    return fn(inputs[i])


def forked_map(fn, inputs: list, processes: int, threads_each: int = 1, on_result=None) -> list:
    """[fn(x) for x in inputs], computed in `processes` forked workers of `threads_each` torch threads, in order.

    Why fork: the workers inherit `fn`'s state (a loaded model, a catalog) without pickling it or loading it again,
    as torch's DataLoader workers do on Linux. `on_result(i, result)` is called in this process as each finishes
    (a progress bar). A worker that dies (killed, out of memory) raises `BrokenProcessPool` instead of hanging."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    global _FORKED
    if _FORKED is not None:
        raise RuntimeError("forked_map is not re-entrant")
    _FORKED = (fn, inputs)
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"),
                               initializer=_start_worker, initargs=(threads_each,))
    try:
        futures = [pool.submit(_call_forked, i) for i in range(len(inputs))]
        out = []
        for i, future in enumerate(futures):
            out.append(future.result())
            if on_result is not None:
                on_result(i, out[-1])
        return out
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error, the rest is not computed
        _FORKED = None
