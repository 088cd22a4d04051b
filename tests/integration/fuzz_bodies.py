"""Hostile request bodies for tests/integration/test_fuzz.py.

JSON has no NaN, Infinity or 1e999 that `json.dumps` could produce on purpose, and deep or long
lists are slow to build as Python objects, so bodies are written as text: `Raw` holds a JSON
token (or any JSON text) that `dumps` writes verbatim.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.integration.jobs import HEIGHTS


@dataclass(frozen=True)
class Raw:
    """JSON text written as is: `NaN`, `Infinity`, `1e999`, a 10,000-deep list, ..."""

    text: str

    def __repr__(self) -> str:
        return f"Raw({self.text[:60]!r}{'...' if len(self.text) > 60 else ''})"


def dumps(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


def replaced(body: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """A deep copy of `body` with the value at `path` replaced."""
    result = copy.deepcopy(body)
    node: Any = result
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return result


# --- the specs that get mutated -----------------------------------------------------------
# Each is valid as it stands (test_fuzz checks that), so a refusal is the mutation's doing.

MLP: dict[str, Any] = {
    "name": "fuzz-mlp",
    "model": {"input_shape": [1], "layers": [
        {"type": "dense", "units": 8},
        {"type": "batchnorm", "momentum": 0.1, "eps": 1e-5},
        {"type": "activation", "name": "leaky_relu", "negative_slope": 0.01},
        {"type": "dropout", "rate": 0.1},
        {"type": "layernorm", "eps": 1e-5},
        {"type": "dense", "units": 1}]},
    "training": {"optimizer": {"type": "adam", "lr": 0.001, "weight_decay": 0.0,
                               "betas": [0.9, 0.999], "eps": 1e-8},
                 "loss": "mse", "epochs": 2, "batch_size": 4, "seed": 0, "metrics": ["mae"],
                 "validation_split": 0.2,
                 "early_stopping": {"monitor": "val_loss", "patience": 1, "min_delta": 0.0},
                 "lr_scheduler": {"type": "step", "step_size": 1, "gamma": 0.5}},
    "data": copy.deepcopy(HEIGHTS["data"]),
}

CNN: dict[str, Any] = {
    "name": "fuzz-cnn",
    "model": {"input_shape": [1, 8, 8], "layers": [
        {"type": "conv2d", "filters": 4, "kernel_size": 3, "stride": 1, "padding": 1,
         "activation": "relu"},
        {"type": "maxpool2d", "pool_size": 2, "stride": 2},
        {"type": "conv2d", "filters": 4, "kernel_size": [2, 2]},
        {"type": "global_avgpool"},
        {"type": "dense", "units": 10, "activation": "softmax"}]},
    "training": {"optimizer": {"type": "sgd", "lr": 0.01, "momentum": 0.9},
                 "loss": "cross_entropy", "epochs": 1, "batch_size": 64, "metrics": ["accuracy"],
                 "lr_scheduler": {"type": "cosine", "t_max": 5, "eta_min": 0.0}},
    "data": {"builtin": {"name": "digits"}},
}

TRANSFORMER: dict[str, Any] = {
    "name": "fuzz-transformer",
    "model": {"input_shape": [8], "input_dtype": "int", "layers": [
        {"type": "embedding", "num_embeddings": 2, "embedding_dim": 8},
        {"type": "positional_encoding", "kind": "learned"},
        {"type": "transformer_encoder", "num_heads": 2, "dim_feedforward": 16, "num_layers": 1,
         "dropout": 0.1},
        {"type": "sequence_pool", "mode": "mean"},
        {"type": "dense", "units": 2, "activation": "softmax"}]},
    "training": {"optimizer": {"type": "adamw", "lr": 0.001, "weight_decay": 0.01},
                 "loss": "cross_entropy", "epochs": 1, "batch_size": 16},
    "data": {"builtin": {"name": "parity", "options": {"n": 64, "length": 8, "tokens": True}}},
}

RNN: dict[str, Any] = {
    "name": "fuzz-rnn",
    "model": {"input_shape": [8, 1], "layers": [
        {"type": "lstm", "units": 4, "num_layers": 2, "dropout": 0.1, "bidirectional": True},
        {"type": "dense", "units": 1}]},
    "training": {"optimizer": {"type": "rmsprop", "lr": 0.01, "alpha": 0.9, "momentum": 0.1},
                 "loss": "huber", "epochs": 1, "batch_size": 16, "validation_split": 0.25,
                 "lr_scheduler": {"type": "plateau", "monitor": "val_loss", "factor": 0.5,
                                  "patience": 1, "min_lr": 0.0}},
    "data": {"builtin": {"name": "sequence_sum", "options": {"n": 64, "length": 8,
                                                             "tokens": False}}},
}

BASES = {"mlp": MLP, "cnn": CNN, "transformer": TRANSFORMER, "rnn": RNN}

# Where a positive integer size goes (0, negatives, fractions and absurd sizes are refused).
SIZE_PATHS: dict[str, list[tuple[str | int, ...]]] = {
    "mlp": [("model", "input_shape", 0), ("model", "layers", 0, "units"),
            ("model", "layers", 5, "units"), ("training", "epochs"), ("training", "batch_size")],
    "cnn": [("model", "input_shape", 0), ("model", "input_shape", 1), ("model", "input_shape", 2),
            ("model", "layers", 0, "filters"), ("model", "layers", 0, "kernel_size"),
            ("model", "layers", 0, "stride"), ("model", "layers", 1, "pool_size"),
            ("model", "layers", 2, "kernel_size", 1), ("model", "layers", 4, "units")],
    "transformer": [("model", "input_shape", 0), ("model", "layers", 0, "num_embeddings"),
                    ("model", "layers", 0, "embedding_dim"), ("model", "layers", 2, "num_heads"),
                    ("model", "layers", 2, "dim_feedforward"),
                    ("model", "layers", 2, "num_layers"),
                    ("data", "builtin", "options", "n"), ("data", "builtin", "options", "length")],
    "rnn": [("model", "input_shape", 0), ("model", "input_shape", 1),
            ("model", "layers", 0, "units"), ("model", "layers", 0, "num_layers"),
            ("data", "builtin", "options", "n")],
}

# Where a real number goes (bounded or not, NaN and the infinities have no place in any).
FLOAT_PATHS: dict[str, list[tuple[str | int, ...]]] = {
    "mlp": [("model", "layers", 1, "momentum"), ("model", "layers", 1, "eps"),
            ("model", "layers", 2, "negative_slope"), ("model", "layers", 3, "rate"),
            ("model", "layers", 4, "eps"), ("training", "optimizer", "lr"),
            ("training", "optimizer", "weight_decay"), ("training", "optimizer", "betas", 0),
            ("training", "optimizer", "betas", 1), ("training", "optimizer", "eps"),
            ("training", "validation_split"), ("training", "early_stopping", "min_delta"),
            ("training", "lr_scheduler", "gamma"), ("training", "seed")],
    "cnn": [("training", "optimizer", "lr"), ("training", "optimizer", "momentum"),
            ("training", "lr_scheduler", "eta_min")],
    "transformer": [("model", "layers", 2, "dropout"), ("training", "optimizer", "lr"),
                    ("training", "optimizer", "weight_decay")],
    "rnn": [("model", "layers", 0, "dropout"), ("training", "optimizer", "alpha"),
            ("training", "optimizer", "momentum"), ("training", "lr_scheduler", "factor"),
            ("training", "lr_scheduler", "min_lr")],
}

# Counts with no natural upper bound (0, negatives, fractions, non-numbers and 10**400 are bad).
COUNT_PATHS: dict[str, list[tuple[str | int, ...]]] = {
    "mlp": [("training", "lr_scheduler", "step_size"), ("training", "early_stopping", "patience")],
    "cnn": [("training", "lr_scheduler", "t_max")],
    "transformer": [],
    "rnn": [("training", "lr_scheduler", "patience")],
}

# Where 0 is fine but a huge value makes activations no machine holds (a [4, 2e5, 2e5] conv
# output is 640 GB per sample, with 40 parameters).
PADDING_PATHS: dict[str, list[tuple[str | int, ...]]] = {
    "mlp": [], "cnn": [("model", "layers", 0, "padding"), ("model", "layers", 2, "padding")],
    "transformer": [], "rnn": [],
}

# --- hostile values -----------------------------------------------------------------------

NON_FINITE = [Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e999"), Raw("-1e999"),
              Raw("1E400"), Raw("-2e308")]
HUGE_INTS = [10**400, -(10**400), Raw("9" * 5000)]
NOT_NUMBERS = ["abc", "", "NaN", "nan", "Infinity", "-inf", "1e999", [], {}, [[]], ["a"],
               [Raw("NaN")], {"value": 1}]
BAD_SIZES = [0, -1, -(10**9), 10**9, 10**12, 2**63, 2**64, 10**18, 1.5, -0.5, 2**31]
BAD_COUNTS = [-1, -(10**9), 1.5, -0.5]  # patience may be 0
BAD_PADDINGS = [-1, 100_000, 10**6, 10**9, 10**18, 2**63, 1.5]

non_finite = st.sampled_from(NON_FINITE)
huge_ints = st.sampled_from(HUGE_INTS)
not_numbers = st.sampled_from(NOT_NUMBERS)
bad_sizes = st.sampled_from(BAD_SIZES)

bad_real = st.one_of(non_finite, huge_ints, not_numbers)
bad_size = st.one_of(bad_real, bad_sizes)
bad_count = st.one_of(bad_real, st.sampled_from(BAD_COUNTS))
bad_padding = st.one_of(bad_real, st.sampled_from(BAD_PADDINGS))


def deep(levels: int, leaf: str = "1") -> Raw:
    return Raw("[" * levels + leaf + "]" * levels)


def long_rows(n: int, row: str = "[1]", last: str = "[NaN]") -> Raw:
    """[row, row, ..., last]: n rows, the last one hostile, as text (cheap to build)."""
    return Raw("[" + (row + ",") * (n - 1) + last + "]")


# A number inside a list of numbers: every one of these must make the array refused.
bad_element = st.one_of(
    non_finite, huge_ints,
    st.sampled_from(["abc", "", "80", "1e3", "nan", "inf", None, True, False, {}, [], [1],
                     {"x": 1}, deep(3)]))


def with_bad_element(rows: list[list[Any]]) -> st.SearchStrategy[list[list[Any]]]:
    """`rows` ([N, F] numbers) with one element replaced by a hostile one."""
    n, f = len(rows), len(rows[0])

    @st.composite
    def build(draw: st.DrawFn) -> list[list[Any]]:
        i = draw(st.integers(0, n - 1))
        j = draw(st.integers(0, f - 1))
        result = copy.deepcopy(rows)
        result[i][j] = draw(bad_element)
        return result

    return build()


# Whole arrays that cannot be [N, 1] numbers (x of the MLP, inputs of the heights model).
bad_matrix_1 = st.one_of(
    st.sampled_from([
        [], [[]], [[], []], [[[]]], [[1], [2, 3]], [[1], 2], [1, [2]], [[[1]], [1]],
        [[1, 2]], [[[1]]], [1], [[1], [[1]]], "abc", 5, Raw("NaN"), {}, {"x": [1]},
        [[None]], [["80"]], [[True]],
        deep(200), [deep(199)], deep(64), deep(65), deep(2000), Raw("[" * 100_000),
        long_rows(100_000), long_rows(100_000, last="[1,2]"), long_rows(100_000, last='["a"]'),
        long_rows(1_000_000), Raw("[" + "1," * 200_000 + "1]"),
    ]),
    st.lists(st.lists(st.integers(-5, 5), min_size=2, max_size=3), min_size=1, max_size=5),
    st.lists(st.integers(-5, 5), min_size=2, max_size=5),  # [N] instead of [N, 1]
)

# input_shape: lists of 1 to 4 positive ints are the only valid ones.
bad_input_shape = st.one_of(
    st.sampled_from([[], [1] * 5, [0], [-1], [1, 0], [10**7], [1.5], [[1]], "1", 1, {}, None,
                     [Raw("NaN")], [Raw("Infinity")], [10**400], ["a"]]),
    st.lists(bad_size, min_size=1, max_size=4),
)
