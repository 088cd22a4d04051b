"""Every layer type, and `AnyLayer`: the tagged union of them that specs validate against.

Importing the modules registers their classes; the union is then made from the registry, so a
new layer type only needs its class (in one of these modules) and nothing here changes.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field

from dlmodels.layers import conv, core, residual, sequence
from dlmodels.layers.base import (
    LAYERS,
    InitSpec,
    LayerSpec,
    Shape,
    infer_layers,
    make_layer,
    make_layers,
)

_classes: Any = tuple(cls for _, cls in LAYERS.items())
AnyLayer = Annotated[Union[_classes], Field(discriminator="type")]  # noqa: UP007

# `residual` nests layers of any type, so its fields resolve only once the union exists.
residual.Residual.model_rebuild(_types_namespace={"AnyLayer": AnyLayer})

__all__ = [
    "LAYERS", "AnyLayer", "InitSpec", "LayerSpec", "Shape", "conv", "core", "infer_layers",
    "make_layer", "make_layers", "residual", "sequence",
]
