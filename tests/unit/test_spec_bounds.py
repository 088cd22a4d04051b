"""Every number of the spec language is bounded, and in-bound extremes fail cleanly.

The spec classes are read from the registries (layers, optimizers, schedulers, datasets) and the
spec models, so a new field without an upper bound, or a new type, fails here by itself:

- every integer and real in their JSON schemas has a lower and an upper bound, every array of
  numbers a maximum length, every free-form string a maximum length;
- for every integer field, 10**12 (and -10**12) is a pydantic ValidationError naming the field,
  while the bound itself is accepted;
- values at the bounds that together make absurd shapes are a SpecError from shape inference
  (or a ValidationError), never another exception, an overflow or a long wait.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from dlmodels import bounds
from dlmodels.builder import summarize
from dlmodels.datasets import DATASETS
from dlmodels.errors import SpecError
from dlmodels.layers import LAYERS
from dlmodels.layers.conv import Conv2d, MaxPool2d
from dlmodels.layers.sequence import Embedding, TransformerEncoder
from dlmodels.optimizers import OPTIMIZERS, SCHEDULERS, Adam, CosineLR, PlateauLR, StepLR
from dlmodels.spec import BuiltinData, EarlyStopping, JobSpec, ModelSpec, TrainingSpec
from dlmodels.validate import validate_model

Schema = dict[str, Any]

SPECS: dict[str, type[BaseModel]] = {
    **{f"layer {name}": cls for name, cls in LAYERS.items()},
    **{f"optimizer {name}": cls for name, cls in OPTIMIZERS.items()},
    **{f"scheduler {name}": cls for name, cls in SCHEDULERS.items()},
    **{f"dataset {name} options": entry.options for name, entry in DATASETS.items()},
    "early_stopping": EarlyStopping,
    "training": TrainingSpec,
    "model": ModelSpec,
    "job": JobSpec,
}

# Parts of the schema left open on purpose, with the reason.
OPEN_BY_DESIGN = {
    # Free-form here; each dataset's own options model (in SPECS) bounds them.
    ("BuiltinData", "properties", "options"),
}

# Required fields that have no `examples` to build a minimal valid spec from.
REQUIRED_WITHOUT_EXAMPLE: dict[str, dict[str, Any]] = {
    "layer residual": {"layers": [{"type": "flatten"}]},
}


def type_name(cls: type[BaseModel]) -> dict[str, Any]:
    field = cls.model_fields.get("type")
    return {} if field is None else {"type": field.annotation.__args__[0]}  # type: ignore[union-attr]


def minimal(label: str) -> dict[str, Any]:
    """The smallest valid raw input for SPECS[label]: its type and its required fields."""
    cls = SPECS[label]
    raw = {**type_name(cls), **REQUIRED_WITHOUT_EXAMPLE.get(label, {})}
    for name, field in cls.model_fields.items():
        if field.is_required() and name not in raw:
            assert field.examples, f"{label}.{name} is required: give it `examples`"
            raw[name] = field.examples[0]
    return raw


def walk(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Schema]]:
    """Every sub-schema of a JSON schema ($defs included), with its path."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, (*path, index))


def is_open_by_design(path: tuple[Any, ...]) -> bool:
    return any(path[i:i + len(part)] == part for part in OPEN_BY_DESIGN for i in range(len(path)))


def kinds(schema: Schema) -> set[str]:
    """The JSON types a property schema accepts, one level of anyOf deep (`int | list[int]`)."""
    options = schema.get("anyOf", [schema])
    found = {option.get("type") for option in options}
    found |= {f"array of {option['items'].get('type')}" for option in options
              if option.get("type") == "array" and isinstance(option.get("items"), dict)}
    return {kind for kind in found if kind}


