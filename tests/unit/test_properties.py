"""Property tests: random specs drawn from the layer registry.

Valid specs: summarize() never raises and its shapes and counts equal the built module's on a
real forward pass. Invalid specs: only SpecError or pydantic's ValidationError, never another
exception (a ZeroDivisionError or a torch RuntimeError would be a 500 in the API).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dlmodels.builder import build_model, summarize
from dlmodels.errors import SpecError
from dlmodels.layers import LAYERS
from dlmodels.spec import ModelSpec
from dlmodels.validate import validate_model

torch.set_num_threads(2)

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

Layer = dict[str, Any]

ACTIVATIONS = [None, "relu", "sigmoid", "tanh", "leaky_relu", "softmax", "gelu", "elu", "selu",
               "silu", "softplus", "identity"]
activations = st.sampled_from(ACTIVATIONS)
small = st.integers(1, 12)


def check(raw: dict[str, Any]) -> None:
    """summarize() == the module built from the spec, layer by layer, on a batch of 2."""
    spec = ModelSpec.model_validate(raw)
    summary = validate_model(spec)
    model = build_model(spec).eval()
    shapes: list[list[int]] = []
    for layer in model.layers:
        layer.register_forward_hook(lambda _m, _i, out: shapes.append(list(out.shape[1:])))
    if spec.input_dtype == "int":
        x = torch.randint(0, spec.layers[0].num_embeddings, (2, *spec.input_shape))  # type: ignore[union-attr]
    else:
        x = torch.randn(2, *spec.input_shape)
    with torch.no_grad():
        model(x)
    assert [r.output_shape for r in summary.layers] == shapes
    assert [r.params for r in summary.layers] == [
        sum(p.numel() for p in layer.parameters()) for layer in model.layers]
    assert summary.total_params == sum(p.numel() for p in model.parameters())
    assert summary.trainable_params == sum(
        p.numel() for p in model.parameters() if p.requires_grad)


# --- valid specs, built shape by shape ----------------------------------------------------------


@st.composite
def dense_block(draw: st.DrawFn, width: int) -> tuple[list[Layer], int]:
    kind = draw(st.sampled_from(["dense", "dropout", "batchnorm", "layernorm", "activation",
                                 "residual", "residual_shortcut"]))
    if kind == "dense":
        units = draw(small)
        return [{"type": "dense", "units": units, "activation": draw(activations),
                 "use_bias": draw(st.booleans()), "trainable": draw(st.booleans())}], units
    if kind == "dropout":
        return [{"type": "dropout", "rate": draw(st.floats(0, 0.9))}], width
    if kind == "activation":
        return [{"type": "activation", "name": draw(activations.filter(bool))}], width
    if kind == "residual":
        return [{"type": "residual", "layers": [{"type": "dense", "units": draw(small),
                                                 "activation": "relu"},
                                                {"type": "dense", "units": width}]}], width
    if kind == "residual_shortcut":
        units = draw(small)
        return [{"type": "residual", "layers": [{"type": "dense", "units": units}],
                 "shortcut": [{"type": "dense", "units": units, "use_bias": False}]}], units
    return [{"type": kind}], width


@st.composite
def mlp_specs(draw: st.DrawFn) -> dict[str, Any]:
    width = draw(small)
    spec: dict[str, Any] = {"input_shape": [width], "layers": []}
    for _ in range(draw(st.integers(1, 5))):
        layers, width = draw(dense_block(width))
        spec["layers"] += layers
    if draw(st.booleans()):
        spec["init"] = {"weights": draw(st.sampled_from(
            ["default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
             "normal"])), "bias": draw(st.sampled_from(["default", "zeros"]))}
    return spec


@st.composite
def conv_or_pool(draw: st.DrawFn, shape: list[int], rank: int) -> tuple[Layer, list[int]]:
    """One conv/pool layer that fits `shape` ([C, *spatial]); returns it and its output shape."""
    spatial = shape[1:]
    kind = draw(st.sampled_from(["conv", "conv", "maxpool", "avgpool", "batchnorm", "dropout"]))
    if kind in ("batchnorm", "dropout"):
        return {"type": kind}, shape
    if kind == "conv":
        filters = draw(st.integers(1, 6))
        if draw(st.booleans()):
            kernel = [draw(st.integers(1, 4)) for _ in spatial]
            return {"type": f"conv{rank}d", "filters": filters, "kernel_size": kernel,
                    "padding": "same", "activation": draw(activations)}, [filters, *spatial]
        padding = [draw(st.integers(0, 2)) for _ in spatial]
        kernel = [draw(st.integers(1, s + 2 * p)) for s, p in zip(spatial, padding, strict=True)]
        stride = [draw(st.integers(1, 3)) for _ in spatial]
        out = [(s + 2 * p - k) // st_ + 1
               for s, p, k, st_ in zip(spatial, padding, kernel, stride, strict=True)]
        return {"type": f"conv{rank}d", "filters": filters, "kernel_size": kernel,
                "stride": stride, "padding": padding, "use_bias": draw(st.booleans()),
                "activation": draw(activations)}, [filters, *out]
    kernel = [draw(st.integers(1, max(1, min(s, 3)))) for s in spatial]
    padding = [draw(st.integers(0, k // 2)) for k in kernel]
    stride = [draw(st.integers(1, 3)) for _ in spatial]
    out = [(s + 2 * p - k) // st_ + 1
           for s, p, k, st_ in zip(spatial, padding, kernel, stride, strict=True)]
    return {"type": f"{kind}{rank}d", "pool_size": kernel, "stride": stride,
            "padding": padding}, [shape[0], *out]


@st.composite
def cnn_specs(draw: st.DrawFn) -> dict[str, Any]:
    rank = draw(st.sampled_from([1, 2]))
    shape = [draw(st.integers(1, 3)), *[draw(st.integers(1, 10)) for _ in range(rank)]]
    spec: dict[str, Any] = {"input_shape": list(shape), "layers": []}
    for _ in range(draw(st.integers(1, 4))):
        layer, shape = draw(conv_or_pool(shape, rank))
        spec["layers"].append(layer)
    if draw(st.booleans()):  # a ResNet-style block that keeps the shape
        spec["layers"].append({"type": "residual", "layers": [
            {"type": f"conv{rank}d", "filters": shape[0], "kernel_size": 3, "padding": "same"},
            {"type": "batchnorm"}]})
    spec["layers"] += [{"type": draw(st.sampled_from(["flatten", "global_avgpool"]))},
                       {"type": "dense", "units": draw(small), "activation": draw(activations)}]
    return spec


@st.composite
def sequence_specs(draw: st.DrawFn) -> dict[str, Any]:
    steps = draw(st.integers(1, 8))
    if draw(st.booleans()):
        width = draw(st.sampled_from([2, 4, 6, 8]))
        spec: dict[str, Any] = {"input_shape": [steps], "input_dtype": "int", "layers": [
            {"type": "embedding", "num_embeddings": draw(st.integers(1, 30)),
             "embedding_dim": width}]}
    else:
        width = draw(st.integers(1, 8))
        spec = {"input_shape": [steps, width], "layers": []}
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["recurrent", "transformer", "positional_encoding", "dense",
                                     "layernorm"]))
        if kind == "recurrent":
            units = draw(st.integers(1, 6))
            bidirectional = draw(st.booleans())
            spec["layers"].append({
                "type": draw(st.sampled_from(["rnn", "lstm", "gru"])), "units": units,
                "num_layers": draw(st.integers(1, 2)), "bidirectional": bidirectional,
                "return_sequences": True})
            width = units * (2 if bidirectional else 1)
        elif kind == "transformer":
            heads = draw(st.sampled_from([h for h in range(1, width + 1) if width % h == 0]))
            spec["layers"].append({
                "type": "transformer_encoder", "num_heads": heads,
                "dim_feedforward": draw(st.integers(1, 16)), "num_layers": draw(st.integers(1, 2)),
                "norm_first": draw(st.booleans()), "activation": draw(st.sampled_from(
                    ["relu", "gelu"]))})
        elif kind == "positional_encoding":
            spec["layers"].append({"type": "positional_encoding",
                                   "kind": draw(st.sampled_from(["sinusoidal", "learned"]))})
        elif kind == "dense":
            width = draw(small)
            spec["layers"].append({"type": "dense", "units": width,
                                   "activation": draw(activations)})
        elif kind == "layernorm":
            spec["layers"].append({"type": "layernorm"})
    ending = draw(st.sampled_from(["pool", "recurrent", "flatten"]))
    if ending == "pool":
        spec["layers"].append({"type": "sequence_pool",
                               "mode": draw(st.sampled_from(["mean", "max", "last", "first"]))})
    elif ending == "recurrent":
        spec["layers"].append({"type": draw(st.sampled_from(["rnn", "lstm", "gru"])),
                               "units": draw(st.integers(1, 6)),
                               "bidirectional": draw(st.booleans())})
    else:
        spec["layers"].append({"type": "flatten"})
    spec["layers"].append({"type": "dense", "units": draw(small)})
    return spec


@SETTINGS
@given(mlp_specs())
def test_random_mlp_summary_matches_module(raw: dict[str, Any]) -> None:
    check(raw)


@SETTINGS
@given(cnn_specs())
def test_random_cnn_summary_matches_module(raw: dict[str, Any]) -> None:
    check(raw)


@SETTINGS
@given(sequence_specs())
def test_random_sequence_summary_matches_module(raw: dict[str, Any]) -> None:
    event(" ".join(layer["type"] for layer in raw["layers"]))
    check(raw)


# --- anything at all: refused cleanly, or consistent --------------------------------------------

FIELD_NAMES = sorted({name for _, cls in LAYERS.items() for name in cls.model_fields} - {"type"})
JUNK_TYPES = ["conv3d", "Dense", "", "attention", "lstm2"]

field_values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 12), st.floats(-1, 2), st.just(float("nan")),
    st.lists(st.integers(-2, 6), max_size=4), st.sampled_from([
        *ACTIVATIONS[1:], "same", "valid", "mean", "learned", "sinusoidal", "zeros", "x"]),
)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` about 9 times in 10."""
    # sampled_from, not integers: hypothesis draws integers' bounds far more often.
    return st.sampled_from(range(10)).flatmap(lambda n: bad if n == 9 else good)


