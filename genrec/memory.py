"""Peak memory of a whole process tree: what a long `genrec run` actually needs from the machine.

`getrusage` reports one process (or the largest child), but a run trains SFT in several processes and evaluates in
forked workers, so the machine's peak is their sum. `TreeMemory` samples the tree from a daemon thread. It sums PSS
(proportional set size: a page shared by n processes counts 1/n in each), so the copy-on-write pages that forked
workers share with their parent are counted once, as the machine holds them. Linux only (/proc); elsewhere it
reports None and callers fall back to getrusage.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from pathlib import Path

PROC = Path("/proc")


def largest_process_rss_mb() -> float:
    """Peak resident memory of this process or of its largest finished child, in MB (`getrusage`)."""
    scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 2**10  # ru_maxrss: bytes on macOS, KiB on Linux
    return round(max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
                 * scale, 1)


def descendants(root: int) -> list[int]:
    """`root` and every live process below it, from each process's parent id in /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            stat = (PROC / entry.name / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # the command name in (...) may hold spaces
        children.setdefault(parent, []).append(int(entry.name))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, ()))
    return tree


def process_pss_kb(pid: int) -> int:
    """PSS of one process in KiB (0 when it has ended or cannot be read)."""
    try:
        with open(PROC / str(pid) / "smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_pss_mb(root: int | None = None) -> float:
    """Summed PSS of `root` (default: this process) and its descendants, in MB."""
    return sum(process_pss_kb(pid) for pid in descendants(os.getpid() if root is None else root)) / 1024


def supported() -> bool:
    return (PROC / str(os.getpid()) / "smaps_rollup").exists()


class TreeMemory:
    """Samples this process tree's summed PSS every `interval` seconds while active (`with TreeMemory() as mem:`).

    A sample reads each process's smaps_rollup, which costs the kernel about 15 ms per GB resident; every 5 s that is
    under 1% of one core at the demo's 2.7 GB, and a run's memory plateaus last far longer than 5 s.
    `peak_mb` is the run's peak so far; `stage_peak_mb()` returns the peak since its last call and starts a new
    window, so a caller can attribute peaks to stages. Both are None where /proc cannot be read."""

    def __init__(self, interval: float = 5.0):
        self.interval = interval
        self.enabled = supported()
        self._peak = self._window = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        mb = tree_pss_mb()
        with self._lock:
            self._peak = max(self._peak, mb)
            self._window = max(self._window, mb)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "TreeMemory":
        if self.enabled:
            self.sample()
            self._thread = threading.Thread(target=self._loop, name="genrec-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def peak_mb(self) -> float | None:
        if not self.enabled:
            return None
        self.sample()
        return round(self._peak, 1)

    def stage_peak_mb(self) -> float | None:
        if not self.enabled:
            return None
        self.sample()
        with self._lock:
            peak, self._window = self._window, 0.0
        return round(peak, 1)