def bound_of(schema: Schema, kind: str, key: str) -> Any:
    """The `maximum`/`minimum` of a property's `kind` ("integer" or "array of integer")."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == kind:
            return option.get(key)
        if kind.startswith("array of ") and option.get("type") == "array":
            return option["items"].get(key)
    return None


def int_range(schema: Schema) -> tuple[int, int]:
    """The smallest and largest integer an integer schema accepts."""
    low = schema["minimum"] if "minimum" in schema else schema["exclusiveMinimum"] + 1
    high = schema["maximum"] if "maximum" in schema else schema["exclusiveMaximum"] - 1
    return low, high


def int_schema(schema: Schema, kind: str) -> Schema:
    """The integer schema of a property's `kind` ("integer" or "array of integer")."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "integer" and kind == "integer":
            return option
        if option.get("type") == "array" and kind == "array of integer":
            return option["items"]
    raise AssertionError(f"no {kind} in {schema}")


# --- the schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("label", sorted(SPECS))
def test_every_number_in_the_schema_is_bounded(label: str) -> None:
    unbounded = []
    for path, schema in walk(SPECS[label].model_json_schema()):
        if is_open_by_design(path):
            continue
        where = "/".join(map(str, path)) or "(root)"
        kind = schema.get("type")
        if kind in ("integer", "number"):
            if not {"maximum", "exclusiveMaximum"} & set(schema):
                unbounded.append(f"{where}: {kind} without a maximum")
            if not {"minimum", "exclusiveMinimum"} & set(schema):
                unbounded.append(f"{where}: {kind} without a minimum")
        items = [schema.get("items"), *schema.get("prefixItems", [])]
        if kind == "array" and any(isinstance(i, dict) and i.get("type") in ("integer", "number")
                                   for i in items) and "maxItems" not in schema:
            unbounded.append(f"{where}: array of numbers without maxItems")
        if (kind == "string" and "maxLength" not in schema and "enum" not in schema
                and "const" not in schema):
            unbounded.append(f"{where}: string without maxLength")
    assert not unbounded, f"{label}: bound these in dlmodels/bounds.py: {unbounded}"


