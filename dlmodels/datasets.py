"""Built-in datasets, the ``keras.datasets`` of dlmodels.

Every dataset is registered in ``DATASETS`` with a pydantic options model, so a request names a
dataset and passes options that are validated (and bounded) before anything is generated.
All datasets are deterministic: small fixed tables, tables bundled with scikit-learn, or synthetic
sequences drawn from a seeded generator. Nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dlmodels.bounds import MAX_SEED
from dlmodels.registry import Registry

Task = Literal["regression", "binary", "multiclass"]


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays with == is elementwise, not a bool
class Dataset:
    """Inputs and targets of one dataset, in the dtypes the trainer expects.

    x: float32 ``[N, *input_shape]``, or int64 ``[N, T]`` token ids.
    y: int64 labels ``[N]`` for classification, float32 ``[N, k]`` for regression.
    """

    x: np.ndarray
    y: np.ndarray
    task: Task
    num_classes: int | None  # None for regression
    description: str

    def __post_init__(self) -> None:
        # Catch a malformed loader here rather than as a confusing error deep in training.
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")
        if (self.task == "regression") != (self.num_classes is None):
            raise ValueError("num_classes must be None exactly when the task is regression")


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    options: type[BaseModel]
    load: Callable[[BaseModel], Dataset]
    description: str


DATASETS: Registry[BuiltinDataset] = Registry("dataset")


def load_builtin(name: str, options: dict[str, Any] | None = None) -> Dataset:
    """Load a registered dataset.

    Raises ``registry.UnknownNameError`` for an unknown name and ``pydantic.ValidationError``
    for options that are unknown or out of range.
    """
    entry = DATASETS.get(name)
    return entry.load(entry.options.model_validate(options or {}))


def describe() -> list[dict[str, Any]]:
    """Name, description and options JSON schema of every dataset, for the docs and the API."""
    return [
        {"name": name, "description": d.description, "options": d.options.model_json_schema()}
        for name, d in DATASETS.items()
    ]


# --- registration ----------------------------------------------------------------------------

OptionsT = TypeVar("OptionsT", bound=BaseModel)


def _builtin(
    name: str, options: type[OptionsT], description: str
) -> Callable[[Callable[[OptionsT], Dataset]], Callable[[OptionsT], Dataset]]:
    """Decorator registering ``load(options) -> Dataset`` under ``name``.

    Each loader is typed with its own options class; the registry stores a wrapper taking any
    BaseModel so that all entries share one type.
    """

    def add(load: Callable[[OptionsT], Dataset]) -> Callable[[OptionsT], Dataset]:
        def load_any(opts: BaseModel) -> Dataset:
            if not isinstance(opts, options):
                raise TypeError(f"dataset {name!r} expects {options.__name__}, got {opts!r}")
            return load(opts)

        DATASETS.add(name, BuiltinDataset(name, options, load_any, description))
        return load

    return add


class NoOptions(BaseModel):
    """Options of a dataset that has none; still forbids unknown fields."""

    model_config = ConfigDict(extra="forbid")


# --- tiny fixed datasets -----------------------------------------------------------------------


@_builtin("xor", NoOptions, "The four XOR points; binary, not linearly separable.")
def _xor(_: NoOptions) -> Dataset:
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0], dtype=np.int64)
    return Dataset(x, y, "binary", 2, "XOR of two bits")


_WEIGHTS = [87, 81, 82, 92, 90, 61, 86, 66, 69, 69]
_HEIGHTS = [187, 174, 179, 192, 188, 160, 179, 168, 168, 174]


@_builtin("heights_weights", NoOptions, "Height (cm) from weight (kg) of 10 people; regression.")
def _heights_weights(_: NoOptions) -> Dataset:
    x = np.array(_WEIGHTS, dtype=np.float32).reshape(-1, 1)
    y = np.array(_HEIGHTS, dtype=np.float32).reshape(-1, 1)
    return Dataset(x, y, "regression", None, "height (cm) from weight (kg)")


# --- tables bundled with scikit-learn -----------------------------------------------------------
# scikit-learn is an optional data source, so it is imported only when one of these is loaded.


def _sklearn_bunch(loader_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(data, target) of a ``sklearn.datasets.load_*`` table; these ship with sklearn."""
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader_name)()
    return np.asarray(bunch.data), np.asarray(bunch.target)


def _sklearn_classification(loader_name: str, description: str) -> Dataset:
    data, target = _sklearn_bunch(loader_name)
    num_classes = int(target.max()) + 1
    task: Task = "binary" if num_classes == 2 else "multiclass"
    return Dataset(data.astype(np.float32), target.astype(np.int64), task, num_classes, description)


@_builtin("iris", NoOptions, "Iris flowers: 150 x 4 measurements, 3 species (scikit-learn).")
def _iris(_: NoOptions) -> Dataset:
    return _sklearn_classification("load_iris", "iris species from 4 measurements")


@_builtin("wine", NoOptions, "Wines: 178 x 13 chemical analyses, 3 cultivars (scikit-learn).")
def _wine(_: NoOptions) -> Dataset:
    return _sklearn_classification("load_wine", "wine cultivar from 13 chemical analyses")


@_builtin(
    "breast_cancer",
    NoOptions,
    "Breast cancer: 569 x 30 tumour features, malignant (0) or benign (1) (scikit-learn).",
)
def _breast_cancer(_: NoOptions) -> Dataset:
    return _sklearn_classification("load_breast_cancer", "tumour malignant/benign from 30 features")


