"""Data-parallel `fit`: 2 processes (gloo, CPU) train like 1 process with the same seed and
global batch; the stored model predicts the same."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from dlmodels.builder import build_model
from dlmodels.callbacks import Callback, FitState
from dlmodels.checkpoint import checkpoint
from dlmodels.distributed import DataParallel
from dlmodels.spec import ModelSpec, TrainingSpec
from dlmodels.training import fit, predict

MLP = {"input_shape": [6], "layers": [
    {"type": "dense", "units": 16, "activation": "relu"},
    {"type": "dense", "units": 3, "activation": "softmax"}]}
CNN = {"input_shape": [1, 8, 8], "layers": [
    {"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": "relu"},
    {"type": "maxpool2d", "pool_size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 3, "activation": "softmax"}]}


def _data(model: dict[str, Any], n: int = 107) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, *model["input_shape"])).astype(np.float32)
    y = (x.reshape(n, -1)[:, :3].sum(1) > 0).astype(np.int64) + (x.reshape(n, -1)[:, 0] > 1)
    return x, y


def _training(**extra: Any) -> TrainingSpec:
    # 107 rows, 0.2 validation: 86 training rows in batches of 16, the last batch of 6 is
    # shared unevenly when there are 4 processes (the remainder rule).
    return TrainingSpec.model_validate({
        "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9}, "loss": "cross_entropy",
        "metrics": ["accuracy", "f1"], "epochs": 4, "batch_size": 16, "seed": 3,
        "validation_split": 0.2, **extra})


def _train(model_spec: dict[str, Any], training: TrainingSpec, strategy: Any = None,
           callbacks: Sequence[Callback] = (), resume: dict[str, Any] | None = None
           ) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    torch.manual_seed(training.seed or 0)
    model = build_model(ModelSpec.model_validate(model_spec), loss=training.loss)
    x, y = _data(model_spec)
    history = fit(model, x, y, training, device=torch.device("cpu"), strategy=strategy,
                  callbacks=callbacks, resume=resume)
    return history.epochs, model.state_dict()


class _SaveAt(Callback):
    def __init__(self, epoch: int, path: Path) -> None:
        self.epoch, self.path = epoch, path

    def on_epoch_end(self, state: FitState, epoch: int, logs: dict[str, float]) -> None:
        if epoch == self.epoch:
            torch.save(checkpoint(state), self.path)


def _rank(rank: int, world: int, init: str, model_spec: dict[str, Any], out: str,
          save_at: int) -> None:
    torch.set_num_threads(1)
    strategy = DataParallel.start(device="cpu", timeout=60, init_method=init, rank=rank,
                                  world=world)
    callbacks = [_SaveAt(save_at, Path(out) / "checkpoint.pt")] if rank == 0 and save_at else []
    try:
        epochs, weights = _train(model_spec, _training(), strategy, callbacks)
    finally:
        strategy.stop()
    torch.save({"epochs": epochs, "weights": weights}, Path(out) / f"rank{rank}.pt")
    _leave()


def _leave() -> None:
    """Exit as the rank server's ranks do (os._exit): an interpreter teardown after a gloo
    process group sometimes aborts in a C++ destructor ("terminate called without an active
    exception"), after the rank's work is done and saved."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _distributed(model_spec: dict[str, Any], world: int, tmp: Path, save_at: int = 0
                 ) -> list[dict[str, Any]]:
    init = f"tcp://127.0.0.1:{_free_port()}"
    mp.spawn(_rank, args=(world, init, model_spec, str(tmp), save_at), nprocs=world, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(world)]


@pytest.mark.parametrize(("name", "model_spec", "world"),
                         [("mlp", MLP, 2), ("cnn", CNN, 2), ("mlp", MLP, 4)])
def test_processes_train_like_one(name: str, model_spec: dict[str, Any], world: int,
                                  tmp_path: Path) -> None:
    torch.set_num_threads(1)
    local_epochs, local_weights = _train(model_spec, _training())
    ranks = _distributed(model_spec, world, tmp_path)
    for result in ranks:  # every rank reports the same, global numbers
        assert len(result["epochs"]) == len(local_epochs)
        for mine, theirs in zip(result["epochs"], local_epochs, strict=True):
            assert mine.keys() == theirs.keys()
            for key, value in theirs.items():
                assert mine[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (name, key)
        for key, value in local_weights.items():
            torch.testing.assert_close(result["weights"][key], value, rtol=1e-4, atol=1e-5)
    # The stored model (rank 0's, no DDP wrapper) predicts as the 1-process one.
    x, _ = _data(model_spec)
    spec = ModelSpec.model_validate(model_spec)
    one, two = (build_model(spec, loss="cross_entropy") for _ in range(2))
    one.load_state_dict(local_weights)
    two.load_state_dict(ranks[0]["weights"])
    (p1, l1), (p2, l2) = predict(one, torch.as_tensor(x), "cross_entropy"), \
        predict(two, torch.as_tensor(x), "cross_entropy")
    torch.testing.assert_close(p1, p2, rtol=1e-4, atol=1e-5)
    assert l1 is not None and l2 is not None and torch.equal(l1, l2)


def test_fit_needs_no_process_group() -> None:
    assert not torch.distributed.is_initialized()
    epochs, _ = _train(MLP, _training(epochs=1))
    assert len(epochs) == 1 and not torch.distributed.is_initialized()
    assert "RANK" not in os.environ


def test_a_distributed_checkpoint_resumes_on_one_process(tmp_path: Path) -> None:
    """Weights, optimizer and the shuffle generator are the same on every rank, so a
    checkpoint taken by 2 processes resumes on 1 exactly (and the other way round)."""
    torch.set_num_threads(1)
    full, full_weights = _train(MLP, _training())
    _distributed(MLP, 2, tmp_path, save_at=2)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    rest, weights = _train(MLP, _training(), resume=saved)
    assert [row["epoch"] for row in rest] == [3, 4]
    for mine, theirs in zip(rest, full[2:], strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
    for key, value in full_weights.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-4, atol=1e-5)


def _diverging_rank(rank: int, world: int, init: str) -> None:
    torch.set_num_threads(1)
    strategy = DataParallel.start(device="cpu", timeout=60, init_method=init, rank=rank,
                                  world=world)
    x, y = _data(MLP)
    x[1, 0] = np.nan  # row 1 of the first batch: rank 1's share (no shuffle)
    training = _training(shuffle=False, validation_split=0)
    model = build_model(ModelSpec.model_validate(MLP), loss=training.loss)
    try:
        fit(model, x, y, training, device=torch.device("cpu"), strategy=strategy)
    finally:
        strategy.stop()


def test_a_diverged_loss_names_the_rank() -> None:
    with pytest.raises(mp.ProcessRaisedException) as raised:
        mp.spawn(_diverging_rank, args=(2, f"tcp://127.0.0.1:{_free_port()}"), nprocs=2)
    assert "TrainingDiverged" in str(raised.value)
    assert "at epoch 1 (first in the share of rank 1, batch 1)" in str(raised.value)


def _unseeded_rank(rank: int, world: int, init: str, out: str) -> None:
    from dlmodels.training import _prepare

    torch.set_num_threads(1)
    strategy = DataParallel.start(device="cpu", timeout=60, init_method=init, rank=rank,
                                  world=world)
    try:
        model = build_model(ModelSpec.model_validate(MLP), loss="cross_entropy")
        x, y = _data(MLP)
        setup = _prepare(model, x, y, _training(seed=None), torch.device("cpu"), strategy)
    finally:
        strategy.stop()
    torch.save({"x_train": setup.x_train, "x_val": setup.x_val}, Path(out) / f"rank{rank}.pt")
    _leave()


def test_unseeded_processes_hold_the_same_split(tmp_path: Path) -> None:
    """Without a seed every process draws rank 0's split: a rank must never train on rows
    that are another rank's validation."""
    init = f"tcp://127.0.0.1:{_free_port()}"
    mp.spawn(_unseeded_rank, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert torch.equal(ranks[0]["x_train"], ranks[1]["x_train"])
    assert torch.equal(ranks[0]["x_val"], ranks[1]["x_val"])