mostly_positive = mostly(st.integers(1, 8), st.integers(-2, 0))
size = mostly(st.integers(1, 5) | st.lists(st.integers(1, 5), min_size=1, max_size=2),
              st.lists(st.integers(-1, 5), max_size=3))
fraction = mostly(st.floats(0, 0.9), st.floats(-1, 2))
# Plausible values per field, so that a good share of the random specs parse and the shape
# checks get exercised; anything else falls back to `field_values`.
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    **{name: mostly_positive for name in ("units", "filters", "num_embeddings", "embedding_dim",
                                          "num_heads", "dim_feedforward", "num_layers")},
    "kernel_size": size, "pool_size": size, "stride": st.one_of(size, st.none()),
    "padding": mostly(st.integers(0, 2) | st.just("same"), size),
    "activation": mostly(st.sampled_from(ACTIVATIONS), st.just("swish")),
    "name": mostly(st.sampled_from(ACTIVATIONS[1:]), st.just("swish")),
    "mode": mostly(st.sampled_from(["mean", "max", "last", "first"]), st.just("sum")),
    "kind": mostly(st.sampled_from(["sinusoidal", "learned"]), st.just("rotary")),
    **{name: fraction for name in ("rate", "dropout", "momentum", "eps", "negative_slope")},
    **{name: st.booleans() for name in ("bidirectional", "return_sequences", "use_bias",
                                        "trainable", "norm_first")},
    "init": st.one_of(st.none(), st.fixed_dictionaries({"weights": st.sampled_from(
        ["default", "xavier_uniform", "normal", "orthogonal"])})),
}


