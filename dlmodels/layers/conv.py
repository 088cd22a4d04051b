"""Convolutions and pools over [C, L] sequences and [C, H, W] images (channels first)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, TypeAdapter, WrapValidator, model_validator
from torch import nn

from dlmodels.bounds import MAX_CHANNELS, MAX_PADDING, MAX_SPATIAL_AXES, MAX_WINDOW
from dlmodels.errors import SpecError
from dlmodels.layers.base import LayerSpec, Shape, conv_out, need_rank, register_layer
from dlmodels.layers.core import ActivationName, with_activation


def _by_kind(*branches: Any) -> WrapValidator:
    """Validate a union of an int, a list and maybe "same" by the input's kind alone, so a bad
    value is one error at the field's loc (`[field, index]` inside a list) rather than one per
    union branch. The union itself stays in the annotation for the JSON schema."""
    one, many, *same = (TypeAdapter(branch) for branch in branches)

    def validate(value: object, _handler: Any) -> object:
        if isinstance(value, list):
            return many.validate_python(value)
        if same and isinstance(value, str):
            return same[0].validate_python(value)
        return one.validate_python(value)

    return WrapValidator(validate)


_Window = Annotated[int, Field(ge=1, le=MAX_WINDOW)]
_Windows = Annotated[list[_Window], Field(min_length=1, max_length=MAX_SPATIAL_AXES)]
_Pad = Annotated[int, Field(ge=0, le=MAX_PADDING)]
_Pads = Annotated[list[_Pad], Field(min_length=1, max_length=MAX_SPATIAL_AXES)]
_Same = Literal["same"]

Size = int | list[int]
WindowSize = Annotated[_Window | _Windows, _by_kind(_Window, _Windows)]
"""`kernel_size`, `pool_size`, `stride`: one int for every axis, or one per spatial axis."""
Padding = Annotated[_Pad | _Pads, _by_kind(_Pad, _Pads)]
PaddingOrSame = Annotated[_Pad | _Pads | _Same, _by_kind(_Pad, _Pads, _Same)]


def _per_axis(value: Size, dims: int, field: str) -> tuple[int, ...]:
    values = [value] * dims if isinstance(value, int) else list(value)
    if len(values) != dims:
        raise SpecError(f"{field} needs 1 or {dims} values but got {len(values)}", (field,))
    return tuple(values)


def _spatial_out(
    layer: str, in_shape: Shape, kernel: tuple[int, ...], stride: tuple[int, ...],
    padding: tuple[int, ...],
) -> tuple[int, ...]:
    out = []
    for axis, (size, k, s, p) in enumerate(zip(in_shape[1:], kernel, stride, padding, strict=True)):
        if k > size + 2 * p:
            raise SpecError(
                f"{layer}: kernel {k} is larger than the input's axis {axis + 1} of size {size}"
                f"{f' plus padding 2x{p}' if p else ''} (input shape {list(in_shape)})",
                ("kernel_size" if "conv" in layer else "pool_size",),
            )
        out.append(conv_out(size, k, s, p))
    return tuple(out)


class _Conv(LayerSpec):
    rank: ClassVar[int]
    filters: int = Field(gt=0, le=MAX_CHANNELS, examples=[16])
    kernel_size: WindowSize = Field(examples=[3])
    stride: WindowSize = 1
    padding: PaddingOrSame = 0
    activation: ActivationName | None = Field(None, examples=["relu"])
    use_bias: bool = True

    @model_validator(mode="after")
    def _same_needs_stride_1(self) -> _Conv:
        if self.padding == "same" and any(s != 1 for s in _per_axis(self.stride, self.rank, "")):
            raise ValueError("padding 'same' needs stride 1 (as in PyTorch)")
        return self

    def _geometry(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        kernel = _per_axis(self.kernel_size, self.rank, "kernel_size")
        stride = _per_axis(self.stride, self.rank, "stride")
        if self.padding == "same":
            # Same output size at stride 1: PyTorch pads (k-1)/2 a side (asymmetric when k is even).
            return kernel, stride, tuple((k - 1) // 2 for k in kernel)
        return kernel, stride, _per_axis(self.padding, self.rank, "padding")

    def infer(self, in_shape: Shape) -> Shape:
        layer = f"conv{self.rank}d"
        hint = "[C, L]" if self.rank == 1 else "[C, H, W]"
        need_rank(in_shape, self.rank + 1, f"channels first, {hint}", layer)
        kernel, stride, padding = self._geometry()
        if self.padding == "same":
            return (self.filters, *in_shape[1:])
        return (self.filters, *_spatial_out(layer, in_shape, kernel, stride, padding))

    def build(self, in_shape: Shape) -> nn.Module:
        conv = nn.Conv1d if self.rank == 1 else nn.Conv2d
        kernel, stride, _ = self._geometry()
        padding: str | tuple[int, ...] = (
            "same" if self.padding == "same" else self._geometry()[2]
        )
        module = conv(in_shape[0], self.filters, kernel, stride=stride,  # type: ignore[arg-type]
                      padding=padding, bias=self.use_bias)  # type: ignore[arg-type]
        return with_activation(module, self.activation)

    def final_activation(self) -> str | None:
        return self.activation

    def without_final_activation(self) -> LayerSpec:
        return self.model_copy(update={"activation": None})


@register_layer
class Conv1d(_Conv):
    type: Literal["conv1d"]
    rank: ClassVar[int] = 1


@register_layer
class Conv2d(_Conv):
    type: Literal["conv2d"]
    rank: ClassVar[int] = 2


class _Pool(LayerSpec):
    pool_size: WindowSize = Field(examples=[2])
    stride: WindowSize | None = Field(None, description="Defaults to pool_size.")
    padding: Padding = 0
    rank: ClassVar[int]
    mode: ClassVar[str]

    def _geometry(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        kernel = _per_axis(self.pool_size, self.rank, "pool_size")
        stride = kernel if self.stride is None else _per_axis(self.stride, self.rank, "stride")
        padding = _per_axis(self.padding, self.rank, "padding")
        for k, p in zip(kernel, padding, strict=True):
            if p * 2 > k:
                raise SpecError(f"padding {p} must be at most half of pool_size {k}", ("padding",))
        return kernel, stride, padding

    def infer(self, in_shape: Shape) -> Shape:
        layer = f"{self.mode}pool{self.rank}d"
        hint = "[C, L]" if self.rank == 1 else "[C, H, W]"
        need_rank(in_shape, self.rank + 1, f"channels first, {hint}", layer)
        return (in_shape[0], *_spatial_out(layer, in_shape, *self._geometry()))

    def build(self, in_shape: Shape) -> nn.Module:
        kernel, stride, padding = self._geometry()
        pools: dict[tuple[str, int], type[nn.Module]] = {
            ("max", 1): nn.MaxPool1d, ("max", 2): nn.MaxPool2d,
            ("avg", 1): nn.AvgPool1d, ("avg", 2): nn.AvgPool2d,
        }
        return pools[self.mode, self.rank](kernel, stride=stride, padding=padding)


@register_layer
class MaxPool1d(_Pool):
    type: Literal["maxpool1d"]
    rank, mode = 1, "max"


@register_layer
class MaxPool2d(_Pool):
    type: Literal["maxpool2d"]
    rank, mode = 2, "max"


@register_layer
class AvgPool1d(_Pool):
    type: Literal["avgpool1d"]
    rank, mode = 1, "avg"


@register_layer
class AvgPool2d(_Pool):
    type: Literal["avgpool2d"]
    rank, mode = 2, "avg"


@register_layer
class GlobalAvgPool(LayerSpec):
    """Averages every axis after the channel axis: [C, ...] -> [C]."""

    type: Literal["global_avgpool"]

    def infer(self, in_shape: Shape) -> Shape:
        need_rank(in_shape, (2, 3), "[C, L] or [C, H, W]", "global_avgpool")
        return (in_shape[0],)

    def build(self, in_shape: Shape) -> nn.Module:
        return GlobalAvg(dims=tuple(range(2, len(in_shape) + 1)))


class GlobalAvg(nn.Module):
    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dims)  # (B, C, ...) -> (B, C)
