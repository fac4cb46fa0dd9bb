"""One line describing the machine a benchmark ran on, with a reference speed.

Wall-clock figures from a shared machine are only comparable with the speed it
had at the time: the reference is a fixed pure-Python loop, timed just before
the line is printed. On the machine of docs/optimizer.md it took from 0.7 s to
1.7 s on different days; scale a run's times by it before comparing them.
"""

from __future__ import annotations

import os
import platform
import time


def reference_seconds() -> float:
    start = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - start


def machine_line() -> str:
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"reference loop {reference_seconds():.2f} s (lower is faster)"
    )
