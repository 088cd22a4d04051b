"""Real learning: build_model + fit + predict/evaluate on the built-in datasets.

Every run is seeded (torch before building, `training.seed` for fit), so each test is
deterministic; sizes and epochs are chosen so the whole file trains in seconds on 2 cores.
"""

from __future__ import annotations

import io
import math
import re
from typing import Any

import numpy as np
import pytest
import torch

from dlmodels.builder import SpecModel, Summary, build_model
from dlmodels.callbacks import Callback, FitState
from dlmodels.datasets import load_builtin
from dlmodels.errors import TrainingDiverged
from dlmodels.serialize import load_weights, weights_to_bytes
from dlmodels.spec import HEIGHTS_LAYERS, ModelSpec, TrainingSpec
from dlmodels.training import History, evaluate, fit, predict, prepare_targets
from dlmodels.validate import (
    validate_data_shapes,
    validate_labels,
    validate_model,
    validate_training,
)

torch.set_num_threads(2)


def make(layers: list[dict[str, Any]], input_shape: list[int], training: dict[str, Any], *,
         dtype: str = "float", seed: int = 0) -> tuple[SpecModel, TrainingSpec]:
    """Parse and validate the spec, then build the model as the worker does (seeded)."""
    model, train_spec, _, _ = _make(layers, input_shape, training, dtype, seed)
    return model, train_spec


def _make(layers: list[dict[str, Any]], input_shape: list[int], training: dict[str, Any],
          dtype: str, seed: int) -> tuple[SpecModel, TrainingSpec, ModelSpec, Summary]:
    spec = ModelSpec.model_validate(
        {"input_shape": input_shape, "input_dtype": dtype, "layers": layers})
    train_spec = TrainingSpec.model_validate({"seed": seed, **training})
    summary = validate_model(spec)
    validate_training(spec, train_spec, summary)
    torch.manual_seed(seed)
    model = build_model(spec, loss=train_spec.loss, standardize=train_spec.standardize)
    return model, train_spec, spec, summary


def train(layers: list[dict[str, Any]], input_shape: list[int], training: dict[str, Any],
          x: np.ndarray, y: np.ndarray, *, dtype: str = "float", seed: int = 0,
          callbacks: tuple[Callback, ...] = ()) -> tuple[SpecModel, TrainingSpec, History]:
    """Validate everything the API validates, then fit."""
    model, train_spec, spec, summary = _make(layers, input_shape, training, dtype, seed)
    validate_data_shapes(spec, train_spec, summary, list(x.shape), list(y.shape), ("data",))
    validate_labels(train_spec, summary, y, ("data",))
    history = fit(model, x, y, train_spec, callbacks=callbacks, device=torch.device("cpu"))
    return model, train_spec, history


def holdout(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    cut = int(n * fraction)
    return order[cut:], order[:cut]


def adam(lr: float) -> dict[str, Any]:
    return {"type": "adam", "lr": lr}


# --- classic small problems ---------------------------------------------------------------------


def test_xor() -> None:
    data = load_builtin("xor")
    model, _, history = train(
        [{"type": "dense", "units": 8, "activation": "tanh"},
         {"type": "dense", "units": 1, "activation": "sigmoid"}],
        [2], {"optimizer": adam(0.05), "loss": "bce", "epochs": 300, "batch_size": 4,
              "metrics": ["accuracy"]}, data.x, data.y)
    probabilities, labels = predict(model, torch.as_tensor(data.x), "bce")
    assert labels is not None and labels.tolist() == [0, 1, 1, 0]
    # The sigmoid was fused into the loss for training; predict applies it again.
    assert ((probabilities > 0) & (probabilities < 1)).all()
    assert history.epochs[-1]["accuracy"] == 1.0


def test_heights_contract_example() -> None:
    """The contract's example: adam lr 0.001, mse, 100 epochs, batch 10, on raw kg and cm."""
    data = load_builtin("heights_weights")
    model, _, history = train(
        HEIGHTS_LAYERS, [1], {"optimizer": adam(0.001), "loss": "mse", "epochs": 100,
                              "batch_size": 10, "metrics": ["mae"]}, data.x, data.y)
    assert len(history.epochs) == 100
    assert history.epochs[-1]["loss"] * 10 <= history.epochs[0]["loss"]
    assert set(history.epochs[-1]) == {"epoch", "loss", "mae", "lr"}
    outputs, labels = predict(model, torch.tensor([[80.0]]))
    assert labels is None
    assert 160 < outputs.item() < 192


def test_iris_mlp_with_validation_split_and_standardize() -> None:
    data = load_builtin("iris")
    model, spec, history = train(
        [{"type": "dense", "units": 16, "activation": "relu"},
         {"type": "dense", "units": 3, "activation": "softmax"}],
        [4], {"optimizer": adam(0.01), "loss": "cross_entropy", "epochs": 40, "batch_size": 16,
              "metrics": ["accuracy", "f1"], "validation_split": 0.3, "standardize": True},
        data.x, data.y, seed=1)
    last = history.epochs[-1]
    assert {"loss", "accuracy", "f1", "val_loss", "val_accuracy", "val_f1"} <= set(last)
    assert last["val_accuracy"] > 0.9
    # The z-score was learnt from the training rows: the stored mean is close to the data's.
    assert np.allclose(model.input_mean.numpy(), data.x.mean(axis=0), atol=0.5)
    probabilities, labels = predict(model, torch.as_tensor(data.x), "cross_entropy")
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(150))
    assert labels is not None and (labels.numpy() == data.y).mean() > 0.9
    logs = evaluate(model, torch.as_tensor(data.x), prepare_targets(data.y, spec.loss), spec, 3)
    assert logs["accuracy"] > 0.9 and math.isfinite(logs["loss"])


