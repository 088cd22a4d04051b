"""Activation functions by name: the same names work as a layer and on `dense`/`conv*`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dlmodels.registry import Registry

ActivationFactory = Callable[[float], nn.Module]

ACTIVATIONS: Registry[ActivationFactory] = Registry("activation")

# The factory takes `negative_slope`, which only leaky_relu reads; one signature keeps the
# builder free of per-name special cases.
ACTIVATIONS.add("relu", lambda _slope: nn.ReLU())
ACTIVATIONS.add("sigmoid", lambda _slope: nn.Sigmoid())
ACTIVATIONS.add("tanh", lambda _slope: nn.Tanh())
ACTIVATIONS.add("leaky_relu", lambda slope: nn.LeakyReLU(slope))
ACTIVATIONS.add("softmax", lambda _slope: nn.Softmax(dim=-1))
ACTIVATIONS.add("gelu", lambda _slope: nn.GELU())
ACTIVATIONS.add("elu", lambda _slope: nn.ELU())
ACTIVATIONS.add("selu", lambda _slope: nn.SELU())
ACTIVATIONS.add("silu", lambda _slope: nn.SiLU())
ACTIVATIONS.add("softplus", lambda _slope: nn.Softplus())
ACTIVATIONS.add("identity", lambda _slope: nn.Identity())

DEFAULT_NEGATIVE_SLOPE = 0.01


def make_activation(name: str, negative_slope: float = DEFAULT_NEGATIVE_SLOPE) -> nn.Module:
    return ACTIVATIONS.get(name)(negative_slope)
