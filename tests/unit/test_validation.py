"""Specs that must be refused before anything is built, each with its loc and a message that says
what arrived and what was needed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from dlmodels.errors import DataError, SpecError
from dlmodels.layers import LAYERS
from dlmodels.spec import JobSpec, ModelSpec, TrainingSpec
from dlmodels.validate import (
    validate_data_shapes,
    validate_labels,
    validate_model,
    validate_training,
)


def model(input_shape: list[int], *layers: dict[str, Any], dtype: str = "float") -> ModelSpec:
    return ModelSpec.model_validate(
        {"input_shape": input_shape, "input_dtype": dtype, "layers": list(layers)})


def training(**fields: Any) -> TrainingSpec:
    return TrainingSpec.model_validate({"optimizer": "adam", "loss": "mse", **fields})


def spec_error(call: Callable[[], object]) -> SpecError:
    with pytest.raises(SpecError) as info:
        call()
    return info.value


def model_error(input_shape: list[int], *layers: dict[str, Any], dtype: str = "float") -> SpecError:
    return spec_error(lambda: validate_model(model(input_shape, *layers, dtype=dtype)))


def parse_errors(raw: dict[str, Any], cls: type = ModelSpec) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as info:
        cls.model_validate(raw)
    return info.value.errors()


CLASSIFIER = [{"type": "dense", "units": 8, "activation": "relu"},
              {"type": "dense", "units": 3, "activation": "softmax"}]


# --- shapes -------------------------------------------------------------------------------------


def test_conv2d_on_flat_vector() -> None:
    error = model_error([64], {"type": "dense", "units": 4},
                        {"type": "conv2d", "filters": 4, "kernel_size": 3})
    assert error.loc == ("model", "layers", 1)
    assert "[4]" in error.message  # what arrived
    assert "3-D" in error.message and "[C, H, W]" in error.message  # what was needed


def test_conv1d_on_image() -> None:
    error = model_error([1, 8, 8], {"type": "conv1d", "filters": 4, "kernel_size": 3})
    assert error.loc == ("model", "layers", 0)
    assert "[1, 8, 8]" in error.message and "[C, L]" in error.message


@pytest.mark.parametrize("layer,field", [
    ({"type": "conv2d", "filters": 2, "kernel_size": 5}, "kernel_size"),
    ({"type": "conv2d", "filters": 2, "kernel_size": [3, 9], "padding": 1}, "kernel_size"),
    ({"type": "maxpool2d", "pool_size": 6}, "pool_size"),
    ({"type": "avgpool1d", "pool_size": 5}, "pool_size"),
])
def test_kernel_larger_than_input(layer: dict[str, Any], field: str) -> None:
    shape = [1, 4] if layer["type"].endswith("1d") else [1, 4, 4]
    error = model_error(shape, {"type": "dropout"}, layer)
    assert error.loc == ("model", "layers", 1, field)
    assert "larger than" in error.message
    assert "size 4" in error.message and str(shape) in error.message


def test_kernel_size_with_wrong_number_of_axes() -> None:
    error = model_error([1, 8, 8], {"type": "conv2d", "filters": 2, "kernel_size": [3, 3, 3]})
    assert error.loc == ("model", "layers", 0, "kernel_size")
    assert "2 values" in error.message and "got 3" in error.message


def test_pool_padding_more_than_half_the_window() -> None:
    error = model_error([1, 8, 8], {"type": "maxpool2d", "pool_size": 2, "padding": 2})
    assert error.loc == ("model", "layers", 0, "padding")
    assert "padding 2" in error.message and "pool_size 2" in error.message


def test_dense_on_image_suggests_flatten() -> None:
    error = model_error([1, 8, 8], {"type": "dense", "units": 3})
    assert error.loc == ("model", "layers", 0)
    assert "[1, 8, 8]" in error.message and "flatten" in error.message


def test_residual_body_changes_shape_without_shortcut() -> None:
    error = model_error([8], {"type": "dense", "units": 8},
                        {"type": "residual", "layers": [{"type": "dense", "units": 4}]})
    assert error.loc == ("model", "layers", 1, "layers")
    assert "[8]" in error.message and "[4]" in error.message  # the input vs the body's output
    assert "shortcut" in error.message


def test_residual_shortcut_that_does_not_match() -> None:
    error = model_error([8], {"type": "residual", "layers": [{"type": "dense", "units": 4}],
                              "shortcut": [{"type": "dense", "units": 5}]})
    assert error.loc == ("model", "layers", 0, "shortcut")
    assert "[4]" in error.message and "[5]" in error.message


def test_error_inside_residual_body_points_at_the_nested_layer() -> None:
    error = model_error([1, 4, 4], {"type": "residual", "layers": [
        {"type": "conv2d", "filters": 1, "kernel_size": 3, "padding": "same"},
        {"type": "conv2d", "filters": 1, "kernel_size": 7}]})
    assert error.loc == ("model", "layers", 0, "layers", 1, "kernel_size")
    assert "kernel 7" in error.message


def test_transformer_width_not_divisible_by_heads() -> None:
    error = model_error([6, 10], {"type": "transformer_encoder", "num_heads": 3,
                                  "dim_feedforward": 16})
    assert error.loc == ("model", "layers", 0, "num_heads")
    assert "width 10" in error.message and "num_heads 3" in error.message


@pytest.mark.parametrize("type_name", ["lstm", "transformer_encoder", "sequence_pool",
                                       "positional_encoding"])
def test_sequence_layers_need_a_sequence(type_name: str) -> None:
    fields = {"lstm": {"units": 4}, "transformer_encoder": {"num_heads": 1,
                                                            "dim_feedforward": 4}}
    error = model_error([12], {"type": type_name, **fields.get(type_name, {})})
    assert error.loc == ("model", "layers", 0)
    assert "[12]" in error.message and "2-D" in error.message


# --- embedding and integer inputs ---------------------------------------------------------------


def test_int_input_needs_embedding_first() -> None:
    error = model_error([5], {"type": "dense", "units": 4},
                        {"type": "embedding", "num_embeddings": 10, "embedding_dim": 4},
                        dtype="int")
    assert error.loc == ("model", "layers", 0)
    assert "embedding" in error.message and "`dense`" in error.message


def test_embedding_not_first() -> None:
    error = model_error([5], {"type": "embedding", "num_embeddings": 10, "embedding_dim": 4},
                        {"type": "flatten"},
                        {"type": "embedding", "num_embeddings": 10, "embedding_dim": 4},
                        dtype="int")
    assert error.loc == ("model", "layers", 2)
    assert "first layer" in error.message


def test_float_input_to_embedding() -> None:
    error = model_error([5], {"type": "embedding", "num_embeddings": 10, "embedding_dim": 4})
    assert error.loc == ("model", "layers", 0)
    assert "integer token ids" in error.message and "input_dtype" in error.message


def test_embedding_nested_in_residual() -> None:
    embedding = {"type": "embedding", "num_embeddings": 10, "embedding_dim": 4}
    error = model_error([5], {"type": "dropout"},
                        {"type": "residual", "layers": [embedding], "shortcut": [embedding]})
    assert error.loc == ("model", "layers", 1, "layers", 0)
    assert "integer token ids" in error.message


def test_standardize_int_tokens() -> None:
    spec = model([5], {"type": "embedding", "num_embeddings": 10, "embedding_dim": 4},
                 {"type": "sequence_pool"}, {"type": "dense", "units": 1}, dtype="int")
    error = spec_error(lambda: validate_training(spec, training(standardize=True),
                                                 validate_model(spec)))
    assert error.loc == ("training", "standardize")


# --- loss, outputs and data ---------------------------------------------------------------------


def test_cross_entropy_with_one_output_unit() -> None:
    spec = model([4], {"type": "dense", "units": 1, "activation": "sigmoid"})
    error = spec_error(lambda: validate_training(spec, training(loss="cross_entropy"),
                                                 validate_model(spec)))
    assert error.loc == ("training", "loss")
    assert "[1]" in error.message and "at least 2" in error.message and "bce" in error.message


def test_regression_metric_with_cross_entropy() -> None:
    spec = model([4], *CLASSIFIER)
    error = spec_error(lambda: validate_training(
        spec, training(loss="cross_entropy", metrics=["accuracy", "mae"]), validate_model(spec)))
    assert error.loc == ("training", "metrics", 1)


def test_monitor_val_without_validation_split() -> None:
    spec = model([4], *CLASSIFIER)
    error = spec_error(lambda: validate_training(
        spec, training(loss="cross_entropy", early_stopping={"monitor": "val_loss"}),
        validate_model(spec)))
    assert error.loc == ("training", "early_stopping", "monitor")
    assert "'val_loss'" in error.message and "validation_split" in error.message


@pytest.mark.parametrize("labels,low,high", [([0, 1, 3], 0, 3), ([0, -1, 2], -1, 2),
                                             ([0, 1.5, 2], 0, 2)])
def test_labels_outside_the_classes(labels: list[float], low: float, high: float) -> None:
    spec = model([4], *CLASSIFIER)
    train = training(loss="cross_entropy")
    error = spec_error(lambda: validate_labels(train, validate_model(spec), np.array(labels),
                                               ("data", "inline", "y")))
    assert isinstance(error, DataError)
    assert error.loc == ("data", "inline", "y")
    assert "0..2" in error.message and "3 output units" in error.message
    assert f"from {low:g} to {high:g}" in error.message


def test_bce_targets_outside_zero_one() -> None:
    spec = model([4], {"type": "dense", "units": 1, "activation": "sigmoid"})
    error = spec_error(lambda: validate_labels(training(loss="bce"), validate_model(spec),
                                               np.array([0.0, 2.0]), ("data",)))
    assert "[0, 1]" in error.message and "to 2" in error.message


def test_valid_labels_pass() -> None:
    spec = model([4], *CLASSIFIER)
    validate_labels(training(loss="cross_entropy"), validate_model(spec), np.array([0, 2, 1]),
                    ("data",))


def test_y_shape_does_not_match_outputs() -> None:
    spec = model([4], {"type": "dense", "units": 1})
    error = spec_error(lambda: validate_data_shapes(spec, training(), validate_model(spec),
                                                    [10, 4], [10, 2], ("data",)))
    assert error.loc == ("data",)
    assert "[10, 2]" in error.message and "[N, 1]" in error.message and "mse" in error.message


def test_y_vector_for_one_output_is_fine() -> None:
    spec = model([4], {"type": "dense", "units": 1})
    validate_data_shapes(spec, training(), validate_model(spec), [10, 4], [10], ("data",))


def test_x_shape_does_not_match_input_shape() -> None:
    spec = model([4], {"type": "dense", "units": 1})
    error = spec_error(lambda: validate_data_shapes(spec, training(), validate_model(spec),
                                                    [10, 5], [10, 1], ("data",)))
    assert "[10, 5]" in error.message and "[N, 4]" in error.message


def test_x_and_y_sample_counts_differ() -> None:
    spec = model([4], {"type": "dense", "units": 1})
    error = spec_error(lambda: validate_data_shapes(spec, training(), validate_model(spec),
                                                    [10, 4], [9, 1], ("data",)))
    assert "10" in error.message and "9" in error.message


def test_cross_entropy_needs_class_ids_not_one_hot() -> None:
    spec = model([4], *CLASSIFIER)
    error = spec_error(lambda: validate_data_shapes(spec, training(loss="cross_entropy"),
                                                    validate_model(spec), [10, 4], [10, 3],
                                                    ("data",)))
    assert "[10, 3]" in error.message and "[N]" in error.message


def test_validation_split_leaves_no_training_rows() -> None:
    spec = model([4], {"type": "dense", "units": 1})
    error = spec_error(lambda: validate_data_shapes(
        spec, training(validation_split=0.4), validate_model(spec), [2, 4], [2, 1], ("data",)))
    assert error.loc == ("training", "validation_split")


# --- parsing: unknown types and fields, bad values ----------------------------------------------


def test_unknown_layer_type_names_it_and_lists_known_ones() -> None:
    (error,) = parse_errors({"input_shape": [4], "layers": [
        {"type": "dense", "units": 3}, {"type": "conv3d", "filters": 2}]})
    assert error["loc"] == ("layers", 1)
    assert "'conv3d'" in error["msg"]
    for known in LAYERS.names():
        assert f"'{known}'" in error["msg"]


def test_unknown_layer_type_inside_residual() -> None:
    (error,) = parse_errors({"input_shape": [4], "layers": [
        {"type": "residual", "layers": [{"type": "attention"}]}]})
    assert error["loc"] == ("layers", 0, "residual", "layers", 0)
    assert "'attention'" in error["msg"]


def test_missing_layer_type() -> None:
    (error,) = parse_errors({"input_shape": [4], "layers": [{"units": 3}]})
    assert error["loc"] == ("layers", 0) and "'type'" in error["msg"]


@pytest.mark.parametrize("raw,cls,loc", [
    ({"input_shape": [4], "layers": [{"type": "dense", "units": 3, "unit": 3}]}, ModelSpec,
     ("layers", 0, "dense", "unit")),
    ({"input_shape": [4], "layers": [{"type": "flatten", "rate": 0.1}]}, ModelSpec,
     ("layers", 0, "flatten", "rate")),
    ({"input_shape": [4], "layers": [{"type": "dense", "units": 1}], "optimizer": "adam"},
     ModelSpec, ("optimizer",)),
    ({"optimizer": {"type": "adam", "learning_rate": 0.1}, "loss": "mse"}, TrainingSpec,
     ("optimizer", "adam", "learning_rate")),
    ({"optimizer": "adam", "loss": "mse", "epoch": 3}, TrainingSpec, ("epoch",)),
    ({"optimizer": "adam", "loss": "mse", "early_stopping": {"patient": 3}}, TrainingSpec,
     ("early_stopping", "patient")),
])
def test_unknown_fields_rejected(raw: dict[str, Any], cls: type, loc: tuple[Any, ...]) -> None:
    errors = parse_errors(raw, cls)
    assert [(e["loc"], e["type"]) for e in errors] == [(loc, "extra_forbidden")]


@pytest.mark.parametrize("layer,loc", [
    ({"type": "dense", "units": -3}, ("layers", 0, "dense", "units")),
    ({"type": "dense", "units": 0}, ("layers", 0, "dense", "units")),
    ({"type": "dense", "units": 3, "activation": "swish"}, ("layers", 0, "dense", "activation")),
    ({"type": "conv2d", "filters": 2, "kernel_size": 0}, ("layers", 0, "conv2d", "kernel_size")),
    ({"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": -1},
     ("layers", 0, "conv2d", "padding")),
    ({"type": "conv2d", "filters": 2, "kernel_size": 3, "stride": 2, "padding": "same"},
     ("layers", 0, "conv2d")),
    ({"type": "maxpool2d", "pool_size": 0}, ("layers", 0, "maxpool2d", "pool_size")),
    ({"type": "avgpool1d", "pool_size": 2, "stride": 0}, ("layers", 0, "avgpool1d", "stride")),
    ({"type": "maxpool1d", "pool_size": 2, "padding": [-1]},
     ("layers", 0, "maxpool1d", "padding", 0)),
    ({"type": "dropout", "rate": 1.0}, ("layers", 0, "dropout", "rate")),
    ({"type": "lstm", "units": 4, "num_layers": 0}, ("layers", 0, "lstm", "num_layers")),
    ({"type": "sequence_pool", "mode": "sum"}, ("layers", 0, "sequence_pool", "mode")),
    ({"type": "positional_encoding", "kind": "rotary"},
     ("layers", 0, "positional_encoding", "kind")),
])
def test_bad_field_values(layer: dict[str, Any], loc: tuple[Any, ...]) -> None:
    errors = parse_errors({"input_shape": [1, 8, 8], "layers": [layer]})
    assert [e["loc"] for e in errors] == [loc]


@pytest.mark.parametrize("shape", [[], [0], [3, -1], [1, 2, 3, 4, 5]])
def test_bad_input_shape(shape: list[int]) -> None:
    errors = parse_errors({"input_shape": shape, "layers": [{"type": "flatten"}]})
    assert errors and all(e["loc"][0] == "input_shape" for e in errors)


def test_data_needs_exactly_one_source() -> None:
    base = {"model": {"input_shape": [1], "layers": [{"type": "dense", "units": 1}]},
            "training": {"optimizer": "adam", "loss": "mse"}}
    for data in ({}, {"builtin": "xor", "dataset_id": "abc"}):
        errors = parse_errors({**base, "data": data}, JobSpec)
        assert errors[0]["loc"] == ("data",) and "exactly one" in errors[0]["msg"]
    assert JobSpec.model_validate({**base, "data": {"builtin": "xor"}}).data.builtin.name == "xor"