def test_digits_cnn_held_out_accuracy() -> None:
    data = load_builtin("digits")
    train_idx, test_idx = holdout(len(data.x), 0.25)
    model, spec, _ = train(
        [{"type": "conv2d", "filters": 8, "kernel_size": 3, "padding": "same",
          "activation": "relu"},
         {"type": "maxpool2d", "pool_size": 2},
         {"type": "conv2d", "filters": 16, "kernel_size": 3, "padding": "same",
          "activation": "relu"},
         {"type": "maxpool2d", "pool_size": 2},
         {"type": "flatten"},
         {"type": "dense", "units": 10, "activation": "softmax"}],
        [1, 8, 8], {"optimizer": adam(0.01), "loss": "cross_entropy", "epochs": 8,
                    "batch_size": 64, "standardize": True, "metrics": ["accuracy"]},
        data.x[train_idx], data.y[train_idx])
    logs = evaluate(model, torch.as_tensor(data.x[test_idx]),
                    prepare_targets(data.y[test_idx], spec.loss), spec, 10)
    # Bar 0.9: even a linear model gets ~0.95 on these 8x8 digits and this CNN ~0.97 after 8
    # epochs, while chance is 0.1 and a broken conv/pool/flatten path stays far below 0.9;
    # the margin keeps the test stable across torch versions and BLAS builds.
    assert logs["accuracy"] > 0.9


def test_diabetes_regression_beats_the_mean() -> None:
    data = load_builtin("diabetes")
    _, _, history = train(
        [{"type": "dense", "units": 16, "activation": "relu"}, {"type": "dense", "units": 1}],
        [10], {"optimizer": adam(0.01), "loss": "mse", "epochs": 80, "batch_size": 32,
               "metrics": ["r2", "mae"], "validation_split": 0.2, "standardize": True},
        data.x, data.y)
    # r2 > 0 is better than predicting the mean; a linear model gets about 0.45.
    assert history.epochs[-1]["val_r2"] > 0.3


def test_batchnorm_after_dense_trains_with_a_last_batch_of_one() -> None:
    """BatchNorm1d cannot normalise one sample in training mode; fit must never hand it one
    (17 rows in batches of 8 leave a last batch of 1)."""
    data = load_builtin("iris")
    x, y = data.x[::9], data.y[::9]  # 17 rows, all three classes
    assert len(x) == 17
    model, _, history = train(
        [{"type": "dense", "units": 8}, {"type": "batchnorm"},
         {"type": "activation", "name": "relu"}, {"type": "dense", "units": 3}],
        [4], {"optimizer": adam(0.01), "loss": "cross_entropy", "epochs": 3, "batch_size": 8},
        x, y)
    assert len(history.epochs) == 3
    assert model.layers[1].num_batches_tracked.item() == 3 * 2


# --- sequence models ----------------------------------------------------------------------------


