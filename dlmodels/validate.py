"""Checks that a model, its training and its data fit together, before any work is spent.

Every failure is a SpecError whose loc points into the job spec, e.g.
("training", "loss") or ("model", "layers", 3), and whose message says what arrived and what
was needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from dlmodels.builder import Summary, summarize
from dlmodels.errors import DataError, Loc, SpecError
from dlmodels.layers import LayerSpec
from dlmodels.losses import LOSSES
from dlmodels.metrics import METRICS
from dlmodels.spec import ModelSpec, TrainingSpec


def validate_model(model: ModelSpec) -> Summary:
    """Shape-check every layer and return the summary."""
    first = model.layers[0]
    if model.input_dtype == "int" and not first.accepts_int:
        raise SpecError(f"input_dtype int (token ids) needs an `embedding` first layer, not "
                        f"`{first.type}`", ("model", "layers", 0))
    for loc, layer in _all_layers(model.layers, ("model", "layers")):
        # Nested layers too: an embedding inside a residual would get floats.
        if layer.accepts_int and (loc != ("model", "layers", 0) or model.input_dtype != "int"):
            raise SpecError("embedding takes integer token ids: make it the first layer and set "
                            "model.input_dtype to \"int\"", loc)
    return summarize(model)


def _all_layers(layers: list[LayerSpec], loc: Loc) -> Iterator[tuple[Loc, LayerSpec]]:
    """Every layer with its loc, nested ones (residual bodies and shortcuts) included."""
    for index, layer in enumerate(layers):
        yield (*loc, index), layer
        for field, children in layer.children_specs().items():
            yield from _all_layers(children, (*loc, index, field))


def output_shape(summary: Summary) -> list[int]:
    return summary.layers[-1].output_shape


def validate_training(model: ModelSpec, training: TrainingSpec, summary: Summary) -> None:
    out = output_shape(summary)
    loss = LOSSES.get(training.loss)
    if training.loss == "cross_entropy" and (len(out) != 1 or out[0] < 2):
        raise SpecError(f"cross_entropy needs an output of shape [classes] with at least 2 "
                        f"units, but the model outputs {out}; use bce for one output unit",
                        ("training", "loss"))
    for index, name in enumerate(training.metrics):
        if METRICS.get(name).kind == "regression" and loss.targets == "class_index":
            raise SpecError(f"metric {name} compares values, but cross_entropy predicts classes; "
                            "use accuracy, precision, recall or f1", ("training", "metrics", index))
    if training.standardize and model.input_dtype == "int":
        raise SpecError("standardize cannot scale integer token ids", ("training", "standardize"))
    monitors = {"loss", *training.metrics}
    if training.validation_split > 0:
        monitors |= {f"val_{m}" for m in monitors}
    for field, monitor in (("early_stopping", training.early_stopping),
                           ("lr_scheduler", training.lr_scheduler)):
        watched = getattr(monitor, "monitor", None)
        if watched is not None and watched not in monitors:
            hint = "" if training.validation_split > 0 else " (val_* needs validation_split > 0)"
            raise SpecError(f"cannot monitor {watched!r}; available: {sorted(monitors)}{hint}",
                            ("training", field, "monitor"))


def validate_data_shapes(model: ModelSpec, training: TrainingSpec, summary: Summary,
                         x_shape: list[int], y_shape: list[int], loc: tuple[str, ...]) -> None:
    """Check the data's shapes against input_shape, the outputs and the loss."""
    if x_shape[1:] != model.input_shape:
        raise DataError(f"x has shape {x_shape} but the model takes [N, *input_shape] = "
                        f"[N, {', '.join(map(str, model.input_shape))}]", loc)
    if y_shape[:1] != x_shape[:1]:
        raise DataError(f"x has {x_shape[0]} samples but y has {y_shape[0]}", loc)
    out = output_shape(summary)
    if LOSSES.get(training.loss).targets == "class_index":
        if y_shape[1:] not in ([], [1]):
            raise DataError(f"cross_entropy takes one integer class id per sample (y shaped [N]) "
                            f"but y has shape {y_shape}", loc)
    elif y_shape[1:] != out and not (out == [1] and y_shape[1:] == []):
        raise DataError(f"y has shape {y_shape} but the model outputs [N, "
                        f"{', '.join(map(str, out))}]; they must match for {training.loss}", loc)
    n = x_shape[0]
    n_val = validation_size(n, training.validation_split)
    if training.validation_split > 0 and (n_val < 1 or n - n_val < 1):
        raise DataError(f"validation_split {training.validation_split} of {n} samples leaves "
                        f"{n - n_val} to train and {n_val} to validate; each needs at least 1",
                        ("training", "validation_split"))


def validate_labels(training: TrainingSpec, summary: Summary, y: np.ndarray,
                    loc: tuple[str, ...]) -> None:
    """Class labels must be integers that the output can represent."""
    out = output_shape(summary)
    if training.loss == "cross_entropy":
        if not np.array_equal(y, np.round(y)) or y.min() < 0 or y.max() >= out[0]:
            raise DataError(f"cross_entropy labels must be integers 0..{out[0] - 1} (the model has "
                            f"{out[0]} output units) but y holds values from {y.min():g} to "
                            f"{y.max():g}", loc)
    elif training.loss == "bce" and (y.min() < 0 or y.max() > 1):
        raise DataError(f"bce targets must lie in [0, 1] but y holds values from {y.min():g} to "
                        f"{y.max():g}", loc)


def validation_size(n: int, split: float) -> int:
    return math.floor(n * split) if split > 0 else 0
