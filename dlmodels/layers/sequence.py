"""Layers for sequences shaped [T, F] (steps, features), or [T] token ids for `embedding`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from dlmodels.bounds import (
    MAX_CHANNELS,
    MAX_HEADS,
    MAX_STACKED_LAYERS,
    MAX_UNITS,
    MAX_VOCABULARY,
)
from dlmodels.errors import SpecError
from dlmodels.layers.base import LayerSpec, Shape, need_rank, register_layer


@register_layer
class Embedding(LayerSpec):
    """Token ids [T] -> vectors [T, embedding_dim]; the model needs `input_dtype: int`."""

    type: Literal["embedding"]
    num_embeddings: int = Field(gt=0, le=MAX_VOCABULARY, examples=[1000])
    embedding_dim: int = Field(gt=0, le=MAX_CHANNELS, examples=[32])
    accepts_int: ClassVar[bool] = True

    def infer(self, in_shape: Shape) -> Shape:
        need_rank(in_shape, 1, "token ids [T]", "embedding")
        return (*in_shape, self.embedding_dim)

    def build(self, in_shape: Shape) -> nn.Module:
        return nn.Embedding(self.num_embeddings, self.embedding_dim)


class Recurrent(nn.Module):
    """Wraps nn.RNN/LSTM/GRU (batch first) and returns all steps or the last hidden state."""

    def __init__(self, rnn: nn.RNNBase, return_sequences: bool) -> None:
        super().__init__()
        self.rnn = rnn
        self.return_sequences = return_sequences
        self.directions = 2 if rnn.bidirectional else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, hidden = self.rnn(x)  # out: (B, T, D*H)
        if self.return_sequences:
            return out
        h_n = hidden[0] if isinstance(hidden, tuple) else hidden  # (L*D, B, H)
        # The top layer's final state in each direction (the backward one has read the whole
        # sequence from the end), concatenated like `out` is.
        return torch.cat(list(h_n[-self.directions:]), dim=-1)  # (B, D*H)


class _RecurrentSpec(LayerSpec):
    module: ClassVar[Callable[..., nn.RNNBase]]
    units: int = Field(gt=0, le=MAX_CHANNELS, examples=[32])
    num_layers: int = Field(1, ge=1, le=MAX_STACKED_LAYERS)
    bidirectional: bool = False
    return_sequences: bool = Field(False, description="True: [T, units]; false: [units].")
    dropout: float = Field(0.0, ge=0, lt=1, description="Between stacked layers.")

    def infer(self, in_shape: Shape) -> Shape:
        need_rank(in_shape, 2, "a sequence [T, F]", self.type)
        width = self.units * (2 if self.bidirectional else 1)
        return (in_shape[0], width) if self.return_sequences else (width,)

    def build(self, in_shape: Shape) -> nn.Module:
        rnn = self.module(in_shape[-1], self.units, num_layers=self.num_layers, batch_first=True,
                          bidirectional=self.bidirectional,
                          dropout=self.dropout if self.num_layers > 1 else 0.0)
        return Recurrent(rnn, self.return_sequences)


@register_layer
class RNN(_RecurrentSpec):
    type: Literal["rnn"]
    module = nn.RNN


@register_layer
class LSTM(_RecurrentSpec):
    type: Literal["lstm"]
    module = nn.LSTM


@register_layer
class GRU(_RecurrentSpec):
    type: Literal["gru"]
    module = nn.GRU


@register_layer
class TransformerEncoder(LayerSpec):
    """PyTorch's encoder stack over [T, D]; the model width D is the input's last axis."""

    type: Literal["transformer_encoder"]
    num_heads: int = Field(gt=0, le=MAX_HEADS, examples=[4])
    dim_feedforward: int = Field(gt=0, le=MAX_UNITS, examples=[128])
    num_layers: int = Field(1, ge=1, le=MAX_STACKED_LAYERS)
    dropout: float = Field(0.1, ge=0, lt=1)
    activation: Literal["relu", "gelu"] = "relu"
    norm_first: bool = False

    def infer(self, in_shape: Shape) -> Shape:
        need_rank(in_shape, 2, "a sequence [T, D]", "transformer_encoder")
        if in_shape[-1] % self.num_heads:
            raise SpecError(
                f"transformer_encoder: width {in_shape[-1]} (the input's last axis) is not "
                f"divisible by num_heads {self.num_heads}", ("num_heads",))
        return in_shape

    def build(self, in_shape: Shape) -> nn.Module:
        layer = nn.TransformerEncoderLayer(
            in_shape[-1], self.num_heads, self.dim_feedforward, self.dropout,
            activation=self.activation, batch_first=True, norm_first=self.norm_first)
        # Nested tensors only help with padding masks, which this layer does not take.
        return nn.TransformerEncoder(layer, self.num_layers, enable_nested_tensor=False)


class SinusoidalPositions(nn.Module):
    table: torch.Tensor
    def __init__(self, steps: int, width: int) -> None:
        super().__init__()
        position = torch.arange(steps, dtype=torch.float32).unsqueeze(1)  # (T, 1)
        rate = torch.exp(torch.arange(0, width, 2, dtype=torch.float32)
                         * (-math.log(10000.0) / width))  # (ceil(D/2),)
        table = torch.zeros(steps, width)
        table[:, 0::2] = torch.sin(position * rate)
        table[:, 1::2] = torch.cos(position * rate[: width // 2])
        # A buffer, not a parameter: it is recomputed from the spec, so it is kept out of the
        # saved weights too.
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table  # (B, T, D)


class LearnedPositions(nn.Module):
    def __init__(self, steps: int, width: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(steps, width))
        nn.init.normal_(self.table, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table  # (B, T, D)


@register_layer
class PositionalEncoding(LayerSpec):
    """Adds position information to [T, D]: fixed sinusoids or a learned [T, D] table."""

    type: Literal["positional_encoding"]
    kind: Literal["sinusoidal", "learned"] = "sinusoidal"

    def infer(self, in_shape: Shape) -> Shape:
        need_rank(in_shape, 2, "a sequence [T, D]", "positional_encoding")
        return in_shape

    def build(self, in_shape: Shape) -> nn.Module:
        cls = SinusoidalPositions if self.kind == "sinusoidal" else LearnedPositions
        return cls(*in_shape)


class SequencePooling(nn.Module):
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, F) -> (B, F)
        if self.mode == "mean":
            return x.mean(dim=1)
        if self.mode == "max":
            return x.amax(dim=1)
        return x[:, -1] if self.mode == "last" else x[:, 0]


@register_layer
class SequencePool(LayerSpec):
    type: Literal["sequence_pool"]
    mode: Literal["mean", "max", "last", "first"] = "mean"

    def infer(self, in_shape: Shape) -> Shape:
        need_rank(in_shape, 2, "a sequence [T, F]", "sequence_pool")
        return (in_shape[1],)

    def build(self, in_shape: Shape) -> nn.Module:
        return SequencePooling(self.mode)
