"""Optimizer and learning-rate scheduler specs; each class builds its torch object."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from dlmodels.bounds import MAX_EPOCHS, MAX_EPS, MAX_LR, MAX_NAME_LENGTH
from dlmodels.registry import Registry

Params = Any  # an iterable of parameters, as torch.optim takes


def _shorthand(value: object) -> object:
    """Accept "adam" for {"type": "adam"}, as Keras' compile(optimizer="adam") does."""
    return {"type": value} if isinstance(value, str) else value


Beta = Annotated[float, Field(ge=0, lt=1)]
"""Adam's decay rates, in [0, 1) as torch requires."""


class _Optimizer(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    lr: float = Field(0.001, gt=0, le=MAX_LR, examples=[0.001])
    weight_decay: float = Field(0.0, ge=0, le=1)


class SGD(_Optimizer):
    type: Literal["sgd"]
    lr: float = Field(0.01, gt=0, le=MAX_LR, examples=[0.01])
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False

    def build(self, params: Params) -> torch.optim.Optimizer:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum,
                               nesterov=self.nesterov, weight_decay=self.weight_decay)


class Adam(_Optimizer):
    type: Literal["adam"]
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0, le=MAX_EPS)

    def build(self, params: Params) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.lr, betas=self.betas, eps=self.eps,
                                weight_decay=self.weight_decay)


class AdamW(_Optimizer):
    type: Literal["adamw"]
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0, le=MAX_EPS)
    weight_decay: float = Field(0.01, ge=0, le=1)

    def build(self, params: Params) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.lr, betas=self.betas, eps=self.eps,
                                 weight_decay=self.weight_decay)


class Adagrad(_Optimizer):
    type: Literal["adagrad"]
    lr: float = Field(0.01, gt=0, le=MAX_LR)

    def build(self, params: Params) -> torch.optim.Optimizer:
        return torch.optim.Adagrad(params, lr=self.lr, weight_decay=self.weight_decay)


class RMSprop(_Optimizer):
    type: Literal["rmsprop"]
    lr: float = Field(0.01, gt=0, le=MAX_LR)
    alpha: float = Field(0.99, gt=0, lt=1)
    momentum: float = Field(0.0, ge=0, lt=1)

    def build(self, params: Params) -> torch.optim.Optimizer:
        return torch.optim.RMSprop(params, lr=self.lr, alpha=self.alpha, momentum=self.momentum,
                                   weight_decay=self.weight_decay)


OptimizerSpec = Annotated[
    SGD | Adam | AdamW | Adagrad | RMSprop,
    Field(discriminator="type"),
    BeforeValidator(_shorthand),
]


class StepLR(BaseModel):
    """Multiply the learning rate by `gamma` every `step_size` epochs."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    type: Literal["step"]
    step_size: int = Field(10, ge=1, le=MAX_EPOCHS)
    gamma: float = Field(0.1, gt=0, le=1)


class CosineLR(BaseModel):
    """Cosine-anneal the learning rate to `eta_min` over `t_max` epochs (default: all)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    type: Literal["cosine"]
    t_max: int | None = Field(None, ge=1, le=MAX_EPOCHS)
    eta_min: float = Field(0.0, ge=0, le=MAX_LR)


class PlateauLR(BaseModel):
    """Multiply the learning rate by `factor` when `monitor` stops improving for `patience`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    type: Literal["plateau"]
    monitor: str = Field("val_loss", max_length=MAX_NAME_LENGTH)
    factor: float = Field(0.1, gt=0, lt=1)
    patience: int = Field(10, ge=0, le=MAX_EPOCHS)
    min_lr: float = Field(0.0, ge=0, le=MAX_LR)


SchedulerSpec = Annotated[StepLR | CosineLR | PlateauLR, Field(discriminator="type")]


def build_scheduler(spec: StepLR | CosineLR | PlateauLR, optimizer: torch.optim.Optimizer,
                    epochs: int) -> Any:
    sched = torch.optim.lr_scheduler
    if isinstance(spec, StepLR):
        return sched.StepLR(optimizer, step_size=spec.step_size, gamma=spec.gamma)
    if isinstance(spec, CosineLR):
        return sched.CosineAnnealingLR(optimizer, T_max=spec.t_max or epochs, eta_min=spec.eta_min)
    return sched.ReduceLROnPlateau(optimizer, mode="max" if _higher_is_better(spec.monitor)
                                   else "min", factor=spec.factor, patience=spec.patience,
                                   min_lr=spec.min_lr)


def _higher_is_better(monitor: str) -> bool:
    return monitor.removeprefix("val_") in {"accuracy", "precision", "recall", "f1", "r2"}


def _type_name(cls: type[BaseModel]) -> str:
    """The `type` a spec class answers to (its Literal)."""
    name: str = cls.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    return name


OPTIMIZERS: Registry[type[_Optimizer]] = Registry("optimizer")
for _cls in (SGD, Adam, AdamW, Adagrad, RMSprop):
    OPTIMIZERS.add(_type_name(_cls), _cls)

SCHEDULERS: Registry[type[BaseModel]] = Registry("lr scheduler")
for _scheduler in (StepLR, CosineLR, PlateauLR):
    SCHEDULERS.add(_type_name(_scheduler), _scheduler)
