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
    deadline = time.time() + 60
    while not (flag.exists() and flag.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    child = int(flag.read_text())
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=30) == 128 + signal.SIGTERM
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the stage's child process outlived its parent's SIGTERM")
