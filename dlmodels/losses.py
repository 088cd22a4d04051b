"""Losses by name, with how each turns model outputs and targets into labels for metrics.

`cross_entropy` and `bce` train on logits: a final softmax (resp. sigmoid) in the spec is split off
by the builder and applied only at predict time, which is PyTorch's numerically stable form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from dlmodels.registry import Registry

TargetKind = Literal["float", "class_index"]


@dataclass(frozen=True)
class Loss:
    name: str
    make: Callable[[], nn.Module]
    targets: TargetKind  # what y must hold: float values, or integer class ids [N]
    fused_activation: str | None  # final activation trained as part of the loss
    description: str


LOSSES: Registry[Loss] = Registry("loss")

LOSSES.add("mse", Loss("mse", nn.MSELoss, "float", None, "Mean squared error."))
LOSSES.add("mae", Loss("mae", nn.L1Loss, "float", None, "Mean absolute error."))
LOSSES.add("huber", Loss("huber", nn.HuberLoss, "float", None, "Huber (delta 1)."))
LOSSES.add("bce", Loss(
    "bce", nn.BCEWithLogitsLoss, "float", "sigmoid",
    "Binary cross-entropy on logits; a final sigmoid is fused into the loss."))
LOSSES.add("cross_entropy", Loss(
    "cross_entropy", nn.CrossEntropyLoss, "class_index", "softmax",
    "Cross-entropy over classes with integer labels; a final softmax is fused into the loss."))


def decode_labels(loss: str, outputs: torch.Tensor) -> torch.Tensor:
    """Class labels (B,) from what the trained part of the model outputs (logits when fused).

    One output unit is a binary decision (logit > 0 for bce, value > 0.5 otherwise); several units
    are one-hot/class scores, decided by argmax.
    """
    if outputs.dim() == 1 or outputs.shape[-1] == 1:
        threshold = 0.0 if loss == "bce" else 0.5
        return (outputs.reshape(outputs.shape[0], -1)[:, 0] > threshold).long()
    return outputs.argmax(dim=-1)


def target_labels(targets: torch.Tensor) -> torch.Tensor:
    """Class labels (B,) from targets: class ids as they are, 0/1 columns thresholded,
    one-hot rows by argmax."""
    if targets.dim() == 1:
        return targets.long()
    if targets.shape[-1] == 1:
        return (targets[:, 0] > 0.5).long()
    return targets.argmax(dim=-1)
