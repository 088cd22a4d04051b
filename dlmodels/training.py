"""`fit`: the training loop, Keras' `model.fit` for a SpecModel, reporting through callbacks.

The loop is written for speed from the first line: tensors are built and moved to the device
once, batches are taken by index (no DataLoader over in-memory tensors), and nothing syncs with
the device inside an epoch: the loss and metrics accumulate as tensors and are read once per
epoch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from dlmodels.builder import SpecModel
from dlmodels.callbacks import Callback, EarlyStopping, FitState
from dlmodels.checkpoint import restore
from dlmodels.distributed import Forward, Local, Strategy, min_last_batch
from dlmodels.errors import SpecError, TrainingDiverged
from dlmodels.losses import LOSSES, decode_labels, target_labels
from dlmodels.metrics import METRICS, Metric, create_metric
from dlmodels.optimizers import PlateauLR, build_scheduler
from dlmodels.spec import TrainingSpec
from dlmodels.validate import validation_size


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    best_epoch: int | None = None


def resolve_device(device: str, precision: str = "fp32") -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda was asked for but this machine has no CUDA GPU")
    if device == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise RuntimeError("precision bf16 was asked for but this GPU has no bfloat16 support")
    return torch.device(device)


def prepare_targets(y: np.ndarray, loss: str) -> torch.Tensor:
    """y as the loss takes it: class ids (N,) int64, or float32 shaped (N, *outputs)."""
    if LOSSES.get(loss).targets == "class_index":
        return torch.as_tensor(y.reshape(len(y)), dtype=torch.int64)
    y = y.astype(np.float32)
    return torch.as_tensor(y.reshape(len(y), 1) if y.ndim == 1 else y)


def split(n: int, fraction: float, seed: int | None,
          labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded shuffled split (unlike Keras' take-the-last-rows, it works on sorted data).

    With class labels it is stratified: each class gives the same share to validation, so a
    small validation set still sees every class in proportion.
    """
    rng = np.random.default_rng(seed)
    n_val = validation_size(n, fraction)
    if labels is None or n_val == 0:
        order = rng.permutation(n)
    else:
        # Round-robin over classes, each shuffled: the first n_val rows hold every class in
        # proportion to its size.
        groups = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
        rank = np.concatenate([np.arange(len(g)) / len(g) for g in groups])
        rows = np.concatenate(groups)
        order = rows[np.lexsort((rng.random(len(rows)), rank))]
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class _Meters:
    """The loss sum and the chosen metrics, accumulated on the device within one pass."""

    def __init__(self, training: TrainingSpec, num_classes: int, device: torch.device) -> None:
        self.loss_name = training.loss
        self.metrics: dict[str, Metric] = {
            name: create_metric(name, num_classes=num_classes, device=device)
            for name in training.metrics}
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.count = 0
        self.first_bad = torch.full((), float(2**53), device=device, dtype=torch.float64)

    def add_loss(self, loss: torch.Tensor, rows: int) -> None:
        self.loss_sum += loss.detach() * rows
        self.count += rows

    def note_finite(self, loss: torch.Tensor, batch: int) -> None:
        """Remember the first batch whose loss was not finite (no host sync)."""
        self.first_bad = torch.minimum(self.first_bad, torch.where(
            torch.isfinite(loss.detach()), self.first_bad, batch))

    def update(self, loss: torch.Tensor, outputs: torch.Tensor, target: torch.Tensor) -> None:
        self.add_loss(loss, len(target))
        if not self.metrics:  # the usual case in training: nothing more per batch
            return
        outputs = outputs.detach().float()  # bf16 under autocast; a no-op for float32
        labels = None
        for name, metric in self.metrics.items():
            if METRICS.get(name).kind == "regression":
                metric.update(outputs, target)
                continue
            if labels is None:  # decoded once per batch, shared by every class metric
                labels = decode_labels(self.loss_name, outputs), target_labels(target)
            metric.update(*labels)

    def compute(self, prefix: str = "") -> dict[str, float]:
        logs = {f"{prefix}loss": float(self.loss_sum.item() / max(self.count, 1))}
        logs |= {f"{prefix}{name}": m.compute() for name, m in self.metrics.items()}
        return logs


