"""The layer base class and registry.

A layer type is one pydantic class registered under its `type` name. The class itself knows its
output shape (`infer`) and how to become an `nn.Module` (`build`); validation, the summary, the
builder and the tests all go through the registry, so a new type cannot be half-added.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from dlmodels.bounds import MAX_SAMPLE_ELEMENTS
from dlmodels.errors import SpecError
from dlmodels.registry import Registry

Shape = tuple[int, ...]

WeightInit = Literal[
    "default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "normal"
]
BiasInit = Literal["default", "zeros"]


class InitSpec(BaseModel):
    """How to initialise weights (matrices and kernels) and biases; `default` keeps PyTorch's."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    weights: WeightInit = Field("default", examples=["xavier_uniform"])
    bias: BiasInit = Field("default", examples=["zeros"])


class LayerSpec(BaseModel):
    """Fields every layer has. Subclasses set `type` as a Literal and implement infer/build."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    type: str
    init: InitSpec | None = Field(None, description="Overrides the model's `init` for this layer.")
    trainable: bool = Field(True, description="False freezes this layer's parameters.")

    # Layers that take integer token ids (embedding) say so; every other layer needs floats.
    accepts_int: ClassVar[bool] = False

    def infer(self, in_shape: Shape) -> Shape:
        """Output shape (without the batch axis) for `in_shape`, or SpecError saying why not."""
        raise NotImplementedError

    def build(self, in_shape: Shape) -> nn.Module:
        raise NotImplementedError

    def build_nested(self, in_shape: Shape, init: InitSpec | None) -> nn.Module:
        """`build`, for layers with nested layers that must inherit the effective init."""
        return self.build(in_shape)

    def final_activation(self) -> str | None:
        """The activation this layer ends with, if any (for the fused softmax/sigmoid losses)."""
        return None

    def without_final_activation(self) -> LayerSpec:
        return self

    def children_specs(self) -> dict[str, list[LayerSpec]]:
        """Nested layer lists (only `residual` has them), keyed by field name."""
        return {}


LAYERS: Registry[type[LayerSpec]] = Registry("layer type")


def register_layer(cls: type[LayerSpec]) -> type[LayerSpec]:
    """Class decorator: registers a layer class under the Literal value of its `type` field."""
    annotation: Any = cls.model_fields["type"].annotation
    (name,) = annotation.__args__
    LAYERS.add(name, cls)
    return cls


def need_rank(shape: Shape, rank: int | tuple[int, ...], what: str, layer: str) -> None:
    ranks = (rank,) if isinstance(rank, int) else rank
    if len(shape) not in ranks:
        wanted = " or ".join(f"{r}-D" for r in ranks)
        raise SpecError(
            f"{layer} needs a {wanted} input ({what}) but got shape {list(shape)}"
        )


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """PyTorch's output length for a convolution or pool along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def apply_init(module: nn.Module, init: InitSpec | None) -> None:
    """Re-initialise matrices/kernels (any `weight*` of 2+ dims) and biases of `module`."""
    if init is None:
        return
    weight_init = {
        "xavier_uniform": nn.init.xavier_uniform_,
        "xavier_normal": nn.init.xavier_normal_,
        "kaiming_uniform": lambda t: nn.init.kaiming_uniform_(t, nonlinearity="relu"),
        "kaiming_normal": lambda t: nn.init.kaiming_normal_(t, nonlinearity="relu"),
        "normal": lambda t: nn.init.normal_(t, std=0.05),  # Keras' RandomNormal default
    }.get(init.weights)
    for name, param in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        # `weight`, `weight_ih_l0`, and attention's `in_proj_weight` (likewise for biases).
        is_weight = leaf.startswith("weight") or leaf.endswith("_weight")
        is_bias = leaf.startswith("bias") or leaf.endswith("_bias")
        # Norm layers' 1-D scales are weights too, but re-drawing them would break the norm.
        if weight_init is not None and is_weight and param.dim() >= 2:
            weight_init(param.data)
        elif init.bias == "zeros" and is_bias:
            nn.init.zeros_(param.data)


def make_layer(spec: LayerSpec, in_shape: Shape, init: InitSpec | None) -> nn.Module:
    """Build one layer with its effective init (its own, else the model's) and trainability."""
    module = spec.build_nested(in_shape, spec.init or init)
    apply_init(module, spec.init or init)
    if not spec.trainable:
        module.requires_grad_(False)
    return module


def check_sample_size(shape: Shape, what: str) -> None:
    """SpecError when one sample of `shape` has more elements than any layer may hold."""
    elements = math.prod(shape)
    if elements > MAX_SAMPLE_ELEMENTS:
        raise SpecError(f"{what} {list(shape)} holds {elements:,} elements per sample; the "
                        f"limit is {MAX_SAMPLE_ELEMENTS:,}")


def infer_layers(layers: list[LayerSpec], in_shape: Shape, loc: tuple[str | int, ...]) -> Shape:
    """Output shape of a chain of layers; an error's loc points at the failing layer.

    Every output is bounded (`MAX_SAMPLE_ELEMENTS`), so a layer whose padding, units or width
    blows the shape up is refused here, before any size is multiplied further or built.
    """
    shape = in_shape
    for index, layer in enumerate(layers):
        try:
            shape = layer.infer(shape)
            check_sample_size(shape, f"{layer.type}: the output shape")
        except SpecError as error:
            raise error.prefixed(*loc, index) from None
    return shape


def make_layers(layers: list[LayerSpec], in_shape: Shape, init: InitSpec | None) -> nn.Sequential:
    modules, shape = [], in_shape
    for layer in layers:
        modules.append(make_layer(layer, shape, init))
        shape = layer.infer(shape)
    return nn.Sequential(*modules)
