"""Callbacks: how a caller watches or steers `fit` (progress, tracking, cancel, early stop)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from dlmodels.spec import EarlyStopping as EarlyStoppingSpec

if TYPE_CHECKING:
    from dlmodels.builder import SpecModel
    from dlmodels.training import History


@dataclass
class FitState:
    """What callbacks may read, and `stop_training`, which they may set."""

    model: SpecModel
    optimizer: torch.optim.Optimizer
    epochs: int
    scheduler: Any = None
    generator: torch.Generator | None = None
    epoch: int = 0
    stop_training: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Callback:
    """Override what you need; every hook is a no-op by default."""

    def on_train_begin(self, state: FitState) -> None: ...

    def on_batch_end(self, state: FitState, batch: int) -> None: ...

    def on_epoch_end(self, state: FitState, epoch: int, logs: dict[str, float]) -> None: ...

    def on_train_end(self, state: FitState, history: History) -> None: ...


_HIGHER_IS_BETTER = {"accuracy", "precision", "recall", "f1", "r2"}


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs.

    Its progress lives in `state.extra`, so a checkpoint of the state carries it and a resumed
    run stops at the same epoch, with the same best weights, as one never interrupted."""

    KEY = "early_stopping"

    def __init__(self, spec: EarlyStoppingSpec) -> None:
        self.spec = spec
        self.sign = 1.0 if spec.monitor.removeprefix("val_") in _HIGHER_IS_BETTER else -1.0
        self.best = -math.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.wait = 0

    def on_train_begin(self, state: FitState) -> None:
        saved = state.extra.get(self.KEY)
        if saved is not None:
            self.best, self.best_epoch, self.wait = saved["best"], saved["best_epoch"], \
                saved["wait"]
            self.best_state = saved["best_state"]

    def on_epoch_end(self, state: FitState, epoch: int, logs: dict[str, float]) -> None:
        score = self.sign * logs[self.spec.monitor]
        if score > self.best + self.spec.min_delta:
            self.best, self.best_epoch, self.wait = score, epoch, 0
            if self.spec.restore_best_weights:
                self.best_state = {k: v.detach().clone()
                                   for k, v in state.model.state_dict().items()}
        else:
            self.wait += 1
            if self.wait >= self.spec.patience:  # as Keras: patience epochs without improvement
                state.stop_training = True
        state.extra[self.KEY] = {"best": self.best, "best_epoch": self.best_epoch,
                                 "wait": self.wait, "best_state": self.best_state}

    def on_train_end(self, state: FitState, history: History) -> None:
        history.best_epoch = self.best_epoch
        if self.best_state is not None:
            state.model.load_state_dict(self.best_state)
