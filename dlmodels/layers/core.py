"""Dense, activation, dropout, flatten and the normalisation layers."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from torch import nn

from dlmodels.activations import DEFAULT_NEGATIVE_SLOPE, make_activation
from dlmodels.bounds import MAX_EPS, MAX_UNITS
from dlmodels.errors import SpecError
from dlmodels.layers.base import LayerSpec, Shape, need_rank, register_layer

ActivationName = Literal[
    "relu", "sigmoid", "tanh", "leaky_relu", "softmax", "gelu", "elu", "selu", "silu",
    "softplus", "identity",
]


def with_activation(module: nn.Module, activation: str | None) -> nn.Module:
    if activation is None:
        return module
    return nn.Sequential(module, make_activation(activation))


@register_layer
class Dense(LayerSpec):
    """Fully connected, y = x W^T + b, over the last axis (so it maps each step of a sequence)."""

    type: Literal["dense"]
    units: int = Field(gt=0, le=MAX_UNITS, examples=[64])
    activation: ActivationName | None = Field(None, examples=["relu"])
    use_bias: bool = True

    def infer(self, in_shape: Shape) -> Shape:
        if len(in_shape) == 0:
            raise SpecError("dense needs at least a 1-D input but got a scalar")
        if len(in_shape) > 2:
            raise SpecError(
                f"dense takes [features] or [steps, features] but got shape {list(in_shape)}; "
                "add a `flatten` or `global_avgpool` layer before it"
            )
        return (*in_shape[:-1], self.units)

    def build(self, in_shape: Shape) -> nn.Module:
        return with_activation(nn.Linear(in_shape[-1], self.units, bias=self.use_bias),
                               self.activation)

    def final_activation(self) -> str | None:
        return self.activation

    def without_final_activation(self) -> LayerSpec:
        return self.model_copy(update={"activation": None})


@register_layer
class Activation(LayerSpec):
    type: Literal["activation"]
    name: ActivationName = Field(examples=["relu"])
    negative_slope: float = Field(DEFAULT_NEGATIVE_SLOPE, ge=0, le=1,
                                  description="Only for leaky_relu.")

    def infer(self, in_shape: Shape) -> Shape:
        return in_shape

    def build(self, in_shape: Shape) -> nn.Module:
        return make_activation(self.name, self.negative_slope)

    def final_activation(self) -> str | None:
        return self.name

    def without_final_activation(self) -> LayerSpec:
        return self.model_copy(update={"name": "identity"})


@register_layer
class Dropout(LayerSpec):
    type: Literal["dropout"]
    rate: float = Field(0.5, ge=0, lt=1, examples=[0.2])

    def infer(self, in_shape: Shape) -> Shape:
        return in_shape

    def build(self, in_shape: Shape) -> nn.Module:
        return nn.Dropout(self.rate)


@register_layer
class Flatten(LayerSpec):
    type: Literal["flatten"]

    def infer(self, in_shape: Shape) -> Shape:
        return (math.prod(in_shape),)

    def build(self, in_shape: Shape) -> nn.Module:
        return nn.Flatten()


@register_layer
class BatchNorm(LayerSpec):
    """Normalises over the batch per channel: [C], [C, L] or [C, H, W] inputs."""

    type: Literal["batchnorm"]
    momentum: float = Field(0.1, gt=0, le=1)
    eps: float = Field(1e-5, gt=0, le=MAX_EPS)

    def infer(self, in_shape: Shape) -> Shape:
        need_rank(in_shape, (1, 2, 3), "[C], [C, L] or [C, H, W]", "batchnorm")
        return in_shape

    def build(self, in_shape: Shape) -> nn.Module:
        norm = nn.BatchNorm2d if len(in_shape) == 3 else nn.BatchNorm1d
        return norm(in_shape[0], eps=self.eps, momentum=self.momentum)


@register_layer
class LayerNorm(LayerSpec):
    """Normalises each sample over its last axis (features), as Transformers do."""

    type: Literal["layernorm"]
    eps: float = Field(1e-5, gt=0, le=MAX_EPS)

    def infer(self, in_shape: Shape) -> Shape:
        need_rank(in_shape, (1, 2, 3), "features last", "layernorm")
        return in_shape

    def build(self, in_shape: Shape) -> nn.Module:
        return nn.LayerNorm(in_shape[-1], eps=self.eps)
