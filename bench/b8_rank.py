"""One process of B8: `python -m bench.b8_rank MODE OUT [ROWS EPOCHS]`, MODE `local` (one
process, no torch.distributed), `ddp` (a rank under torchrun) or `noop` (join the process
group and leave: the launcher's start-up). Writes its measurements as JSON to OUT."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from bench.b1_loops import SEED, _teacher_labels
from dlmodels.builder import build_model
from dlmodels.callbacks import Callback, FitState
from dlmodels.distributed import DataParallel, Local
from dlmodels.spec import ModelSpec, TrainingSpec
from dlmodels.training import fit

MLP = {"input_shape": [784], "layers": [
    {"type": "dense", "units": 256, "activation": "relu"},
    {"type": "dense", "units": 128, "activation": "relu"},
    {"type": "dense", "units": 64, "activation": "relu"},
    {"type": "dense", "units": 10, "activation": "softmax"}]}
BATCH = 256


class EpochClock(Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.mark = 0.0

    def on_train_begin(self, state: FitState) -> None:
        self.mark = time.perf_counter()

    def on_epoch_end(self, state: FitState, epoch: int, logs: dict[str, float]) -> None:
        now = time.perf_counter()
        self.seconds.append(now - self.mark)
        self.mark = now


def train(strategy: Any, rows: int, epochs: int) -> dict[str, Any]:
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((rows, 784), dtype=np.float32)
    y = _teacher_labels(x, 10, rng)
    training = TrainingSpec.model_validate({
        "optimizer": {"type": "adam", "lr": 0.001}, "loss": "cross_entropy", "epochs": epochs,
        "batch_size": BATCH, "seed": SEED})
    torch.manual_seed(SEED)
    model = build_model(ModelSpec.model_validate(MLP), loss="cross_entropy")
    clock = EpochClock()
    history = fit(model, x, y, training, device=torch.device("cpu"), strategy=strategy,
                  callbacks=[clock])
    steps = -(-rows // BATCH)
    return {"epoch_seconds": clock.seconds, "steps": steps,
            "loss": [e["loss"] for e in history.epochs],
            "params": sum(p.numel() for p in model.parameters())}


def allreduce_ms(numel: int, rounds: int = 50) -> list[float]:
    """One step's gradient all-reduce, timed alone: the model's parameters as one tensor."""
    grads = torch.ones(numel)
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        dist.all_reduce(grads)
        times.append((time.perf_counter() - began) * 1000)
    return times


def main(mode: str, out: Path, rows: int, epochs: int) -> None:
    torch.set_num_threads(1)
    if mode == "local":
        result = train(Local(), rows, epochs)
    else:
        strategy = DataParallel.start(device="cpu", timeout=60)
        try:
            result = {"joined_at": time.time()}
            dist.barrier()  # leave together: a rank gone early can fail the other's exit
            if mode == "ddp":
                result |= train(strategy, rows, epochs)
                result["allreduce_ms"] = allreduce_ms(result["params"])
        finally:
            DataParallel.stop()
        if strategy.rank != 0:
            return
    out.write_text(json.dumps(result))


def forked(mode: str, out: str, rows: str, epochs: str) -> None:
    """As the rank server calls it (worker.dist_launch): every argument a string."""
    main(mode, Path(out), int(rows), int(epochs))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), *(int(a) for a in sys.argv[3:5]))
