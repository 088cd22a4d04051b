"""Request and response bodies of the HTTP API (inputs forbid unknown fields)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dlmodels.builder import Summary
from dlmodels.spec import DataSpec, JobSpec, ModelSpec, TrainingSpec

HEIGHTS_EXAMPLE: dict[str, Any] = {
    "name": "heights",
    "model": {"input_shape": [1], "layers": [
        {"type": "dense", "units": 64, "activation": "relu"},
        {"type": "dense", "units": 64, "activation": "relu"},
        {"type": "dense", "units": 1}]},
    "training": {"optimizer": {"type": "adam", "lr": 0.001}, "loss": "mse", "epochs": 100,
                 "batch_size": 10, "metrics": ["mae"]},
    "data": {"inline": {"x": [[87], [81], [82], [92], [90], [61], [86], [66], [69], [69]],
                        "y": [[187], [174], [179], [192], [188], [160], [179], [168], [168],
                              [174]]}},
}

JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobCreate(JobSpec):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [HEIGHTS_EXAMPLE]})


class SpecCheck(BaseModel):
    """A dry run: the model, and optionally the training and data to check against it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {k: HEIGHTS_EXAMPLE[k] for k in ("model", "training", "data")}]})
    model: ModelSpec
    training: TrainingSpec | None = None
    data: DataSpec | None = None


class Progress(BaseModel):
    epoch: int = Field(examples=[42])
    epochs: int = Field(examples=[100])


class JobError(BaseModel):
    type: str = Field(examples=["training_diverged"])
    message: str = Field(examples=["the training loss became nan at epoch 3"])


class JobOut(BaseModel):
    id: str = Field(examples=["3f2b9c0d4e5f4a6b8c7d9e0f1a2b3c4d"])
    name: str = Field(examples=["heights"])
    status: JobStatusName = Field(examples=["running"])
    progress: Progress
    metrics: dict[str, float] = Field(examples=[{"loss": 233.3, "mae": 14.7}],
                                      description="The latest epoch's values.")
    error: JobError | None = None
    attempt: int = Field(0, examples=[1], description="Training attempts so far; a job whose "
                         "worker was lost is retried, resuming from its last checkpoint.")
    mlflow_run_id: str | None = Field(None, examples=["a1b2c3d4e5f6"])
    mlflow_url: str | None = Field(None, examples=["http://127.0.0.1:5000/#/experiments/1/runs/a1b2c3d4e5f6"])
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    summary: Summary


class JobPage(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page.")


class EpochMetrics(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra={
        "examples": [{"epoch": 1, "loss": 33531.5, "mae": 182.8}]})
    epoch: int
    loss: float


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"inputs": [[80], [65]]}]})
    inputs: list[Any] = Field(min_length=1, description="Shaped [N, *input_shape].")


class PredictResponse(BaseModel):
    predictions: list[Any] = Field(examples=[[[181.6], [167.0]]])
    labels: list[int] | None = Field(None, description="Class labels, for bce and "
                                     "cross_entropy models.", examples=[None])


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


class DatasetOut(BaseModel):
    id: str = Field(examples=["9c1e4b7a2d3f4e5a6b7c8d9e0f1a2b3c"])
    n: int = Field(examples=[150])
    x_shape: list[int] = Field(examples=[[150, 4]])
    y_shape: list[int] = Field(examples=[[150]])
    format: Literal["json", "csv", "npz"] = Field(examples=["csv"])
    size_bytes: int = Field(examples=[2048])
    created_at: datetime
