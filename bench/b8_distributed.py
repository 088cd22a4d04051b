"""B8: data-parallel overhead. The MLP of B1 at batch 256 trained by 1 process (no
torch.distributed) and by 2 processes under torchrun (gloo), each with one torch thread; the
gradient all-reduce timed alone; and the launcher's start-up per job (torchrun until every
rank has joined the process group, as a job's launch pays it).

On this 2-core shared machine no speed-up is expected: the figures show the overhead."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import BenchResult, Config
from bench.stack import Services
from worker.dist_launch import ROOT_ARGS

STARTUP_TARGET = 3.0  # seconds
OVERHEAD_TARGET = 0.15  # all-reduce per step, of a 1-process step


def _torchrun(processes: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *ROOT_ARGS,
            "--nproc-per-node", str(processes), "-m", "bench.b8_rank", *args]


def _run(cmd: list[str], out: Path) -> dict[str, Any]:
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def run(config: Config, services: Services) -> BenchResult:
    del services  # no stack: torchrun and dlmodels alone
    result = BenchResult("B8", "data-parallel training: 2 processes vs 1, all-reduce, start-up")
    rows, epochs = config.pick(20_000, 1024), config.pick(4, 2)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        one = _run([sys.executable, "-m", "bench.b8_rank", "local", str(out), str(rows),
                    str(epochs)], out)
        began = time.time()
        two = _run(_torchrun(2, "ddp", str(out), str(rows), str(epochs)), out)
        startups, failed = [two["joined_at"] - began], 0
        for _ in range(config.pick(2, 0)):  # more start-ups, with nothing to train
            began = time.time()
            try:
                joined = _run(_torchrun(2, "noop", str(out), "0", "0"), out)["joined_at"]
            except subprocess.CalledProcessError:  # seen once under a load average of 25
                failed += 1
                continue
            startups.append(joined - began)
        if failed:
            result.notes.append(f"{failed} launcher start-up run(s) failed and were left out")
    case = f"MLP 784-256-128-64-10 b256, {rows} rows"
    # Epoch 1 is the warm-up (allocations, the first DDP buckets).
    step1 = [s / one["steps"] * 1000 for s in one["epoch_seconds"][1:]]
    step2 = [s / two["steps"] * 1000 for s in two["epoch_seconds"][1:]]
    anchor = result.add(case, "1 process", "time per step", "ms", step1)
    result.add(case, "2 processes", "time per step", "ms", step2, anchor=anchor)
    result.add(case, "2 processes", "all-reduce of the gradients", "ms", two["allreduce_ms"])
    result.add("torchrun, 2 processes", "launch until every rank joined", "start-up", "s",
               startups)
    share = statistics.median(two["allreduce_ms"]) / statistics.median(step1)
    result.target("all-reduce per step, of a 1-process step", share * 100, "%",
                  f"< {OVERHEAD_TARGET * 100:g}", share < OVERHEAD_TARGET)
    result.target("launcher start-up per job", statistics.median(startups), "s",
                  f"< {STARTUP_TARGET:g}", statistics.median(startups) < STARTUP_TARGET)
    # Float32 sums in another order (two half-batch gradients, then their mean) drift apart
    # slowly over hundreds of Adam steps; the unit tests check equality on short runs.
    drift = max(abs(a - b) / abs(a) for a, b in zip(one["loss"], two["loss"], strict=True))
    result.notes.append(f"per-epoch losses, 1 vs 2 processes: {one['loss']} vs {two['loss']} "
                        f"(largest relative difference {drift:.2g})")
    return result
