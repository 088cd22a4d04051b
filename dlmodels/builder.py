"""Spec -> `nn.Module`, and the Keras-like summary, both read from the layer registry."""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, Field
from torch import nn

from dlmodels.activations import make_activation
from dlmodels.errors import SpecError
from dlmodels.layers import LayerSpec, Shape, infer_layers, make_layer
from dlmodels.losses import LOSSES
from dlmodels.spec import ModelSpec

BYTES_PER_FLOAT = 4


class SpecModel(nn.Module):
    """The network a spec describes, with the input standardisation and the output head.

    `logits()` is what training optimises; `forward()` adds the head (the softmax or sigmoid
    fused into the loss during training), so predictions are probabilities.
    """

    input_mean: torch.Tensor  # buffers, present when standardize is on
    input_std: torch.Tensor

    def __init__(self, layers: nn.Sequential, head: nn.Module, input_shape: Shape,
                 standardize: bool) -> None:
        super().__init__()
        self.layers = layers
        self.head = head
        self.standardize = standardize
        if standardize:
            # Buffers travel with state_dict(), so predict applies the training set's scaling.
            self.register_buffer("input_mean", torch.zeros(input_shape))
            self.register_buffer("input_std", torch.ones(input_shape))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.standardize:
            x = (x - self.input_mean) / self.input_std
        out: torch.Tensor = self.layers(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.logits(x))
        return out


def fused_head(spec: ModelSpec, loss: str | None) -> str | None:
    """The final activation that the loss trains fused (softmax+cross_entropy, sigmoid+bce)."""
    if loss is None:
        return None
    final = spec.layers[-1].final_activation()
    return final if final is not None and final == LOSSES.get(loss).fused_activation else None


def build_model(spec: ModelSpec, *, loss: str | None = None, standardize: bool = False,
                device: torch.device | str = "cpu") -> SpecModel:
    """Build the model. Seed torch beforehand for reproducible initial weights."""
    head_name = fused_head(spec, loss)
    layer_specs: list[LayerSpec] = list(spec.layers)
    if head_name is not None:
        layer_specs[-1] = layer_specs[-1].without_final_activation()
    modules, shape = [], tuple(spec.input_shape)
    with torch.device(device):
        for layer in layer_specs:
            modules.append(make_layer(layer, shape, spec.init))
            shape = layer.infer(shape)
        head = make_activation(head_name) if head_name else nn.Identity()
        return SpecModel(nn.Sequential(*modules), head, tuple(spec.input_shape), standardize)


class LayerSummary(BaseModel):
    index: int
    type: str
    output_shape: list[int]
    params: int


class Summary(BaseModel):
    input_shape: list[int]
    layers: list[LayerSummary]
    total_params: int
    trainable_params: int
    param_bytes: int
    activation_bytes_per_sample: int
    processes: int = Field(1, description="Processes that train the job (data-parallel when "
                           "more than one).")

    def to_text(self) -> str:
        """The table Keras' `model.summary()` prints."""
        rows = [("#", "Layer (type)", "Output Shape", "Param #")]
        rows.append(("", "input", str(self.input_shape), ""))
        rows += [(str(r.index), r.type, str(r.output_shape), f"{r.params:,}") for r in self.layers]
        widths = [max(len(row[i]) for row in rows) + 2 for i in range(4)]
        line = "-" * sum(widths)
        text = [line, "".join(c.ljust(w) for c, w in zip(rows[0], widths, strict=True)), line]
        text += ["".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows[1:]]
        text += [line, f"Total params: {self.total_params:,}",
                 f"Trainable params: {self.trainable_params:,}",
                 f"Non-trainable params: {self.total_params - self.trainable_params:,}",
                 f"Parameter memory: {_mib(self.param_bytes)}",
                 f"Activation memory per sample: {_mib(self.activation_bytes_per_sample)}",
                 f"Processes: {self.processes}", line]
        return "\n".join(text)


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def summarize(spec: ModelSpec) -> Summary:
    """Shapes and parameter counts without allocating the model.

    Each layer is built on PyTorch's `meta` device (shapes only, no storage), so the counts are
    exactly what torch counts for the real module, whatever the layer type.
    """
    infer_layers(list(spec.layers), tuple(spec.input_shape), ("model", "layers"))
    rows, shape, total, trainable, activations = [], tuple(spec.input_shape), 0, 0, 0
    for index, layer in enumerate(spec.layers):
        try:
            module = _meta_layer(layer, shape, spec)
        except (TypeError, RuntimeError, OverflowError, ValueError) as error:
            raise SpecError(f"{layer.type} cannot be built for input {list(shape)}: "
                            f"{type(error).__name__}: {str(error)[:200]}",
                            ("model", "layers", index)) from None
        shape = layer.infer(shape)
        params = sum(p.numel() for p in module.parameters())
        total += params
        trainable += sum(p.numel() for p in module.parameters() if p.requires_grad)
        activations += math.prod(shape) * BYTES_PER_FLOAT
        rows.append(LayerSummary(index=index, type=layer.type, output_shape=list(shape),
                                 params=params))
    return Summary(input_shape=list(spec.input_shape), layers=rows, total_params=total,
                   trainable_params=trainable, param_bytes=total * BYTES_PER_FLOAT,
                   activation_bytes_per_sample=activations)


def _meta_layer(layer: LayerSpec, shape: Shape, spec: ModelSpec) -> nn.Module:
    with torch.device("meta"):
        return make_layer(layer, shape, spec.init)
