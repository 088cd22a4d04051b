"""Functions for the rank server to run in the unit tests (it imports them by name)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from dlmodels.distributed import DataParallel


def join(out: str) -> int:
    """Join the job's process group, sum the ranks, leave a note of what this rank saw."""
    strategy = DataParallel.start(device="cpu", timeout=30)
    try:
        total = torch.tensor([float(strategy.rank + 1)])
        dist.all_reduce(total)
        note = {"rank": strategy.rank, "world": strategy.world, "sum": total.item(),
                "title": Path("/proc/self/cmdline").read_bytes().decode(errors="replace"),
                "threads": os.environ["OMP_NUM_THREADS"], "pid": os.getpid(),
                "cpus": sorted(os.sched_getaffinity(0))}
        (Path(out) / f"rank-{strategy.rank}.json").write_text(json.dumps(note))
    finally:
        DataParallel.stop()
    return 0


def exit_with(code: str) -> int:
    return int(code)


def sleep(seconds: str) -> int:
    time.sleep(float(seconds))
    return 0


def interruptible(out: str) -> int:
    """Sleep until SIGINT; note that it came as KeyboardInterrupt."""
    try:
        (Path(out) / "ready").write_text("yes")
        time.sleep(60)
    except KeyboardInterrupt:
        (Path(out) / "interrupted").write_text("yes")
        return 4
    return 0


def draw(out: str) -> int:
    """Leave the first numbers this rank's random generators give."""
    import random

    import numpy as np

    rank = os.environ["RANK"]
    note = {"torch": torch.rand(1).item(), "numpy": float(np.random.rand()),
            "random": random.random()}
    (Path(out) / f"draw-{os.getpid()}-{rank}.json").write_text(json.dumps(note))
    return 0
