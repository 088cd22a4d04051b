"""Request and response bodies of /v1/sweeps (inputs forbid unknown fields)."""

from __future__ import annotations

import copy
import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.schemas import HEIGHTS_EXAMPLE, JobCreate

SweepStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Scalar = str | int | float | bool | None

_EXAMPLE_BASE = copy.deepcopy(HEIGHTS_EXAMPLE)
_EXAMPLE_BASE["training"]["epochs"] = 30
SWEEP_EXAMPLE: dict[str, Any] = {
    "name": "heights-search",
    "base": _EXAMPLE_BASE,
    "parameters": {
        "model.layers.0.units": {"type": "int", "low": 8, "high": 128, "log": True},
        "training.optimizer.type": {"type": "categorical", "choices": ["adam", "sgd"]},
        "training.optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    },
    "objective": {"metric": "loss", "direction": "minimize"},
    "sampler": {"type": "tpe", "seed": 0},
    "max_trials": 12,
    "max_parallel": 2,
}


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FloatRange(_Input):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class IntRange(_Input):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if not self.low <= self.high:
            raise ValueError(f"low ({self.low}) must not be above high ({self.high})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("a log range needs low >= 1 and step 1")
        return self


class CategoricalRange(_Input):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1, max_length=1000)


Range = Annotated[FloatRange | IntRange | CategoricalRange, Field(discriminator="type")]


class Objective(_Input):
    metric: str = Field(min_length=1, max_length=100, examples=["val_loss"],
                        description="Any metric the job reports (its last epoch's value).")
    direction: Literal["minimize", "maximize"] = "minimize"


class Sampler(_Input):
    type: Literal["tpe", "random", "grid"] = "tpe"
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Same seed, same "
                             "parameters for the same sweep.")


class Pruner(_Input):
    type: Literal["median", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(5, ge=0, le=10_000, description="median: trials that finish "
                                  "before any is pruned.")
    n_warmup_steps: int = Field(0, ge=0, le=100_000, description="median: epochs of a trial "
                                "before it can be pruned.")
    min_resource: int = Field(1, ge=1, le=100_000, description="hyperband: epochs a trial "
                              "gets at least.")
    reduction_factor: int = Field(3, ge=2, le=100, description="hyperband: 1/reduction_factor "
                                  "of the trials go on at each rung.")
    every: int | None = Field(None, ge=1, le=100_000, description="Epochs between a trial's "
                              "reports to the pruner (each costs a few database round trips); "
                              "default: the base's epochs / 20, rounded up.")


class SweepCreate(_Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [SWEEP_EXAMPLE]})
    name: str | None = Field(None, max_length=200)
    base: JobCreate
    parameters: dict[Annotated[str, Field(min_length=1, max_length=300)], Range] = Field(
        min_length=1, max_length=100, description="Dotted paths into `base` "
        "(`model.layers.0.units`, `training.optimizer.lr`) and the range of each.")
    objective: Objective
    sampler: Sampler = Sampler()
    pruner: Pruner = Pruner()
    max_trials: int = Field(ge=1)
    max_parallel: int = Field(1, ge=1)

    @property
    def report_every(self) -> int:
        """The epochs between pruning reports: the same for every trial, so the pruner always
        compares trials at the same epochs."""
        return self.pruner.every or max(1, math.ceil(self.base.training.epochs / 20))


class Best(BaseModel):
    trial: int
    job_id: str
    params: dict[str, Any]
    value: float


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"alias": "champion"}]})
    alias: str = Field(min_length=1, max_length=100, description="The alias of the best "
                       "trial's model to point at the best trial's version.")


class Promoted(BaseModel):
    model: str = Field(description="The registered model the best trial's job is a version of.")
    version: int
    alias: str
    trial: int
    job_id: str


class TrialCounts(BaseModel):
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    pruned: int = 0
    failed: int = 0
    cancelled: int = 0


class SweepOut(BaseModel):
    id: str
    name: str
    status: SweepStatusName
    trials: TrialCounts
    best: Best | None = None
    objective: Objective
    max_trials: int
    max_parallel: int
    mlflow_run_id: str | None = None
    mlflow_url: str | None = None
    created_at: datetime
    finished_at: datetime | None = None


class SweepPage(BaseModel):
    sweeps: list[SweepOut]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page.")


class TrialOut(BaseModel):
    trial: int
    job_id: str
    params: dict[str, Any]
    status: str = Field(examples=["pruned"])
    value: float | None = Field(None, description="The objective: the last epoch's value "
                                "(a pruned trial's last reported one).")
