"""genrec/parallel.py: forked workers (the evaluation's beam searches) and the SFT stage's child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x * x


def _exit_on_three(x: int) -> int:
    import os

    if x == 3:
        os._exit(9)  # a worker killed mid-task (as by the kernel's out-of-memory killer)
    return x


def test_forked_map_order_errors_and_dead_workers():
    from concurrent.futures.process import BrokenProcessPool

    from genrec.parallel import forked_map

    seen = []
    assert forked_map(lambda x: x * x, list(range(7)), 2, on_result=lambda i, r: seen.append((i, r))) == [
        x * x for x in range(7)]
    assert seen == [(i, i * i) for i in range(7)]
    with pytest.raises(ValueError, match="three"):
        forked_map(_fail_on_three, list(range(6)), 2)
    with pytest.raises(BrokenProcessPool):
        forked_map(_exit_on_three, list(range(6)), 2)
    assert forked_map(abs, [-1, -2], 2) == [1, 2]  # usable again after a failure


def test_worker_process_count(monkeypatch):
    from genrec.parallel import worker_processes

    assert worker_processes(0, "cpu", 2) == 2
    assert worker_processes(0, "cpu", 1) == 1
    assert worker_processes(0, "cpu", 8) == 1  # one process keeps more threads (more workers: unmeasured, a choice)
    assert worker_processes(0, "cuda", 8) == 1
    assert worker_processes(3, "cpu", 1) == 3
    with pytest.raises(ValueError, match="CPU option"):
        worker_processes(2, "cuda", 8)
    with pytest.raises(ValueError, match=">= 0"):
        worker_processes(-1, "cpu", 2)
    monkeypatch.setattr("genrec.parallel.can_fork", lambda: False)
    assert worker_processes(0, "cpu", 2) == 1
    with pytest.raises(ValueError, match="cannot fork"):
        worker_processes(2, "cpu", 2)


def test_sigterm_to_the_parent_stops_a_stage_s_child_processes(tmp_path):
    """`genrec run` trains an SFT stage in child processes; a SIGTERM to it (a scheduler's stop) must stop them too,
    not leave them training, orphaned, in the stage's folder."""
    flag = tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import sys
        import genrec.parallel as parallel
        child = ("import os, time; open({str(flag)!r}, 'w').write(str(os.getpid())); time.sleep(120)")
        parallel.torchrun_argv = lambda *a: [sys.executable, "-c", child]  # a stage that runs until stopped
        parallel.run_in_processes("sft", [], 2, 1)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
    pids = _wait_for_pids(flag, 1)
    parent.send_signal(signal.SIGTERM)
    try:
        assert parent.wait(timeout=30) == 128 + signal.SIGTERM
        assert _all_ended(pids), "the stage's child process outlived its parent's SIGTERM"
    finally:
        _kill(pids + [parent.pid])


def _wait_for_pids(flag, n: int, timeout: float = 60) -> list[int]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        lines = flag.read_text().split() if flag.exists() else []
        if len(lines) >= n:
            return [int(x) for x in lines[:n]]
        time.sleep(0.1)
    raise AssertionError(f"{n} processes did not start within {timeout} s")


def _all_ended(pids: list[int], timeout: float = 10) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            return True
        time.sleep(0.1)
    return False


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _torch_threads_after_a_matmul(_) -> int:
    import torch

    x = torch.randn(256, 256)
    for _ in range(20):
        x = torch.tanh(x @ x / 256)
    return torch.get_num_threads()


@pytest.mark.timeout(120)
def test_forked_workers_compute_after_a_multithreaded_parent():
    """After the parent has used an OpenMP thread team, forked workers must still compute: with 2 threads each a
    worker hung for ever in its first parallel op (GNU OpenMP cannot start a team again after fork); the workers
    run one thread each."""
    import torch

    from genrec.parallel import forked_map

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _torch_threads_after_a_matmul(None)  # the parent's thread team exists now
        assert forked_map(_torch_threads_after_a_matmul, [0, 1, 2, 3], 2) == [1, 1, 1, 1]
    finally:
        torch.set_num_threads(before)


def test_workers_end_with_their_parent(tmp_path):
    """A parent killed mid-map (here SIGKILL: no handler runs) must not leave its workers blocked for ever."""
    flag = tmp_path / "workers.pid"
    script = textwrap.dedent(f"""
        import os, time
        from genrec.parallel import forked_map

        def task(x):
            with open({str(flag)!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            time.sleep(120)

        forked_map(task, [0, 1, 2, 3], 2)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
    pids = _wait_for_pids(flag, 2)
    parent.kill()
    parent.wait(timeout=30)
    try:
        assert _all_ended(pids), "forked workers outlived their parent"
    finally:
        _kill(pids)
