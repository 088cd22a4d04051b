"""Residual blocks: out = body(x) + shortcut(x), so a ResNet is written block by block."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field
from torch import nn

from dlmodels.bounds import MAX_LAYERS
from dlmodels.errors import SpecError
from dlmodels.layers.base import (
    InitSpec,
    LayerSpec,
    Shape,
    infer_layers,
    make_layers,
    register_layer,
)

if TYPE_CHECKING:
    AnyLayer = LayerSpec


class ResidualBlock(nn.Module):
    def __init__(self, body: nn.Module, shortcut: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


@register_layer
class Residual(LayerSpec):
    type: Literal["residual"]
    layers: list[AnyLayer] = Field(min_length=1, max_length=MAX_LAYERS, description="The body.")
    shortcut: list[AnyLayer] | None = Field(
        None, max_length=MAX_LAYERS, description="Layers on the skip path; identity when absent.")

    def infer(self, in_shape: Shape) -> Shape:
        out = infer_layers(self.layers, in_shape, ("layers",))
        skip = in_shape if self.shortcut is None else infer_layers(
            self.shortcut, in_shape, ("shortcut",))
        if out != skip:
            needs = "add a `shortcut`" if self.shortcut is None else "fix the shortcut"
            where = "input" if self.shortcut is None else "shortcut's output"
            raise SpecError(
                f"residual: the body turns {list(in_shape)} into {list(out)} but the {where} "
                f"is {list(skip)}; they must match to be added ({needs}, e.g. a 1x1 conv or a "
                "dense layer)", ("shortcut",) if self.shortcut is not None else ("layers",))
        return out

    def build(self, in_shape: Shape) -> nn.Module:
        return self.build_nested(in_shape, None)

    def build_nested(self, in_shape: Shape, init: InitSpec | None) -> nn.Module:
        body = make_layers(self.layers, in_shape, init)
        shortcut = nn.Identity() if self.shortcut is None else make_layers(
            self.shortcut, in_shape, init)
        return ResidualBlock(body, shortcut)

    def children_specs(self) -> dict[str, list[LayerSpec]]:
        return {"layers": list(self.layers), **({"shortcut": list(self.shortcut)}
                                                if self.shortcut else {})}