@st.composite
def any_layer(draw: st.DrawFn, depth: int = 0) -> Layer:
    """A layer of a registered type (rarely an unknown one) with a random subset of its fields:
    required ones usually present, values usually plausible, rarely a bogus field."""
    type_name = draw(mostly(st.sampled_from(LAYERS.names()), st.sampled_from(JUNK_TYPES)))
    layer: Layer = {"type": type_name}
    if type_name not in LAYERS:
        return layer
    for name, field in LAYERS.get(type_name).model_fields.items():
        keep = 9 if field.is_required() else 3  # in 10
        if name == "type" or draw(st.sampled_from(range(10))) >= keep:
            continue
        if name in ("layers", "shortcut"):
            if depth < 2:
                layer[name] = draw(st.lists(any_layer(depth + 1), min_size=1, max_size=2))
            continue
        layer[name] = draw(FIELD_VALUES.get(name, field_values))
    if draw(st.sampled_from(range(20))) == 19:
        layer[draw(st.sampled_from([*FIELD_NAMES, "bogus"]))] = draw(field_values)
    return layer


@st.composite
def any_spec(draw: st.DrawFn) -> dict[str, Any]:
    shape = mostly(st.lists(st.integers(1, 9), min_size=1, max_size=3),
                   st.lists(st.integers(-1, 9), max_size=5))
    return {"input_shape": draw(shape),
            "input_dtype": draw(mostly(st.sampled_from(["float", "int"]), st.just("double"))),
            "layers": draw(st.lists(any_layer(), min_size=1, max_size=3))}