def _class_labels(ys: torch.Tensor, loss: str) -> np.ndarray | None:
    if LOSSES.get(loss).targets == "class_index":
        return ys.numpy()
    if loss == "bce" and ys.shape[-1] == 1:
        return (ys[:, 0] > 0.5).numpy()
    return None


def num_classes(outputs: torch.Tensor) -> int:
    """Classes the outputs can express: one unit is a binary decision, k units are k classes."""
    return max(int(outputs.shape[-1]) if outputs.dim() > 1 else 1, 2)


@dataclass
class _Setup:
    """Everything one `fit` call prepares once, before the first epoch."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    loss_fn: nn.Module
    classes: int
    batchnorm: bool
    strategy: Strategy
    forward: Forward


def fit(model: SpecModel, x: np.ndarray, y: np.ndarray, training: TrainingSpec, *,
        callbacks: Sequence[Callback] = (), device: torch.device | None = None,
        resume: dict[str, Any] | None = None, strategy: Strategy | None = None) -> History:
    """Train `model` in place on (x, y) as `training` says; returns the per-epoch history.

    Callbacks see every epoch's logs (loss, metrics, val_*) and may stop training by setting
    `state.stop_training` (early stopping, cancellation) or raising. `resume` is a dict made by
    `dlmodels.checkpoint.checkpoint()` at the end of an epoch: training goes on from the next one.
    `strategy` spreads the run over processes (`dlmodels.distributed.DataParallel`); pass the
    worker's callbacks to rank 0 only. Default: one process, no torch.distributed at all.
    """
    strategy = strategy or Local()
    device = device or resolve_device(training.device, training.precision)
    if training.seed is not None:
        torch.manual_seed(training.seed)
    setup = _prepare(model, x, y, training, device, strategy)
    optimizer = training.optimizer.build(p for p in model.parameters() if p.requires_grad)
    scheduler = build_scheduler(training.lr_scheduler, optimizer, training.epochs) \
        if training.lr_scheduler else None
    generator = torch.Generator().manual_seed(strategy.shared_seed(
        training.seed if training.seed is not None else int(torch.seed() % 2**63)))
    state = FitState(model=model, optimizer=optimizer, epochs=training.epochs,
                     scheduler=scheduler, generator=generator)
    if resume is not None:
        restore(state, resume)
    # Early stopping first: the callbacks after it (a checkpoint) see its decision.
    callbacks = [*([EarlyStopping(training.early_stopping)] if training.early_stopping else []),
                 *callbacks]
    for callback in callbacks:
        callback.on_train_begin(state)
    history = History()
    for epoch in range(state.epoch + 1, training.epochs + 1):
        state.epoch = epoch
        logs = _train_epoch(state, setup, training, callbacks)
        if len(setup.x_val):  # once, over the whole validation set (rank 0's, broadcast)
            logs |= strategy.from_rank0(
                evaluate(model, setup.x_val, setup.y_val, training, setup.classes,
                         prefix="val_") if strategy.rank == 0 else None)
        logs["lr"] = optimizer.param_groups[0]["lr"]
        _step_scheduler(scheduler, training, logs)
        history.epochs.append({"epoch": epoch, **logs})
        for callback in callbacks:
            callback.on_epoch_end(state, epoch, logs)
        if strategy.world > 1:  # rank 0's callbacks decide for every rank
            state.stop_training = strategy.from_rank0(state.stop_training)
        if state.stop_training:
            history.stopped_early = epoch < training.epochs
            break
    for callback in callbacks:
        callback.on_train_end(state, history)
    model.eval()
    return history


def _prepare(model: SpecModel, x: np.ndarray, y: np.ndarray, training: TrainingSpec,
             device: torch.device, strategy: Strategy) -> _Setup:
    ys = prepare_targets(y, training.loss)
    # Every process of a data-parallel job must hold the same split: unseeded, rank 0's draw.
    seed = training.seed if training.seed is not None else strategy.shared_seed(
        int(np.random.default_rng().integers(2**63)))
    train_idx, val_idx = split(len(x), training.validation_split, seed,
                               labels=_class_labels(ys, training.loss))
    xs = torch.as_tensor(x)
    if model.standardize:
        _fit_standardization(model, xs[train_idx])
    model.to(device)
    # Moved once; every batch is an index into these device tensors.
    x_train, y_train = _to_device(xs[train_idx], device), _to_device(ys[train_idx], device)
    # Eval mode: batchnorm cannot take batch statistics of one sample (and must not learn them).
    model.eval()
    with torch.no_grad():
        classes = num_classes(model.logits(x_train[:1]))
    batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if strategy.world > 1 and len(x_train) < min_last_batch(strategy.world, batchnorm):
        raise SpecError(f"the training set has {len(x_train)} rows, too few for "
                        f"{strategy.world} processes", loc=("training", "distributed"))
    return _Setup(x_train, y_train, _to_device(xs[val_idx], device),
                  _to_device(ys[val_idx], device),
                  LOSSES.get(training.loss).make(), classes, batchnorm, strategy,
                  strategy.wrap(model, device))


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """To the GPU from pinned memory, asynchronously (the copies overlap); on CPU, as is."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _train_epoch(state: FitState, setup: _Setup, training: TrainingSpec,
                 callbacks: Sequence[Callback]) -> dict[str, float]:
    model, optimizer, strategy = state.model, state.optimizer, setup.strategy
    x_train, y_train = setup.x_train, setup.y_train
    meters = _Meters(training, setup.classes, x_train.device)
    model.train()
    order = torch.randperm(len(x_train), generator=state.generator).to(x_train.device) \
        if training.shuffle else None
    if order is None and strategy.world > 1:
        order = torch.arange(len(x_train), device=x_train.device)
    starts = _batch_starts(len(x_train), training.batch_size,
                           min_last_batch(strategy.world, setup.batchnorm))
    # Only callbacks that watch batches are called per batch (most only watch epochs).
    batch_callbacks = [c for c in callbacks
                       if type(c).on_batch_end is not Callback.on_batch_end]
    mixed = autocast(training, x_train.device)  # one context, entered per batch
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []  # a distributed run's outputs, for metrics
    for batch, start in enumerate(starts):
        stop = starts[batch + 1] if batch + 1 < len(starts) else len(x_train)
        if order is None:
            xb, yb = x_train[start:stop], y_train[start:stop]  # views, no copy
        else:
            idx = strategy.shard(order[start:stop])  # this rank's rows of the global batch
            xb, yb = x_train[idx], y_train[idx]
        with mixed:
            outputs = setup.forward(xb)
            loss = setup.loss_fn(outputs, yb)
        optimizer.zero_grad(set_to_none=True)
        # Weighted by this rank's share: the ranks' averaged gradient is the global batch's.
        (loss * (len(yb) * strategy.world / (stop - start)) if strategy.world > 1
         else loss).backward()
        optimizer.step()
        if strategy.world == 1:
            meters.update(loss, outputs, yb)
        else:  # metrics once per epoch, over every rank's outputs
            meters.add_loss(loss, len(yb))
            meters.note_finite(loss, batch)
            if meters.metrics:
                kept.append((outputs.detach().float(), yb))
        for callback in batch_callbacks:
            callback.on_batch_end(state, batch)
        if state.stop_training:
            break
    logs = meters.compute() if strategy.world == 1 else \
        _reduce(meters, kept, training, setup, state.epoch)
    _check_finite(logs["loss"], state.epoch)
    return logs


