"""Keras' `model.evaluate`: a trained model's loss and metrics over new data, computed exactly as
training computes its validation metrics (the same `evaluate` pass, batches and meters)."""

from __future__ import annotations

import numpy as np
import torch

from dlmodels.builder import SpecModel
from dlmodels.errors import DataError, Loc
from dlmodels.losses import LOSSES
from dlmodels.spec import TrainingSpec
from dlmodels.training import evaluate, num_classes, prepare_targets


def evaluate_arrays(model: SpecModel, x: np.ndarray, y: np.ndarray, training: TrainingSpec, *,
                    y_loc: Loc = ("y",)) -> dict[str, float]:
    """`{loss, <metric>..., samples}` of `model` over (x, y); x is already checked to be
    [N, *input_shape]. y is checked against the model's outputs and loss (DataError at
    `y_loc`)."""
    xs = torch.from_numpy(np.ascontiguousarray(x))
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        outputs = model.logits(xs[:1])
    model.train(was_training)
    check_targets(y, samples=len(x), outputs=list(outputs.shape[1:]), loss=training.loss,
                  loc=y_loc)
    logs = evaluate(model, xs, prepare_targets(y, training.loss), training,
                    num_classes(outputs))
    return {**logs, "samples": len(x)}


def check_targets(y: np.ndarray, *, samples: int, outputs: list[int], loss: str,
                  loc: Loc) -> None:
    """y fits the model: one row per sample, shaped like the outputs (class ids for
    cross_entropy, within the classes; bce targets in [0, 1])."""
    if y.ndim == 0 or len(y) != samples:
        rows = "a single number" if y.ndim == 0 else f"{len(y)} rows"
        raise DataError(f"y has {rows} but x has {samples} samples; each sample needs its "
                        "target", loc)
    shape = list(y.shape[1:])
    if LOSSES.get(loss).targets == "class_index":
        if shape not in ([], [1]):
            raise DataError(f"{loss} takes one integer class id per sample (y shaped [N]) but "
                            f"y has shape {list(y.shape)}", loc)
        if not np.array_equal(y, np.round(y)) or y.min() < 0 or y.max() >= outputs[0]:
            raise DataError(f"{loss} labels must be integers 0..{outputs[0] - 1} (the model has "
                            f"{outputs[0]} output units) but y holds values from {y.min():g} "
                            f"to {y.max():g}", loc)
        return
    if shape != outputs and not (outputs == [1] and shape == []):
        raise DataError(f"y has shape {list(y.shape)} but the model outputs "
                        f"[N, {', '.join(map(str, outputs))}]; they must match for {loss}", loc)
    if loss == "bce" and (y.min() < 0 or y.max() > 1):
        raise DataError(f"bce targets must lie in [0, 1] but y holds values from {y.min():g} to "
                        f"{y.max():g}", loc)