def outcome(raw: dict[str, Any]) -> str:
    """'parse' or 'spec' for a clean refusal, 'ok' when valid (then it must be consistent)."""
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError:
        return "parse"
    try:
        validate_model(spec)
    except SpecError as error:
        assert error.loc[:2] == ("model", "layers") and error.message
        return "spec"
    check(raw)
    return "ok"


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(any_spec())
def test_any_spec_is_refused_cleanly_or_consistent(raw: dict[str, Any]) -> None:
    event(outcome(raw))


@st.composite
def broken_valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid spec with exactly one thing broken."""
    raw = draw(st.one_of(mlp_specs(), cnn_specs(), sequence_specs()))
    index = draw(st.integers(0, len(raw["layers"]) - 1))
    layer = dict(raw["layers"][index])
    how = draw(st.sampled_from(["negative", "unknown_type", "unknown_field", "too_big",
                                "wrong_rank", "bad_shape"]))
    if how == "negative":
        numeric = [k for k, v in layer.items() if isinstance(v, int) and not isinstance(v, bool)]
        if not numeric:
            layer = {"type": "dense", "units": 0}
        else:
            layer[draw(st.sampled_from(numeric))] = -draw(st.integers(1, 5))
    elif how == "unknown_type":
        layer["type"] = draw(st.sampled_from(JUNK_TYPES))
    elif how == "unknown_field":
        layer["units_" + draw(st.text("abc", min_size=1, max_size=3))] = 1
    elif how == "too_big":  # a kernel or pool far larger than any input here
        kind = draw(st.sampled_from(["conv1d", "conv2d", "maxpool1d", "avgpool2d"]))
        layer = {"type": kind, "pool_size": 99} if "pool" in kind else {
            "type": kind, "filters": 2, "kernel_size": 99}
    elif how == "wrong_rank":  # a layer that needs a sequence or an image, on a flat vector
        kind = draw(st.sampled_from(["lstm", "sequence_pool", "global_avgpool", "conv2d"]))
        layer = {"type": kind, **{"lstm": {"units": 2},
                                  "conv2d": {"filters": 2, "kernel_size": 1}}.get(kind, {})}
        return {"input_shape": [3], "layers": [layer]}
    else:
        raw["input_shape"] = [0, *raw["input_shape"]]
        return raw
    raw["layers"] = [*raw["layers"][:index], layer, *raw["layers"][index + 1:]]
    return raw


@SETTINGS
@given(broken_valid_specs())
def test_broken_specs_are_refused(raw: dict[str, Any]) -> None:
    assert outcome(raw) in ("parse", "spec"), raw


def test_field_strategies_cover_the_registry() -> None:
    """Every field of every registered type has a plausible-value strategy, so a new layer
    type's fields are exercised by the random specs beyond pure junk."""
    missing = set(FIELD_NAMES) - set(FIELD_VALUES) - {"layers", "shortcut"}
    assert not missing, f"add strategies to FIELD_VALUES for {sorted(missing)}"


def test_summary_of_a_huge_model_allocates_nothing() -> None:
    """Shapes and counts come from the meta device: a 10-billion-parameter spec is instant."""
    raw = {"input_shape": [100_000], "layers": [{"type": "dense", "units": 100_000}]}
    assert summarize(ModelSpec.model_validate(raw)).total_params == 100_000 * 100_001
