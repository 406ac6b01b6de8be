"""One SFT training in several CPU processes (data parallel through `torchrun` and gloo) instead of one process.

Why: the tiny model's matrices are too small for two threads to share one forward and backward well. Two 1-thread
processes, each on half of every step's rows, ran 150 demo stage-2 steps in 56 s where one 2-thread process took
67 s, with the same logged losses and eval loss (docs/bench/learning.md, session 34). transformers' Trainer does the
data parallelism (DistributedDataParallel); `GenrecSFTTrainer` keeps a step's loss that of one batch of its rows
(tests/test_sft_multiproc.py), and each process accumulates 1/N of the step's micro-batches, so the step is the same.
"""

from __future__ import annotations

import contextlib
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
    try:
        with sigterm_raises_exit():  # a scheduler's stop or `kill`: raised here as SystemExit, handled below
            returncode = proc.wait()
    except BaseException as e:  # Ctrl-C or SIGTERM: the stage's processes stop too (torchrun stops its workers);
        if proc.poll() is None:  # without it they kept training, orphaned, in the stage's output folder
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        if isinstance(e, SystemExit):
            print("stopped by SIGTERM, and the stage's processes with it; the same command resumes", file=sys.stderr,
                  flush=True)
        raise
    if returncode != 0:
        raise ValueError(f"genrec {command} in {processes} processes failed (exit code {returncode}); its error "
                         "is printed above")


@contextlib.contextmanager
def sigterm_raises_exit():
    """Within it (main thread only), a SIGTERM raises SystemExit(143) instead of ending the process on the spot, so
    `finally` blocks and handlers run: a run records where it stopped, forked workers are terminated."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


# ---- one pure function over many inputs in forked worker processes (the evaluation's beam searches) ----

_FORKED: tuple | None = None  # (fn, inputs) of the running `forked_map`: the workers inherit it through fork


def can_fork() -> bool:
    """Whether worker processes can start as copies of this one (Linux and other 'fork' platforms)."""
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def worker_processes(requested: int, device_type: str, threads: int, option: str = "--processes") -> int:
    """Forked 1-thread CPU workers for one job (`forked_map`): `requested` if > 0, else auto: AUTO_CPU_PROCESSES when
    the job runs on the CPU with exactly that many torch `threads` (the measured case: two 1-thread workers instead of
    one 2-thread process) and this platform can fork, else 1 (with more threads one process keeps them all; more
    workers are a choice, `requested`, not measured). More than one on another device, or without fork, is refused."""
    if requested < 0:
        raise ValueError(f"{option} must be >= 0 (0 = auto), got {requested}")
    if requested > 1 and device_type != "cpu":
        raise ValueError(f"{option} {requested}: worker processes are a CPU option; on {device_type} use 1")
    if requested > 1 and not can_fork():
        raise ValueError(f"{option} {requested}: this platform cannot fork worker processes; use 1")
    if requested:
        return requested
    return AUTO_CPU_PROCESSES if device_type == "cpu" and can_fork() and threads == AUTO_CPU_PROCESSES else 1


def _start_worker(parent: int) -> None:
    """A forked worker's set-up: one torch thread, and an end when its parent ends.

    One thread: GNU OpenMP (torch's CPU wheels) cannot start a thread team again in a forked child once the parent
    has used one; a worker with 2 threads hung in its first parallel op. With one thread no team is started (as in
    torch's DataLoader workers). The parent-death signal: a parent killed mid-map (SIGTERM, SIGKILL, out of memory)
    would otherwise leave its workers blocked for ever on the task queue."""
    import torch

    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != parent:  # the parent ended before the signal was armed
        os._exit(1)


def _call_forked(i: int):
    fn, inputs = _FORKED
    return fn(inputs[i])


def forked_map(fn, inputs: list, processes: int, on_result=None) -> list:
    """[fn(x) for x in inputs], computed in `processes` forked workers of one torch thread each, in order.

    Why fork: the workers inherit `fn`'s state (a loaded model, a catalog) without pickling it or loading it again,
    as torch's DataLoader workers do on Linux. `on_result(i, result)` is called in this process as each finishes
    (a progress bar). A worker that dies (killed, out of memory) raises `BrokenProcessPool`; an error or an interrupt
    in this process stops the workers; the workers end when this process ends."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    global _FORKED
    if _FORKED is not None:
        raise RuntimeError("forked_map is not re-entrant")
    try:
        _FORKED = (fn, inputs)
        pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_start_worker, initargs=(os.getpid(),))
        try:
            futures = [pool.submit(_call_forked, i) for i in range(len(inputs))]
            out = []
            for i, future in enumerate(futures):
                out.append(future.result())
                if on_result is not None:
                    on_result(i, out[-1])
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            for worker in list((getattr(pool, "_processes", None) or {}).values()):
                worker.terminate()  # the batches they hold are not wanted any more
            raise
        pool.shutdown(wait=True)
        return out
    finally:
        _FORKED = None