def test_lstm_solves_majority() -> None:
    data = load_builtin("majority", {"n": 1000, "length": 8, "vocab": 4})
    _, _, history = train(
        [{"type": "embedding", "num_embeddings": 4, "embedding_dim": 8},
         {"type": "lstm", "units": 16},
         {"type": "dense", "units": 4, "activation": "softmax"}],
        [8], {"optimizer": adam(0.02), "loss": "cross_entropy", "epochs": 8, "batch_size": 32,
              "metrics": ["accuracy"], "validation_split": 0.2}, data.x, data.y, dtype="int")
    assert history.epochs[-1]["val_accuracy"] > 0.9


MAJORITY_AT_FIRST_POSITION = [
    {"type": "embedding", "num_embeddings": 4, "embedding_dim": 16},
    {"type": "transformer_encoder", "num_heads": 2, "dim_feedforward": 32, "dropout": 0.0},
    # Only position 0 is read: it must gather the counts of the whole sequence by attention.
    {"type": "sequence_pool", "mode": "first"},
    {"type": "dense", "units": 4, "activation": "softmax"},
]


def test_transformer_solves_majority_through_attention() -> None:
    data = load_builtin("majority", {"n": 1000, "length": 8, "vocab": 4})
    training = {"optimizer": adam(0.005), "loss": "cross_entropy", "epochs": 5, "batch_size": 32,
                "metrics": ["accuracy"], "validation_split": 0.2}
    _, _, history = train(MAJORITY_AT_FIRST_POSITION, [8], training, data.x, data.y,
                          dtype="int")
    assert history.epochs[-1]["val_accuracy"] > 0.9
    # Control: the same model with the attention swapped for a per-position dense layer can
    # only see the first token, and stays far from solving it.
    no_mixing = [MAJORITY_AT_FIRST_POSITION[0], {"type": "dense", "units": 16,
                                                 "activation": "relu"},
                 *MAJORITY_AT_FIRST_POSITION[2:]]
    _, _, control = train(no_mixing, [8], training, data.x, data.y, dtype="int")
    assert control.epochs[-1]["val_accuracy"] < 0.7


# --- determinism, callbacks, schedulers ---------------------------------------------------------

SMALL_MLP = [{"type": "dense", "units": 16, "activation": "relu"}, {"type": "dropout", "rate": 0.2},
             {"type": "dense", "units": 3, "activation": "softmax"}]


def test_same_seed_same_result() -> None:
    data = load_builtin("iris")
    training = {"optimizer": adam(0.01), "loss": "cross_entropy", "epochs": 5, "batch_size": 16,
                "validation_split": 0.2, "standardize": True, "metrics": ["accuracy"]}
    runs = [train(SMALL_MLP, [4], training, data.x, data.y, seed=seed)[2] for seed in (7, 7, 8)]
    first, again, other = (h.epochs[-1]["loss"] for h in runs)
    assert f"{first:.6f}" == f"{again:.6f}"
    assert runs[0].epochs == runs[1].epochs
    assert first != other


class Recorder(Callback):
    """Keeps each epoch's weights and counts the epochs that finished."""

    def __init__(self) -> None:
        self.states: dict[int, dict[str, torch.Tensor]] = {}
        self.finished = 0

    def on_epoch_end(self, state: FitState, epoch: int, logs: dict[str, float]) -> None:
        self.states[epoch] = {k: v.clone() for k, v in state.model.state_dict().items()}
        self.finished = epoch


