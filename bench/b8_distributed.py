"""B8: data-parallel overhead. The MLP of B1 at batch 256 trained by 1 process (no
torch.distributed) and by 2 processes forked by a rank server (gloo), as a data-parallel job's
ranks are, each with one torch thread; the gradient all-reduce timed alone; and the start-up
per job (from the launch until every rank has joined the process group), for the rank server
and, for comparison, for torchrun starting two fresh Python processes.

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
from worker.dist_launch import RankServer, launch

STARTUP_TARGET = 3.0  # seconds
OVERHEAD_TARGET = 0.15  # all-reduce per step, of a 1-process step
TORCHRUN = ["--nnodes", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0",
            "--max-restarts", "0", "--monitor-interval", "0.2", "--nproc-per-node", "2"]


def _local(out: Path, rows: int, epochs: int) -> dict[str, Any]:
    subprocess.run([sys.executable, "-m", "bench.b8_rank", "local", str(out), str(rows),
                    str(epochs)], check=True, capture_output=True, timeout=600)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _forked(server: RankServer, out: Path, *args: str) -> tuple[dict[str, Any], float]:
    """Two ranks forked by the server; their result and the launch's start time."""
    began = time.time()
    ranks = launch(processes=2, job_id="b8", attempt=1, run_dir=out.parent, threads=1,
                   timeout=60, target="bench.b8_rank:forked", args=[args[0], str(out),
                                                                     *args[1:]], server=server)
    code = ranks.wait(600)
    if code != 0:
        raise RuntimeError(f"a B8 rank exited {code}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result, began


def _torchrun_startup(out: Path) -> float:
    began = time.time()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", *TORCHRUN, "-m",
                    "bench.b8_rank", "noop", str(out), "0", "0"], check=True,
                   capture_output=True, timeout=600)
    joined: float = json.loads(out.read_text())["joined_at"]
    return joined - began


def run(config: Config, services: Services) -> BenchResult:
    del services  # no stack: the rank server and dlmodels alone
    result = BenchResult("B8", "data-parallel training: 2 processes vs 1, all-reduce, start-up")
    rows, epochs = config.pick(20_000, 1024), config.pick(4, 2)
    server = RankServer(["bench.b8_rank"])
    try:
        server.wait_ready()  # once per worker process, when the worker starts
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.json"
            one = _local(out, rows, epochs)
            two, began = _forked(server, out, "ddp", str(rows), str(epochs))
            startups = [two["joined_at"] - began]
            for _ in range(config.pick(4, 1)):  # more start-ups, with nothing to train
                noop, began = _forked(server, out, "noop", "0", "0")
                startups.append(noop["joined_at"] - began)
            torchrun = [_torchrun_startup(out) for _ in range(config.pick(2, 1))]
    finally:
        server.process.kill()
        server.process.wait()
    case = f"MLP 784-256-128-64-10 b256, {rows} rows"
    # Epoch 1 is the warm-up (allocations, the first DDP buckets).
    step1 = [s / one["steps"] * 1000 for s in one["epoch_seconds"][1:]]
    step2 = [s / two["steps"] * 1000 for s in two["epoch_seconds"][1:]]
    anchor = result.add(case, "1 process", "time per step", "ms", step1)
    result.add(case, "2 processes", "time per step", "ms", step2, anchor=anchor)
    result.add(case, "2 processes", "all-reduce of the gradients", "ms", two["allreduce_ms"])
    launch_anchor = result.add("2 processes", "torchrun, fresh processes",
                               "launch until every rank joined", "s", torchrun)
    result.add("2 processes", "forked by the rank server", "launch until every rank joined",
               "s", startups, anchor=launch_anchor)
    share = statistics.median(two["allreduce_ms"]) / statistics.median(step1)
    result.target("all-reduce per step, of a 1-process step", share * 100, "%",
                  f"< {OVERHEAD_TARGET * 100:g}", share < OVERHEAD_TARGET)
    result.target("start-up per job", statistics.median(startups), "s",
                  f"< {STARTUP_TARGET:g}", statistics.median(startups) < STARTUP_TARGET)
    # Float32 sums in another order (two half-batch gradients, then their mean) drift apart
    # slowly over hundreds of Adam steps; the unit tests check equality on short runs.
    drift = max(abs(a - b) / abs(a) for a, b in zip(one["loss"], two["loss"], strict=True))
    result.notes.append(f"per-epoch losses, 1 vs 2 processes: {one['loss']} vs {two['loss']} "
                        f"(largest relative difference {drift:.2g})")
    return result
