"""B1's cases and its three reference loops: the best hand-written PyTorch loop, the usual
DataLoader(TensorDataset) loop and PyTorch Lightning's Trainer (barebones: its extras off).

Every loop trains the same initial weights on the same batches in the same order as dlmodels'
`fit` (a seeded `torch.randperm` per epoch, Adam, the loss summed in float64 on the device), so
their final losses can be compared with `fit`'s. Each returns `Run`: the time of each epoch
(after setup), of the whole call, and the last epoch's mean loss.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

LR = 1e-3
SEED = 0


@dataclass
class Case:
    name: str
    layers: list[dict[str, Any]]
    input_shape: list[int]
    x: np.ndarray
    y: np.ndarray
    batch_size: int
    epochs: int


@dataclass
class Run:
    epoch_seconds: list[float] = field(default_factory=list)
    call_seconds: float = 0.0
    final_loss: float = float("nan")


def _teacher_labels(x: np.ndarray, classes: int, rng: np.random.Generator) -> np.ndarray:
    flat = x.reshape(len(x), -1)
    return np.argmax(flat @ rng.standard_normal((flat.shape[1], classes)), axis=1)


def cases(smoke: bool) -> list[Case]:
    """MLP 784-256-128-64-10 at batch 32 and 256, an LSTM and a small CNN (synthetic data)."""
    rng = np.random.default_rng(SEED)
    n_mlp, n_small, epochs = (1024, 256, 1) if smoke else (20_000, 4096, 2)
    x = rng.standard_normal((n_mlp, 784), dtype=np.float32)
    y = _teacher_labels(x, 10, rng)
    mlp: list[dict[str, Any]] = [
        {"type": "dense", "units": 256, "activation": "relu"},
        {"type": "dense", "units": 128, "activation": "relu"},
        {"type": "dense", "units": 64, "activation": "relu"},
        {"type": "dense", "units": 10, "activation": "softmax"}]
    seq = rng.standard_normal((n_small, 20, 8), dtype=np.float32)
    seq_y = (seq[:, :, 0].sum(axis=1) > 0).astype(np.int64)
    img = rng.standard_normal((n_small, 1, 28, 28), dtype=np.float32)
    img_y = _teacher_labels(img, 10, rng)
    cnn: list[dict[str, Any]] = [
        {"type": "conv2d", "filters": 8, "kernel_size": 3, "activation": "relu"},
        {"type": "maxpool2d", "pool_size": 2},
        {"type": "conv2d", "filters": 16, "kernel_size": 3, "activation": "relu"},
        {"type": "maxpool2d", "pool_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 10, "activation": "softmax"}]
    lstm: list[dict[str, Any]] = [{"type": "lstm", "units": 64},
                                  {"type": "dense", "units": 2, "activation": "softmax"}]
    return [
        Case("MLP 784-256-128-64-10 b32", mlp, [784], x, y, 32, epochs),
        Case("MLP 784-256-128-64-10 b256", mlp, [784], x, y, 256, epochs),
        Case("LSTM 20x8 u64 b64", lstm, [20, 8], seq, seq_y, 64, epochs),
        Case("CNN 1x28x28 c8-c16 b64", cnn, [1, 28, 28], img, img_y, 64, epochs),
    ]


def hand_written(net: nn.Module, case: Case) -> Run:
    """Tensors once, batches by index, no host-device sync inside an epoch."""
    run, begin = Run(), time.perf_counter()
    x, y = torch.as_tensor(case.x), torch.as_tensor(case.y)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    n, batch = len(x), case.batch_size
    net.train()
    mark = time.perf_counter()
    for _ in range(case.epochs):
        total = torch.zeros((), dtype=torch.float64)
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            xb, yb = x[idx], y[idx]
            loss = loss_fn(net(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(yb)
        run.final_loss = float(total.item() / n)  # one sync per epoch, as a logger needs
        now = time.perf_counter()
        run.epoch_seconds.append(now - mark)
        mark = now
    run.call_seconds = time.perf_counter() - begin
    return run


class SeededPermutation(Sampler[int]):
    """What `shuffle=True` does (a randperm per epoch), from a generator of its own: the
    DataLoader draws a seed from `loader.generator` per epoch, which would change the order."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=self.generator).tolist())

    def __len__(self) -> int:
        return self.n


def _loader(case: Case) -> DataLoader[tuple[torch.Tensor, ...]]:
    dataset = TensorDataset(torch.as_tensor(case.x), torch.as_tensor(case.y))
    return DataLoader(dataset, batch_size=case.batch_size,
                      sampler=SeededPermutation(len(case.x), SEED))


def dataloader(net: nn.Module, case: Case) -> Run:
    """The tutorial loop: DataLoader(TensorDataset) (per-sample indexing and collation)."""
    run, begin = Run(), time.perf_counter()
    loader = _loader(case)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    mark = time.perf_counter()
    for _ in range(case.epochs):
        total = torch.zeros((), dtype=torch.float64)
        for xb, yb in loader:
            loss = loss_fn(net(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(yb)
        run.final_loss = float(total.item() / len(case.x))
        now = time.perf_counter()
        run.epoch_seconds.append(now - mark)
        mark = now
    run.call_seconds = time.perf_counter() - begin
    return run


def lightning(net: nn.Module, case: Case) -> Run:
    """`Trainer(barebones=True)`: no logger, checkpointing, progress bar or model summary."""
    import pytorch_lightning as pl

    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
    run, begin = Run(), time.perf_counter()

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.loss_fn = nn.CrossEntropyLoss()
            self.total = torch.zeros((), dtype=torch.float64)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            xb, yb = batch
            loss: torch.Tensor = self.loss_fn(self.net(xb), yb)
            self.total += loss.detach() * len(yb)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=LR)

    class Clock(pl.Callback):
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            module.total = torch.zeros((), dtype=torch.float64)
            if not run.epoch_seconds and not hasattr(self, "mark"):
                self.mark = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            run.final_loss = float(module.total.item() / len(case.x))
            now = time.perf_counter()
            run.epoch_seconds.append(now - self.mark)
            self.mark = now

    trainer = pl.Trainer(max_epochs=case.epochs, accelerator="cpu", devices=1,
                         barebones=True, callbacks=[Clock()])
    trainer.fit(Module(), train_dataloaders=_loader(case))
    run.call_seconds = time.perf_counter() - begin
    return run