@_builtin(
    "diabetes",
    NoOptions,
    "Diabetes: 442 x 10 scaled patient features, disease progression after a year; regression.",
)
def _diabetes(_: NoOptions) -> Dataset:
    data, target = _sklearn_bunch("load_diabetes")
    y = target.astype(np.float32).reshape(-1, 1)
    return Dataset(data.astype(np.float32), y, "regression", None, "diabetes progression")


class DigitsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flatten: bool = Field(
        default=False, description="Give [N, 64] vectors instead of [N, 1, 8, 8] images."
    )


@_builtin(
    "digits",
    DigitsOptions,
    "Handwritten digits: 1797 8x8 images, pixel values 0..16, 10 classes (scikit-learn).",
)
def _digits(opts: DigitsOptions) -> Dataset:
    ds = _sklearn_classification("load_digits", "handwritten digit from an 8x8 image")
    # Channels-first [N, C, H, W], as torch convolutions expect.
    shape = (-1, 64) if opts.flatten else (-1, 1, 8, 8)
    return Dataset(ds.x.reshape(shape), ds.y, ds.task, ds.num_classes, ds.description)


# --- seeded synthetic sequences -----------------------------------------------------------------
# Small tasks for RNNs and Transformers. With ``tokens`` x is int64 ids [N, T] (for an Embedding);
# without, the same values as float32 features [N, T, 1].

MAX_SEQUENCE_ELEMENTS = 2_000_000
"""Cap on n * length: each bound alone allows 51M elements (400 MB as int64); this keeps any
request to a few tens of MB."""


class SequenceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=1000, ge=1, le=100_000, description="Number of sequences.")
    length: int = Field(default=8, ge=2, le=512, description="Length T of each sequence.")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Random seed.")
    tokens: bool = Field(
        default=True, description="x as int64 token ids [N, T]; false: float32 [N, T, 1]."
    )

    @model_validator(mode="after")
    def _bounded_size(self) -> SequenceOptions:
        if self.n * self.length > MAX_SEQUENCE_ELEMENTS:
            raise ValueError(f"n * length = {self.n * self.length} exceeds {MAX_SEQUENCE_ELEMENTS}")
        return self


def _sequence_x(ids: np.ndarray, tokens: bool) -> np.ndarray:
    """Token ids as they are, or as a float32 feature axis for models without an Embedding."""
    return ids.astype(np.int64) if tokens else ids.astype(np.float32)[..., None]


@_builtin(
    "parity",
    SequenceOptions,
    "Random bit sequences; label 1 when the number of ones is odd. Binary.",
)
def _parity(opts: SequenceOptions) -> Dataset:
    bits = np.random.default_rng(opts.seed).integers(0, 2, size=(opts.n, opts.length))
    y = (bits.sum(axis=1) % 2).astype(np.int64)
    return Dataset(_sequence_x(bits, opts.tokens), y, "binary", 2, "parity of a bit sequence")


class SequenceSumOptions(SequenceOptions):
    tokens: bool = Field(
        default=False,
        description="x as int64 digits 0..9 [N, T]; false: floats in [0, 1) as [N, T, 1].",
    )


@_builtin(
    "sequence_sum",
    SequenceSumOptions,
    "Sum of a sequence: floats in [0, 1), or digits 0..9 with tokens; regression.",
)
def _sequence_sum(opts: SequenceSumOptions) -> Dataset:
    rng = np.random.default_rng(opts.seed)
    shape = (opts.n, opts.length)
    if opts.tokens:
        x: np.ndarray = rng.integers(0, 10, size=shape, dtype=np.int64)
    else:
        x = rng.random(shape, dtype=np.float32)[..., None]
    # Sum in float64 then cast, so the target does not carry float32 accumulation error.
    y = x.reshape(opts.n, -1).sum(axis=1, dtype=np.float64).astype(np.float32)[:, None]
    return Dataset(x, y, "regression", None, "sum of the sequence")


class MajorityOptions(SequenceOptions):
    vocab: int = Field(default=4, ge=2, le=16, description="Number of token ids (= classes).")


@_builtin(
    "majority",
    MajorityOptions,
    "Sequences of ids 0..vocab-1; the label is the id occurring most often (always unique).",
)
def _majority(opts: MajorityOptions) -> Dataset:
    rng = np.random.default_rng(opts.seed)
    y = rng.integers(0, opts.vocab, size=opts.n, dtype=np.int64)
    ids = rng.integers(0, opts.vocab, size=(opts.n, opts.length), dtype=np.int64)
    ids = _make_majority(ids, y, opts.vocab, rng)
    return Dataset(_sequence_x(ids, opts.tokens), y, "multiclass", opts.vocab, "most frequent id")


def _make_majority(
    ids: np.ndarray, y: np.ndarray, vocab: int, rng: np.random.Generator
) -> np.ndarray:
    """Overwrite random positions of each row with its label until the label strictly wins.

    Drawing the label first keeps classes balanced, and a strict winner means no tie-break rule
    the model would have to learn. Row i needs ``deficit = max other count - count of y + 1``
    more copies of y; it gets them at the ``deficit`` lowest-ranked of its other positions.
    """
    counts = np.stack([(ids == v).sum(axis=1) for v in range(vocab)], axis=1)
    own = counts[np.arange(len(y)), y]
    counts[np.arange(len(y)), y] = -1
    deficit = np.maximum(counts.max(axis=1) - own + 1, 0)
    keys = rng.random(ids.shape)
    keys[ids == y[:, None]] = np.inf  # never pick a position that already holds the label
    rank = keys.argsort(axis=1).argsort(axis=1)
    return np.where(rank < deficit[:, None], y[:, None], ids)
