"""A checkpoint taken at the end of an epoch resumes training exactly where it stopped."""

from __future__ import annotations

import io

import torch

from dlmodels.builder import build_model
from dlmodels.callbacks import Callback, FitState
from dlmodels.checkpoint import checkpoint
from dlmodels.datasets import load_builtin
from dlmodels.spec import JobSpec
from dlmodels.training import fit

SPEC = JobSpec.model_validate({
    "model": {"input_shape": [4], "layers": [
        {"type": "dense", "units": 16, "activation": "relu"}, {"type": "dropout", "rate": 0.2},
        {"type": "dense", "units": 3, "activation": "softmax"}]},
    "training": {"optimizer": {"type": "adam", "lr": 0.01}, "loss": "cross_entropy",
                 "epochs": 10, "batch_size": 16, "seed": 7, "validation_split": 0.2,
                 "standardize": True, "lr_scheduler": {"type": "step", "step_size": 3}},
    "data": {"builtin": "iris"}})


class StopAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.saved: bytes = b""

    def on_epoch_end(self, state: FitState, epoch: int, logs: dict[str, float]) -> None:
        if epoch == self.epoch:
            buffer = io.BytesIO()
            torch.save(checkpoint(state), buffer)
            self.saved = buffer.getvalue()
            state.stop_training = True


def _model() -> torch.nn.Module:
    torch.manual_seed(7)
    return build_model(SPEC.model, loss="cross_entropy", standardize=True)


def test_resumed_training_equals_uninterrupted_training() -> None:
    data = load_builtin("iris")
    straight = fit(_model(), data.x, data.y, SPEC.training)  # type: ignore[arg-type]
    stopper = StopAfter(4)
    fit(_model(), data.x, data.y, SPEC.training, callbacks=[stopper])  # type: ignore[arg-type]
    saved = torch.load(io.BytesIO(stopper.saved), weights_only=True)
    resumed = fit(_model(), data.x, data.y, SPEC.training, resume=saved)  # type: ignore[arg-type]
    assert [row["epoch"] for row in resumed.epochs] == list(range(5, 11))
    assert resumed.epochs[-1]["loss"] == straight.epochs[-1]["loss"]
    assert resumed.epochs[-1]["lr"] == straight.epochs[-1]["lr"]


EARLY = type(SPEC.training).model_validate({
    **SPEC.training.model_dump(exclude={"lr_scheduler"}), "epochs": 40,
    "early_stopping": {"monitor": "val_loss", "patience": 3, "min_delta": 0.02,
                       "restore_best_weights": True}})


def test_a_resumed_run_stops_early_at_the_same_epoch_with_the_same_best_weights() -> None:
    data = load_builtin("iris")
    straight_model = _model()
    straight = fit(straight_model, data.x, data.y, EARLY)  # type: ignore[arg-type]
    last = straight.epochs[-1]["epoch"]
    assert straight.stopped_early and straight.best_epoch < last - 1, (last, straight.best_epoch)
    # From every epoch in between, including those where patience was already running out.
    for stop_at in range(1, last):
        stopper = StopAfter(stop_at)
        fit(_model(), data.x, data.y, EARLY, callbacks=[stopper])  # type: ignore[arg-type]
        saved = torch.load(io.BytesIO(stopper.saved), weights_only=True)
        model = _model()
        resumed = fit(model, data.x, data.y, EARLY, resume=saved)  # type: ignore[arg-type]
        assert resumed.epochs == straight.epochs[stop_at:], stop_at
        assert (resumed.best_epoch, resumed.stopped_early) == (straight.best_epoch, True)
        for name, value in straight_model.state_dict().items():
            assert torch.equal(model.state_dict()[name], value), (stop_at, name)