def _reduce(meters: _Meters, kept: list[tuple[torch.Tensor, torch.Tensor]],
            training: TrainingSpec, setup: _Setup, epoch: int) -> dict[str, float]:
    """The epoch's logs over every rank: loss summed, metrics from every rank's outputs."""
    strategy = setup.strategy
    # The loss sum and row count, then each rank's first non-finite batch in its own slot: a
    # diverged loss names the rank whose share diverged first (the others follow a step later).
    world = strategy.world
    totals = torch.zeros(world + 2, dtype=torch.float64, device=meters.loss_sum.device)
    totals[0], totals[1], totals[2 + strategy.rank] = meters.loss_sum, meters.count, \
        meters.first_bad
    totals = strategy.reduce_sum(totals).cpu()
    logs = {"loss": float(totals[0].item() / max(float(totals[1].item()), 1.0))}
    if not math.isfinite(logs["loss"]):
        first = totals[2:].min()
        ranks = ", ".join(str(r) for r in range(world) if totals[2 + r] == first)
        _check_finite(logs["loss"], epoch, f" (first in the share of rank {ranks}, batch "
                                           f"{int(first) + 1})")
    if not meters.metrics:
        return logs
    gathered = strategy.gather_rows([torch.cat([o for o, _ in kept]),
                                     torch.cat([t for _, t in kept])])
    if gathered is not None:  # rank 0
        full = _Meters(training, setup.classes, torch.device("cpu"))
        full.update(torch.zeros(()), *gathered)
        logs |= {k: v for k, v in full.compute().items() if k != "loss"}
    metrics: dict[str, float] = strategy.from_rank0(logs)
    return metrics


