"""The spec language: model, training and data, as pydantic models (unknown fields rejected).

Parsing checks each field on its own; `dlmodels.validate` then checks that the parts fit
together (shapes, loss vs outputs, labels vs data) before anything is built or queued.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from dlmodels.bounds import (
    MAX_AXIS,
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_INPUT_RANK,
    MAX_LAYERS,
    MAX_MIN_DELTA,
    MAX_NAME_LENGTH,
    MAX_NESTING,
    MAX_PROCESSES,
    MAX_SEED,
)
from dlmodels.layers import AnyLayer, InitSpec, LayerSpec
from dlmodels.layers.base import check_sample_size
from dlmodels.optimizers import OptimizerSpec, SchedulerSpec

LossName = Literal["mse", "mae", "huber", "bce", "cross_entropy"]
MetricName = Literal["mse", "mae", "r2", "accuracy", "precision", "recall", "f1"]

HEIGHTS_LAYERS = [
    {"type": "dense", "units": 64, "activation": "relu"},
    {"type": "dense", "units": 64, "activation": "relu"},
    {"type": "dense", "units": 1},
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _count_layers(layers: object, depth: int = 0) -> int:
    """Layers in a `layers` list (raw or parsed), nested ones included; `depth` is how many
    residual blocks the list is inside.

    Stops counting once past MAX_LAYERS, so a huge tree costs no more than a legal one.
    """
    if not isinstance(layers, list):
        return 0
    if depth > MAX_NESTING:
        raise ValueError(f"residual blocks are nested more than {MAX_NESTING} deep")
    count = 0
    for layer in layers:
        count += 1
        if isinstance(layer, dict):
            children: list[object] = [layer.get("layers"), layer.get("shortcut")]
        elif isinstance(layer, LayerSpec):
            children = list(layer.children_specs().values())
        else:
            children = []
        count += sum(_count_layers(child, depth + 1) for child in children)
        if count > MAX_LAYERS:
            break
    return count


class ModelSpec(Strict):
    input_shape: list[Annotated[int, Field(gt=0, le=MAX_AXIS)]] = Field(
        min_length=1, max_length=MAX_INPUT_RANK, examples=[[1]],
        description="One sample's shape, channels first: [features], [C, H, W], [T, F], or [T] "
                    "token ids with input_dtype int.")
    input_dtype: Literal["float", "int"] = Field(
        "float", description="`int` for token ids fed to an `embedding` layer.")
    init: InitSpec | None = Field(None, description="Initialisation for every layer.")
    layers: list[AnyLayer] = Field(min_length=1, max_length=MAX_LAYERS,
                                   examples=[HEIGHTS_LAYERS])

    @model_validator(mode="before")
    @classmethod
    def _bounded_layer_tree(cls, data: Any) -> Any:
        """At most MAX_LAYERS layers in all, residual bodies and shortcuts included (each list
        alone is bounded too), checked on the raw input before any layer is parsed."""
        if isinstance(data, dict) and _count_layers(data.get("layers")) > MAX_LAYERS:
            raise ValueError(f"the model has more than {MAX_LAYERS} layers, counting the "
                             "ones inside residual blocks")
        return data

    @field_validator("input_shape")
    @classmethod
    def _bounded_sample(cls, shape: list[int]) -> list[int]:
        check_sample_size(tuple(shape), "input_shape")  # a SpecError is a ValueError
        return shape


class EarlyStopping(Strict):
    monitor: str = Field("val_loss", max_length=MAX_NAME_LENGTH, examples=["val_loss"])
    patience: int = Field(5, ge=0, le=MAX_EPOCHS)
    min_delta: float = Field(0.0, ge=0, le=MAX_MIN_DELTA)
    restore_best_weights: bool = False


class Distributed(Strict):
    processes: int = Field(1, ge=1, le=MAX_PROCESSES, examples=[2], description=(
        "Processes that train the job data-parallel (torch.distributed: gloo on CPU, NCCL on "
        "CUDA with one GPU per process); batch_size stays the global batch."))


class TrainingSpec(Strict):
    optimizer: OptimizerSpec = Field(examples=[{"type": "adam", "lr": 0.001}])
    loss: LossName = Field(examples=["mse"])
    metrics: list[MetricName] = Field(default_factory=list, examples=[["mae"]])
    epochs: int = Field(10, ge=1, le=MAX_EPOCHS, examples=[100])
    batch_size: int = Field(32, ge=1, le=MAX_BATCH_SIZE, examples=[10])
    shuffle: bool = True
    seed: int | None = Field(None, ge=0, le=MAX_SEED, examples=[0],
                             description="Fixes init, shuffling and the validation split.")
    validation_split: float = Field(0.0, ge=0, lt=1, examples=[0.2])
    standardize: bool = Field(False, description="z-score inputs with the training set's "
                              "mean and std, stored in the model so predict applies the same.")
    early_stopping: EarlyStopping | None = None
    lr_scheduler: SchedulerSpec | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: forward pass and loss under bfloat16 autocast (weights, "
        "optimizer state and metrics stay float32); faster on GPUs with bf16 (Ampere and newer) "
        "and on CPUs with AMX/AVX-512 BF16, usually slower elsewhere.")

    distributed: Distributed | None = Field(None, examples=[{"processes": 2}])

    @model_validator(mode="after")
    def _unique_metrics(self) -> TrainingSpec:
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError("metrics lists a name twice")
        return self

    @model_validator(mode="after")
    def _processes_fit_batch(self) -> TrainingSpec:
        if self.processes > self.batch_size:  # each rank needs a row of every batch
            raise ValueError(f"distributed.processes ({self.processes}) is larger than "
                             f"batch_size ({self.batch_size}): every process needs a row of "
                             "each batch")
        return self

    @property
    def processes(self) -> int:
        return self.distributed.processes if self.distributed is not None else 1


class InlineData(Strict):
    x: list[Any] = Field(min_length=1, examples=[[[87], [81]]],
                         description="Nested lists shaped [N, *input_shape].")
    y: list[Any] = Field(min_length=1, examples=[[[187], [174]]])


class BuiltinData(Strict):
    name: str = Field(max_length=MAX_NAME_LENGTH, examples=["iris"])
    options: dict[str, int | float | bool | str] = Field(default_factory=dict)


def _builtin_shorthand(value: object) -> object:
    """Accept `"builtin": "iris"` for `{"name": "iris"}`."""
    return {"name": value} if isinstance(value, str) else value


class DataSpec(Strict):
    inline: InlineData | None = None
    builtin: Annotated[BuiltinData | None, BeforeValidator(_builtin_shorthand)] = None
    dataset_id: str | None = Field(None, max_length=64)

    @model_validator(mode="after")
    def _exactly_one(self) -> DataSpec:
        given = [k for k in ("inline", "builtin", "dataset_id") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of inline, builtin, dataset_id "
                             f"(got {given or 'none'})")
        return self


class JobSpec(Strict):
    name: str | None = Field(None, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$",
                             examples=["heights"])
    model: ModelSpec
    training: TrainingSpec
    data: DataSpec
