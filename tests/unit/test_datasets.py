"""Tests of dlmodels.datasets: every registered dataset, option validation and determinism."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

from dlmodels.datasets import DATASETS, MAX_SEQUENCE_ELEMENTS, Dataset, describe, load_builtin
from dlmodels.registry import UnknownNameError

# name -> (x shape, x dtype, y shape, task, num_classes) with default options.
# Kept in sync with the registry by test_every_dataset_has_an_expectation.
EXPECTED: dict[str, tuple[tuple[int, ...], type, tuple[int, ...], str, int | None]] = {
    "xor": ((4, 2), np.float32, (4,), "binary", 2),
    "heights_weights": ((10, 1), np.float32, (10, 1), "regression", None),
    "iris": ((150, 4), np.float32, (150,), "multiclass", 3),
    "wine": ((178, 13), np.float32, (178,), "multiclass", 3),
    "breast_cancer": ((569, 30), np.float32, (569,), "binary", 2),
    "diabetes": ((442, 10), np.float32, (442, 1), "regression", None),
    "digits": ((1797, 1, 8, 8), np.float32, (1797,), "multiclass", 10),
    "parity": ((1000, 8), np.int64, (1000,), "binary", 2),
    "sequence_sum": ((1000, 8, 1), np.float32, (1000, 1), "regression", None),
    "majority": ((1000, 8), np.int64, (1000,), "multiclass", 4),
}

SEEDED = ["parity", "sequence_sum", "majority"]


def test_every_dataset_has_an_expectation() -> None:
    assert sorted(EXPECTED) == DATASETS.names()


@pytest.mark.parametrize("name", DATASETS.names())
def test_shapes_dtypes_and_classes(name: str) -> None:
    x_shape, x_dtype, y_shape, task, num_classes = EXPECTED[name]
    ds = load_builtin(name)
    assert ds.x.shape == x_shape and ds.x.dtype == x_dtype
    assert ds.y.shape == y_shape
    assert ds.task == task and ds.num_classes == num_classes
    assert ds.description


@pytest.mark.parametrize("name", DATASETS.names())
def test_targets_fit_the_task(name: str) -> None:
    ds = load_builtin(name)
    if ds.task == "regression":
        assert ds.y.dtype == np.float32 and ds.y.ndim == 2
    else:
        assert ds.num_classes is not None
        assert ds.y.dtype == np.int64 and ds.y.ndim == 1
        assert set(np.unique(ds.y)) == set(range(ds.num_classes))  # every class occurs
    assert np.isfinite(ds.x).all() and np.isfinite(ds.y).all()


def test_fixed_tables() -> None:
    xor = load_builtin("xor")
    np.testing.assert_array_equal(xor.x, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(xor.y, [0, 1, 1, 0])
    hw = load_builtin("heights_weights")
    assert hw.x[0, 0] == 87 and hw.y[0, 0] == 187 and hw.x[-1, 0] == 69 and hw.y[-1, 0] == 174


def test_digits_flatten_and_pixel_range() -> None:
    ds = load_builtin("digits", {"flatten": True})
    assert ds.x.shape == (1797, 64)
    assert ds.x.min() == 0 and ds.x.max() == 16
    np.testing.assert_array_equal(ds.x, load_builtin("digits").x.reshape(-1, 64))


@pytest.mark.parametrize("name", SEEDED)
def test_same_seed_same_data_other_seed_other_data(name: str) -> None:
    a, b = load_builtin(name, {"seed": 3}), load_builtin(name, {"seed": 3})
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.x, load_builtin(name, {"seed": 4}).x)


@pytest.mark.parametrize("name", SEEDED)
@pytest.mark.parametrize("tokens", [True, False])
def test_sequence_options(name: str, tokens: bool) -> None:
    ds = load_builtin(name, {"n": 5, "length": 3, "tokens": tokens})
    assert len(ds.x) == len(ds.y) == 5
    if tokens:
        assert ds.x.shape == (5, 3) and ds.x.dtype == np.int64
    else:
        assert ds.x.shape == (5, 3, 1) and ds.x.dtype == np.float32


def test_parity_labels_are_sum_mod_2() -> None:
    ds = load_builtin("parity", {"n": 500, "length": 13, "seed": 7})
    assert set(np.unique(ds.x)) == {0, 1}
    np.testing.assert_array_equal(ds.y, ds.x.sum(axis=1) % 2)
    floats = load_builtin("parity", {"n": 500, "length": 13, "seed": 7, "tokens": False})
    np.testing.assert_array_equal(floats.x[..., 0], ds.x)


def test_sequence_sum_targets() -> None:
    floats = load_builtin("sequence_sum", {"seed": 1})
    assert floats.x.min() >= 0 and floats.x.max() < 1
    np.testing.assert_allclose(floats.y[:, 0], floats.x.sum(axis=(1, 2)), rtol=1e-5)
    digits = load_builtin("sequence_sum", {"seed": 1, "tokens": True})
    assert digits.x.dtype == np.int64 and digits.x.min() >= 0 and digits.x.max() <= 9
    np.testing.assert_array_equal(digits.y[:, 0], digits.x.sum(axis=1))


@pytest.mark.parametrize("length", [2, 3, 8, 31])
def test_majority_label_is_the_unique_most_frequent_id(length: int) -> None:
    ds = load_builtin("majority", {"n": 2000, "length": length, "vocab": 5})
    counts = np.stack([(ds.x == v).sum(axis=1) for v in range(5)], axis=1)
    np.testing.assert_array_equal(ds.y, counts.argmax(axis=1))
    top2 = np.sort(counts, axis=1)[:, -2:]
    assert (top2[:, 1] > top2[:, 0]).all()  # no ties
    assert np.bincount(ds.y).min() > 300  # classes roughly balanced (400 each on average)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as err:
        load_builtin("mnistt")
    message = str(err.value)
    assert "mnistt" in message
    for name in DATASETS.names():
        assert name in message


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("parity", {"bogus": 1}),
        ("xor", {"seed": 0}),
        ("parity", {"n": 0}),
        ("parity", {"n": 100_001}),
        ("sequence_sum", {"length": 1}),
        ("majority", {"length": 513}),
        ("majority", {"vocab": 1}),
        ("parity", {"seed": -1}),
        ("parity", {"n": 100_000, "length": 512}),  # each in range, together too large
        ("digits", {"flatten": "maybe"}),
    ],
)
def test_bad_options_raise_validation_error(name: str, options: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        load_builtin(name, options)


def test_largest_allowed_request_is_bounded() -> None:
    ds = load_builtin("parity", {"n": MAX_SEQUENCE_ELEMENTS // 512, "length": 512})
    assert ds.x.nbytes <= 8 * MAX_SEQUENCE_ELEMENTS


def test_describe_lists_every_dataset_with_options_schema() -> None:
    entries = describe()
    assert [e["name"] for e in entries] == DATASETS.names()
    for entry in entries:
        assert entry["description"]
        assert entry["options"]["type"] == "object"
    parity = next(e for e in entries if e["name"] == "parity")
    assert set(parity["options"]["properties"]) == {"n", "length", "seed", "tokens"}
    assert parity["options"]["properties"]["n"]["maximum"] == 100_000


def test_dataset_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="rows"):
        Dataset(np.zeros((3, 1), np.float32), np.zeros(2, np.int64), "binary", 2, "bad")


def test_sklearn_is_not_imported_at_module_import() -> None:
    import subprocess
    import sys

    code = "import sys, dlmodels.datasets; assert 'sklearn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