def _batch_starts(n: int, batch_size: int, min_last: int = 1) -> list[int]:
    """Where each batch starts; a last batch shorter than `min_last` rows joins the one before
    (batchnorm cannot normalise one row; in a distributed run every rank needs its share)."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < min_last:
        starts.pop()
    return starts


def evaluate(model: SpecModel, x: torch.Tensor, y: torch.Tensor, training: TrainingSpec,
             classes: int, *, prefix: str = "", batch_size: int = 4096) -> dict[str, float]:
    """Loss and metrics over (x, y) in eval mode (dropout off, batchnorm's running stats)."""
    was_training = model.training
    model.eval()
    meters = _Meters(training, classes, x.device)
    loss_fn = LOSSES.get(training.loss).make()
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            with autocast(training, x.device):
                outputs = model.logits(xb)
                loss = loss_fn(outputs, yb)
            meters.update(loss, outputs, yb)
    model.train(was_training)
    return meters.compute(prefix)


def autocast(training: TrainingSpec, device: torch.device) -> AbstractContextManager[Any]:
    """bfloat16 autocast for `precision: bf16` (matmuls and convolutions in bf16, reductions
    and the loss kept in float32 by autocast's own rules)."""
    if training.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _fit_standardization(model: SpecModel, x: torch.Tensor) -> None:
    """Learn the z-score from the training rows only (never the validation rows)."""
    x = x.double()
    mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False)
    # A constant feature would divide by zero; leave it unscaled instead.
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    model.input_mean.copy_(mean.float())
    model.input_std.copy_(std.float())


def _check_finite(loss: float, epoch: int, where: str = "") -> None:
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"the training loss became {loss} at epoch {epoch}{where}; the model diverged. Try "
            "a lower learning rate, `standardize: true`, or a different initialisation")


def _step_scheduler(scheduler: Any, training: TrainingSpec, logs: dict[str, float]) -> None:
    if scheduler is None:
        return
    if isinstance(training.lr_scheduler, PlateauLR):
        scheduler.step(logs[training.lr_scheduler.monitor])
    else:
        scheduler.step()


def predict(model: SpecModel, x: torch.Tensor, loss: str | None = None,
            batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Outputs (probabilities when the head was fused) and, for classification losses, labels."""
    if model.training:  # eval() walks every module: not on each call of a served model
        model.eval()
    outs, logits_all = [], []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            logits = model.logits(x[start:start + batch_size])
            logits_all.append(logits)
            outs.append(model.head(logits))
    outputs, logits = (outs[0], logits_all[0]) if len(outs) == 1 else \
        (torch.cat(outs), torch.cat(logits_all))
    if loss is None or LOSSES.get(loss).fused_activation is None:
        return outputs, None
    return outputs, decode_labels(loss, logits)