def flat_data(n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """x all zeros into a dense layer without bias: the gradient is exactly 0 and the loss
    exactly constant, a perfect plateau."""
    return np.zeros((n, 3), np.float32), np.ones((n, 1), np.float32)


FLAT = [{"type": "dense", "units": 1, "use_bias": False}]


@pytest.mark.parametrize("patience", [0, 2, 4])
def test_early_stopping_on_a_plateau(patience: int) -> None:
    x, y = flat_data()
    _, _, history = train(FLAT, [3], {
        "optimizer": adam(0.01), "loss": "mse", "epochs": 50, "batch_size": 5,
        "early_stopping": {"monitor": "loss", "patience": patience,
                           "restore_best_weights": True}}, x, y)
    assert history.stopped_early
    assert history.best_epoch == 1
    # Keras' rule: stop after `patience` epochs without improvement (at least one).
    assert len(history.epochs) == 1 + max(patience, 1)


def test_early_stopping_restores_the_best_weights() -> None:
    """Random labels: val_loss falls for a moment, then rises as the net memorises."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 5)).astype(np.float32), rng.normal(size=(60, 1)).astype(
        np.float32)
    recorder = Recorder()
    model, _, history = train(
        [{"type": "dense", "units": 64, "activation": "relu"}, {"type": "dense", "units": 1}],
        [5], {"optimizer": adam(0.01), "loss": "mse", "epochs": 300, "batch_size": 8,
              "validation_split": 0.25,
              "early_stopping": {"monitor": "val_loss", "patience": 3,
                                 "restore_best_weights": True}},
        x, y, callbacks=(recorder,))
    assert history.stopped_early and len(history.epochs) < 300
    best = history.best_epoch
    assert best is not None and best < recorder.finished
    val_losses = [e["val_loss"] for e in history.epochs]
    assert val_losses[best - 1] == min(val_losses)
    for key, value in model.state_dict().items():
        assert torch.equal(value, recorder.states[best][key]), key
        assert not torch.equal(value, recorder.states[recorder.finished][key]) or \
            value.dim() == 0


def lrs(scheduler: dict[str, Any], epochs: int, lr: float = 0.1) -> list[float]:
    x, y = flat_data()
    _, _, history = train(FLAT, [3], {"optimizer": {"type": "sgd", "lr": lr}, "loss": "mse",
                                      "epochs": epochs, "batch_size": 10,
                                      "lr_scheduler": scheduler}, x, y)
    return [e["lr"] for e in history.epochs]


def test_step_lr() -> None:
    assert lrs({"type": "step", "step_size": 2, "gamma": 0.5}, 6) == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


@pytest.mark.parametrize("t_max", [None, 2])
def test_cosine_lr(t_max: int | None) -> None:
    epochs, eta_min = 5, 0.01
    got = lrs({"type": "cosine", "t_max": t_max, "eta_min": eta_min}, epochs)
    period = t_max or epochs
    expected = [eta_min + (0.1 - eta_min) * (1 + math.cos(math.pi * e / period)) / 2
                for e in range(epochs)]
    if t_max is None:  # annealed over the whole run: falls all the way
        assert got == pytest.approx(expected)
        assert got == sorted(got, reverse=True)
    else:  # PyTorch's cosine goes back up after t_max
        assert got[:3] == pytest.approx(expected[:3])
        assert got[2] == pytest.approx(eta_min)


def test_plateau_lr() -> None:
    # The loss is exactly constant: every epoch after the first is a bad one.
    got = lrs({"type": "plateau", "monitor": "loss", "factor": 0.5, "patience": 1}, 7)
    assert got == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


def test_plateau_lr_does_not_fire_while_improving() -> None:
    data = load_builtin("heights_weights")
    _, _, history = train(HEIGHTS_LAYERS, [1], {
        "optimizer": adam(0.001), "loss": "mse", "epochs": 20, "batch_size": 10,
        "lr_scheduler": {"type": "plateau", "monitor": "loss", "patience": 0}}, data.x, data.y)
    assert {e["lr"] for e in history.epochs} == {0.001}


def test_divergence_names_the_epoch() -> None:
    data = load_builtin("heights_weights")
    recorder = Recorder()
    with pytest.raises(TrainingDiverged) as info:
        train([{"type": "dense", "units": 16, "activation": "relu"}, {"type": "dense", "units": 1}],
              [1], {"optimizer": {"type": "sgd", "lr": 10}, "loss": "mse", "epochs": 50,
                    "batch_size": 2}, data.x, data.y * 1000, callbacks=(recorder,))
    match = re.search(r"at epoch (\d+)", str(info.value))
    assert match and int(match.group(1)) == recorder.finished + 1
    assert re.search(r"became (nan|inf)", str(info.value))


# --- saved weights ------------------------------------------------------------------------------


def test_weights_round_trip_reproduces_predictions_exactly() -> None:
    data = load_builtin("iris")
    layers = [{"type": "dense", "units": 16}, {"type": "batchnorm"},
              {"type": "activation", "name": "relu"}, *SMALL_MLP]
    training = {"optimizer": adam(0.01), "loss": "cross_entropy", "epochs": 3, "batch_size": 16,
                "standardize": True}
    model, _, _ = train(layers, [4], training, data.x, data.y)
    saved = weights_to_bytes(model)
    state = torch.load(io.BytesIO(saved), weights_only=True)
    assert {"input_mean", "input_std"} <= set(state)
    assert not torch.equal(state["input_mean"], torch.zeros(4))  # the training set's, not 0

    fresh, _ = make(layers, [4], training, seed=123)  # other initial weights
    x = torch.as_tensor(data.x)
    assert not torch.equal(predict(fresh, x, "cross_entropy")[0],
                           predict(model, x, "cross_entropy")[0])
    load_weights(fresh, saved)
    expected, expected_labels = predict(model, x, "cross_entropy")
    got, labels = predict(fresh, x, "cross_entropy")
    assert torch.equal(got, expected) and torch.equal(labels, expected_labels)  # type: ignore[arg-type]


def test_weights_round_trip_sequence_model() -> None:
    layers = [{"type": "embedding", "num_embeddings": 5, "embedding_dim": 8},
              {"type": "positional_encoding"},
              {"type": "positional_encoding", "kind": "learned"},
              {"type": "transformer_encoder", "num_heads": 2, "dim_feedforward": 16},
              {"type": "gru", "units": 4, "bidirectional": True},
              {"type": "dense", "units": 1}]
    model, _ = make(layers, [6], {"optimizer": "adam", "loss": "mse"}, dtype="int")
    fresh, _ = make(layers, [6], {"optimizer": "adam", "loss": "mse"}, dtype="int", seed=9)
    load_weights(fresh, weights_to_bytes(model))
    x = torch.randint(0, 5, (4, 6))
    assert torch.equal(predict(fresh, x)[0], predict(model.eval(), x)[0])


class BatchCounter(Callback):
    """Counts batches, and stops training after `stop_after` of them."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.batches: list[tuple[int, int]] = []
        self.stop_after = stop_after

    def on_batch_end(self, state: FitState, batch: int) -> None:
        self.batches.append((state.epoch, batch))
        if self.stop_after is not None and len(self.batches) >= self.stop_after:
            state.stop_training = True


def test_batch_callbacks_see_every_batch_and_can_stop_within_an_epoch() -> None:
    x, y = flat_data(20)
    counter, epochs_only = BatchCounter(), Recorder()
    train(FLAT, [3], {"optimizer": adam(0.01), "loss": "mse", "epochs": 2, "batch_size": 6},
          x, y, callbacks=(counter, epochs_only))
    assert counter.batches == [(e, b) for e in (1, 2) for b in range(4)]  # 6+6+6+2 rows
    assert epochs_only.finished == 2
    stopper = BatchCounter(stop_after=3)
    _, _, history = train(FLAT, [3], {"optimizer": adam(0.01), "loss": "mse", "epochs": 5,
                                      "batch_size": 6}, x, y, callbacks=(stopper,))
    assert len(stopper.batches) == 3 and len(history.epochs) == 1


def test_bf16_precision_runs_the_forward_pass_in_bfloat16_and_still_learns() -> None:
    data = load_builtin("iris")
    seen: set[torch.dtype] = set()

    class Dtypes(Callback):
        def on_train_begin(self, state: FitState) -> None:
            for layer in state.model.layers:
                if isinstance(layer, torch.nn.Linear):
                    layer.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))

    model, _, history = train(
        [{"type": "dense", "units": 32, "activation": "relu"}, {"type": "dense", "units": 3}],
        [4], {"optimizer": adam(0.01), "loss": "cross_entropy", "epochs": 60,
              "batch_size": 16, "standardize": True, "validation_split": 0.2, "seed": 0,
              "metrics": ["accuracy"], "precision": "bf16"}, data.x, data.y,
        callbacks=(Dtypes(),))
    assert torch.bfloat16 in seen  # the matmuls ran in bf16 ...
    assert all(p.dtype == torch.float32 for p in model.parameters())  # ... the weights did not
    assert history.epochs[-1]["val_accuracy"] >= 0.9
    assert all(math.isfinite(e["loss"]) for e in history.epochs)


def test_precision_defaults_to_fp32_and_names_its_choices() -> None:
    assert TrainingSpec.model_validate({"optimizer": "adam", "loss": "mse"}).precision == "fp32"
    with pytest.raises(ValueError, match="fp32"):
        TrainingSpec.model_validate({"optimizer": "adam", "loss": "mse", "precision": "fp16"})