def properties(cls: type[BaseModel]) -> dict[str, Schema]:
    """A model's property schemas (a recursive model's schema is a $ref into its $defs)."""
    schema = cls.model_json_schema()
    if "$ref" in schema:
        schema = schema["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema.get("properties", {})


def int_fields() -> list[tuple[str, str]]:
    """(spec label, field) for every field that takes an integer or a list of them."""
    return [(label, name) for label, cls in sorted(SPECS.items())
            for name, prop in properties(cls).items()
            if kinds(prop) & {"integer", "array of integer"}]


INT_FIELDS = int_fields()


def test_the_registries_have_integer_fields_to_check() -> None:
    """The walk over the registries finds the fields this test was written for."""
    expected = {("layer conv2d", "padding"), ("layer conv1d", "kernel_size"),
                ("layer maxpool2d", "pool_size"), ("layer maxpool1d", "stride"),
                ("layer transformer_encoder", "num_heads"), ("layer lstm", "num_layers"),
                ("layer embedding", "num_embeddings"), ("scheduler step", "step_size"),
                ("scheduler cosine", "t_max"), ("scheduler plateau", "patience"),
                ("early_stopping", "patience"), ("training", "seed"),
                ("training", "batch_size"), ("training", "epochs"), ("model", "input_shape"),
                ("dataset parity options", "n")}
    assert expected <= set(INT_FIELDS)


def errors_of(label: str, field: str, value: Any) -> list[dict[str, Any]]:
    raw = {**minimal(label), field: value}
    with pytest.raises(ValidationError) as info:
        SPECS[label].model_validate(raw)
    return info.value.errors()  # type: ignore[return-value]


@pytest.mark.parametrize("label,field", INT_FIELDS)
def test_an_absurd_integer_is_refused_naming_the_field(label: str, field: str) -> None:
    cls = SPECS[label]
    cls.model_validate(minimal(label))  # the baseline is valid, so the value is what fails
    prop = properties(cls)[field]
    values: list[Any] = []
    if "integer" in kinds(prop):
        values += [10**12, -(10**12)]
    if "array of integer" in kinds(prop):
        values += [[10**12], [1, 10**12]]
    for value in values:
        errors = errors_of(label, field, value)
        assert all(e["loc"][:1] == (field,) for e in errors), (value, errors)
        if isinstance(value, int) or value == [10**12]:
            assert errors[0]["type"] in ("less_than_equal", "less_than", "greater_than_equal",
                                         "greater_than"), (value, errors)


@pytest.mark.parametrize("label,field", INT_FIELDS)
def test_the_bounds_themselves_are_accepted(label: str, field: str) -> None:
    cls = SPECS[label]
    prop = properties(cls)[field]
    for kind in sorted(kinds(prop) & {"integer", "array of integer"}):
        low, high = int_range(int_schema(prop, kind))
        wrap = (lambda v: [v]) if kind.startswith("array") else (lambda v: v)
        for value in (low, high):
            cls.model_validate({**minimal(label), field: wrap(value)})
        errors = errors_of(label, field, wrap(high + 1))
        assert errors[0]["loc"][:1] == (field,)


@pytest.mark.parametrize("label,field", [
    (label, name) for label, cls in sorted(SPECS.items())
    for name, prop in properties(cls).items()
    if kinds(prop) & {"number", "array of number"}])
def test_an_absurd_real_is_refused_naming_the_field(label: str, field: str) -> None:
    prop = properties(SPECS[label])[field]
    value: Any = 1e300
    if "number" not in kinds(prop):
        value = [1e300]
    elif prop.get("type") == "array":  # a tuple such as Adam's betas
        value = [1e300] * len(prop["prefixItems"])
    errors = errors_of(label, field, value)
    assert all(e["loc"][:1] == (field,) for e in errors), errors


@pytest.mark.parametrize("cls,field,maximum", [
    (StepLR, "step_size", bounds.MAX_EPOCHS),
    (CosineLR, "t_max", bounds.MAX_EPOCHS),
    (PlateauLR, "patience", bounds.MAX_EPOCHS),
    (EarlyStopping, "patience", bounds.MAX_EPOCHS),
    (TrainingSpec, "epochs", bounds.MAX_EPOCHS),
    (TrainingSpec, "batch_size", bounds.MAX_BATCH_SIZE),
    (TrainingSpec, "seed", 2**32 - 1),
    (Conv2d, "kernel_size", bounds.MAX_WINDOW),
    (Conv2d, "stride", bounds.MAX_WINDOW),
    (Conv2d, "padding", bounds.MAX_PADDING),
    (MaxPool2d, "pool_size", bounds.MAX_WINDOW),
    (MaxPool2d, "padding", bounds.MAX_PADDING),
    (Embedding, "num_embeddings", bounds.MAX_VOCABULARY),
    (TransformerEncoder, "num_heads", bounds.MAX_HEADS),
    (TransformerEncoder, "num_layers", bounds.MAX_STACKED_LAYERS),
    (Adam, "eps", bounds.MAX_EPS),
    (EarlyStopping, "min_delta", bounds.MAX_MIN_DELTA),
])
def test_the_chosen_bounds(cls: type[BaseModel], field: str, maximum: int | float) -> None:
    prop = properties(cls)[field]
    kind = "number" if isinstance(maximum, float) else "integer"
    assert bound_of(prop, kind, "maximum") == maximum


def test_the_api_loc_of_a_bound_is_the_field_not_a_union_branch() -> None:
    """`kernel_size` is an int or a list: a bad value is one error, at the field (or the
    list item), not one per union branch."""
    layer = {"type": "conv2d", "filters": 2, "kernel_size": [3, 10**12], "padding": 10**12}
    with pytest.raises(ValidationError) as info:
        ModelSpec.model_validate({"input_shape": [1, 8, 8], "layers": [layer]})
    assert sorted((e["loc"], e["type"]) for e in info.value.errors()) == [
        (("layers", 0, "conv2d", "kernel_size", 1), "less_than_equal"),
        (("layers", 0, "conv2d", "padding"), "less_than_equal")]


# --- sizes that only matter together ----------------------------------------------------------


def spec_error(input_shape: list[int], *layers: dict[str, Any], dtype: str = "float") -> SpecError:
    spec = ModelSpec.model_validate({"input_shape": input_shape, "input_dtype": dtype,
                                     "layers": list(layers)})
    with pytest.raises(SpecError) as info:
        validate_model(spec)
    return info.value


@pytest.mark.parametrize("input_shape,layers,dtype,loc", [
    # Padding at its bound on a large image: 65,536 x 44,096 x 44,096 outputs.
    ([1, 40_000, 40_000], [{"type": "conv2d", "filters": 65_536, "kernel_size": 1,
                            "padding": bounds.MAX_PADDING}], "float", ("model", "layers", 0)),
    # Dense on every step of a long sequence: 10^6 steps x 10^6 units.
    ([1_000_000, 8], [{"type": "dense", "units": 1_000_000}], "float", ("model", "layers", 0)),
    # Embedding of a long token sequence: 10^6 x 65,536.
    ([1_000_000], [{"type": "embedding", "num_embeddings": 10, "embedding_dim": 65_536}], "int",
     ("model", "layers", 0)),
    # The same inside a residual block: the loc goes into the block.
    ([10_000, 8], [{"type": "layernorm"}, {"type": "residual", "layers": [
        {"type": "dense", "units": 1_000_000}]}], "float", ("model", "layers", 1, "layers", 0)),
])
def test_a_huge_output_is_a_spec_error(input_shape: list[int], layers: list[dict[str, Any]],
                                       dtype: str, loc: tuple[Any, ...]) -> None:
    error = spec_error(input_shape, *layers, dtype=dtype)
    assert error.loc == loc
    assert f"{bounds.MAX_SAMPLE_ELEMENTS:,}" in error.message


def test_an_input_too_large_for_one_sample_is_refused_at_input_shape() -> None:
    with pytest.raises(ValidationError) as info:
        ModelSpec.model_validate({"input_shape": [1_000_000] * 3, "layers": [{"type": "flatten"}]})
    assert [e["loc"] for e in info.value.errors()] == [("input_shape",)]
    ModelSpec.model_validate({"input_shape": [2147, 1_000_000], "layers": [{"type": "flatten"}]})


def residual_tower(levels: int, leaf: dict[str, Any]) -> dict[str, Any]:
    layer = leaf
    for _ in range(levels):
        layer = {"type": "residual", "layers": [layer]}
    return layer


def test_residual_nesting_is_bounded() -> None:
    dense = {"type": "dense", "units": 2}
    ModelSpec.model_validate({"input_shape": [2],
                              "layers": [residual_tower(bounds.MAX_NESTING, dense)]})
    with pytest.raises(ValidationError) as info:
        ModelSpec.model_validate({"input_shape": [2],
                                  "layers": [residual_tower(bounds.MAX_NESTING + 1, dense)]})
    assert "nested" in str(info.value)


@pytest.mark.parametrize("layers", [
    [{"type": "residual", "layers": [{"type": "flatten"}] * 100_000}],
    [{"type": "flatten"}] * 600 + [{"type": "residual", "layers": [{"type": "flatten"}] * 600}],
    # 1000 blocks of 1000: each list is in bounds, the tree is a million layers.
    [{"type": "residual", "layers": [{"type": "residual",
                                      "layers": [{"type": "flatten"}] * 1000}] * 1000}],
])
def test_the_layer_count_includes_nested_layers_and_is_refused_fast(
        layers: list[dict[str, Any]]) -> None:
    started = time.monotonic()
    with pytest.raises(ValidationError):
        ModelSpec.model_validate({"input_shape": [2], "layers": layers})
    assert time.monotonic() - started < 1.0


# --- property: any in-bound values fail cleanly, or summarise to bounded numbers ---------------


def in_bounds(prop: Schema, *, extreme: bool = True) -> st.SearchStrategy[Any]:
    """Values of a property schema, mostly at its bounds (which is where the trouble is)."""
    options: list[st.SearchStrategy[Any]] = []
    for option in prop.get("anyOf", [prop]):
        kind = option.get("type")
        if kind == "integer":
            low, high = int_range(option)
            options.append(st.sampled_from([low, high, min(high, low + 1)])
                           | st.integers(low, min(high, low + 64)) | st.integers(low, high))
        elif kind == "number":
            low = option.get("minimum", option.get("exclusiveMinimum"))
            high = option.get("maximum", option.get("exclusiveMaximum"))
            options.append(st.floats(low, high, exclude_min="minimum" not in option,
                                     exclude_max="maximum" not in option))
        elif kind == "array" and "items" in option:
            options.append(st.lists(in_bounds(option["items"]), min_size=option.get("minItems", 0),
                                    max_size=min(option.get("maxItems", 3), 3)))
        elif kind == "boolean":
            options.append(st.booleans())
        elif kind == "null":
            options.append(st.none())
        elif "const" in option:
            options.append(st.just(option["const"]))
        elif "enum" in option:
            options.append(st.sampled_from(option["enum"]))
    return st.one_of(options) if options else st.nothing()


LEAF_TYPES = [name for name in LAYERS.names() if name != "residual"]


@st.composite
def extreme_layer(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    name = draw(st.sampled_from(LEAF_TYPES if depth else LAYERS.names()))
    cls = LAYERS.get(name)
    props = properties(cls)
    layer: dict[str, Any] = {"type": name}
    for field, info in cls.model_fields.items():
        if field in ("type", "init") or not (info.is_required() or draw(st.booleans())):
            continue
        if field in ("layers", "shortcut"):
            layer[field] = draw(st.lists(extreme_layer(depth + 1), min_size=1, max_size=2))
        else:
            layer[field] = draw(in_bounds(props[field]))
    return layer


AXES = st.sampled_from([1, 2, 3, 8, 1000, 46_340, 1_000_000])


@st.composite
def extreme_specs(draw: st.DrawFn) -> dict[str, Any]:
    layers = draw(st.lists(extreme_layer(), min_size=1, max_size=3))
    shape = draw(st.lists(AXES, min_size=1, max_size=3))
    return {"input_shape": shape, "layers": layers,
            "input_dtype": "int" if layers[0]["type"] == "embedding" else "float"}


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(extreme_specs())
def test_in_bound_extremes_are_refused_cleanly_or_bounded(raw: dict[str, Any]) -> None:
    """Only a ValidationError or a SpecError, or a summary whose every number is bounded; and
    quickly, since nothing is allocated (the summary builds on the meta device)."""
    started = time.monotonic()
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError:
        event("refused by the schema")
        return
    try:
        summary = summarize(spec)
    except SpecError as error:
        assert error.loc[:2] == ("model", "layers") and error.message
        event("refused by shape inference")
        return
    event("summarised")
    assert all(math.prod(row.output_shape) <= bounds.MAX_SAMPLE_ELEMENTS
               for row in summary.layers)
    assert summary.total_params < 2**63 and summary.activation_bytes_per_sample < 2**63
    assert time.monotonic() - started < 10, raw


def test_builtin_data_options_are_bounded_by_each_dataset() -> None:
    """The one open part of the schema: `data.builtin.options` is checked by the dataset."""
    assert BuiltinData.model_json_schema()["properties"]["options"]["type"] == "object"
    assert all(f"dataset {name} options" in SPECS for name in DATASETS.names())
