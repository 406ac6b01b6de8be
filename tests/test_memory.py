"""The process-tree memory monitor that `genrec run` reports (genrec/memory.py), on real processes."""

import os
import subprocess
import sys
import time

import pytest

from genrec.memory import TreeMemory, descendants, supported, tree_pss_mb

pytestmark = pytest.mark.skipif(not supported(), reason="needs Linux /proc/<pid>/smaps_rollup")

HOLD = 300  # MB a child writes and keeps


def _child_holding(mb: int) -> subprocess.Popen:
    """A child process that writes `mb` MB (so the pages are resident), says so, and waits."""
    code = (f"import sys, time\nb = b'\\x01' * ({mb} << 20)\nprint('ready', flush=True)\n"
            "sys.stdin.readline()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_tree_memory_counts_a_child_process():
    before = tree_pss_mb()
    with TreeMemory(interval=0.05) as mem:
        mem.stage_peak_mb()  # open a window
        proc = _child_holding(HOLD)
        try:
            assert proc.pid in descendants(os.getpid())
            time.sleep(0.3)  # a few samples from the thread
            assert tree_pss_mb() > before + 0.8 * HOLD
        finally:
            proc.communicate("\n", timeout=30)
        time.sleep(0.2)
        window = mem.stage_peak_mb()
        assert window > before + 0.8 * HOLD  # the child's memory stays in the window's peak after it ended
        assert mem.stage_peak_mb() < before + 0.5 * HOLD  # a new window starts without it
        assert mem.peak_mb >= window  # the run's peak keeps it
    # getrusage's answer for this process alone does not see the child's memory while it runs; the tree does.


def test_forked_copies_are_counted_once():
    """A forked child shares its parent's pages copy-on-write: PSS counts them once, so the tree's sum does not double
    (summed RSS would)."""
    block = b"\x02" * (HOLD << 20)  # noqa: F841 (kept resident in this process)
    alone = tree_pss_mb()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child only waits; it never writes to the shared block
        os.close(write)
        os.read(read, 1)
        os._exit(0)
    try:
        os.close(read)
        time.sleep(0.2)
        together = tree_pss_mb()
        assert together < alone + 0.3 * HOLD, (alone, together)
    finally:
        os.write(write, b"x")
        os.waitpid(pid, 0)
    del block


def test_disabled_where_proc_cannot_be_read(monkeypatch):
    import genrec.memory as memory

    monkeypatch.setattr(memory, "supported", lambda: False)
    with memory.TreeMemory() as mem:
        assert mem.peak_mb is None and mem.stage_peak_mb() is None
