"""Request and response bodies of the HTTP API (inputs forbid unknown fields)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

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

JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled", "pruned"]


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
    sweep_id: str | None = Field(None, description="The sweep this job is a trial of.")
    trial: int | None = Field(None, description="Its trial number in that sweep.")


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


class EvaluateRequest(BaseModel):
    """Either the data (`x`, `y`) or an uploaded dataset's id."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"x": [[80], [65]], "y": [[181], [167]]}, {"dataset_id": "9c1e4b7a2d3f4e5a"}]})
    x: list[Any] | None = Field(None, min_length=1, description="Shaped [N, *input_shape].")
    y: list[Any] | None = Field(None, min_length=1, description="The N targets, as in training.")
    dataset_id: str | None = Field(None, max_length=64, description="An uploaded dataset.")

    @model_validator(mode="after")
    def _one_source(self) -> EvaluateRequest:
        if self.dataset_id is not None and (self.x is not None or self.y is not None):
            raise ValueError("send either x and y or a dataset_id, not both")
        if self.dataset_id is None and (self.x is None or self.y is None):
            raise ValueError("send x and y (or a dataset_id)")
        return self


class EvaluateResponse(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"loss": 12.5, "mae": 2.9, "samples": 2}]})
    loss: float
    samples: int
class ModelPredictResponse(PredictResponse):
    model: str = Field(description="The registered model's name.", examples=["heights"])
    version: int = Field(description="The version that answered.", examples=[2])


class ModelSummary(BaseModel):
    name: str
    latest_version: int
    aliases: dict[str, int] = Field(examples=[{"champion": 2}])


class ModelVersionOut(BaseModel):
    version: int
    job_id: str
    created_at: datetime
    metrics: dict[str, Any] = Field(description="The job's final metrics.")


class ModelOut(BaseModel):
    name: str
    versions: list[ModelVersionOut]
    aliases: dict[str, int]
    mlflow_synced: bool = Field(description="False while an alias change is still to be "
                                "copied to MLflow's registry (it already applies here).")


class AliasSet(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"version": 2}]})
    # Bounded by the database's integer column (a bigger number is no version, not a 500).
    version: int = Field(ge=1, le=2**31 - 1)


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


# --- errors: the one shape every error answers (api.errors.error_body) ---------------------

def _absent_not_null(schema: dict[str, Any]) -> None:
    """An optional field is left out of the body, never null: no `"default": null`."""
    schema.pop("default", None)


class FieldError(BaseModel):
    """One problem a validation error found; `loc` is the path into the request."""

    model_config = ConfigDict(extra="forbid")
    loc: list[str | int] = Field(examples=[["model", "layers", 0, "units"]])
    message: str = Field(examples=["model.layers.0.units: Input should be greater than 0"])
    type: str = Field(examples=["greater_than"])
    line: int | SkipJsonSchema[None] = Field(None, description="json_invalid only.",
                                             json_schema_extra=_absent_not_null)
    column: int | SkipJsonSchema[None] = Field(None, description="json_invalid only.",
                                               json_schema_extra=_absent_not_null)


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(description="What went wrong, for programs: `validation_error`, "
                      "`invalid_spec`, `invalid_input`, `not_found`, `conflict`, ...",
                      examples=["invalid_spec"])
    message: str = Field(description="What went wrong, for people.",
                         examples=["conv2d needs input [C, H, W]; it got [1]"])
    loc: list[str | int] | SkipJsonSchema[None] = Field(
        None, description="The path into the request body (or the parameter) at fault.",
        examples=[["model", "layers", 0]], json_schema_extra=_absent_not_null)
    line: int | SkipJsonSchema[None] = Field(
        None, description="json_invalid only: the line of the JSON syntax error (from 1).",
        json_schema_extra=_absent_not_null)
    column: int | SkipJsonSchema[None] = Field(
        None, description="json_invalid only: its column (from 1).",
        json_schema_extra=_absent_not_null)
    errors: list[FieldError] | SkipJsonSchema[None] = Field(
        None, description="validation_error only: every problem found; the first is the "
        "error's own message and loc.", json_schema_extra=_absent_not_null)


class ErrorBody(BaseModel):
    """`{"error": {"type", "message", "loc"?}}`: the body of every 4xx and 5xx."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"error": {"type": "invalid_spec", "message": "conv2d needs input [C, H, W]; it got [1]",
                   "loc": ["model", "layers", 0]}}]})
    error: ErrorDetail


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                "required": True, "schema": {"type": "integer", "minimum": 0}}}

ERROR_RESPONSES: dict[int, dict[str, Any]] = {
    400: {"description": "`http_error`: the body cannot be read as JSON text at all (e.g. it "
          "is not UTF-8)."},
    401: {"description": "`unauthorized`: the service has API keys and the request has no "
          "`Authorization: Bearer <key>` header, or an unknown key.",
          "headers": {"WWW-Authenticate": {"description": "`Bearer`", "required": True,
                                           "schema": {"type": "string"}}}},
    404: {"description": "`not_found`: no such resource (another tenant's id answers the same)."},
    409: {"description": "`conflict`: the resource's state does not allow this."},
    413: {"description": "`payload_too_large`: the request body is over the size limit."},
    415: {"description": "`unsupported_media_type`: the body is not in a media type this "
          "operation reads."},
    422: {"description": "`validation_error` (with `errors`, each with its `loc`), "
          "`invalid_spec` or `invalid_input`: the request cannot be carried out as sent."},
    429: {"description": "`too_many_requests`: over the tenant's request rate or its limit of "
          "jobs in flight.", "headers": _RETRY_AFTER},
    500: {"description": "`internal_error`: a bug (see the API log)."},
    503: {"description": "`database_unavailable` (or `unavailable`: the job queue): a "
          "dependency is unreachable; nothing was changed.", "headers": _RETRY_AFTER},
}

# What every /v1 operation can answer: the request guard (api.middleware) authenticates (401)
# and rate-limits (429) before routing, with the database (503); parameters are validated (422).
V1_ERRORS = (401, 422, 429, 503)
# What any operation taking a body can answer: a body that is not text FastAPI can parse
# (400), and the request guard's size and media type checks.
BODY_ERRORS = (400, 413, 415)


def errors(*codes: int, descriptions: dict[int, str] | None = None
           ) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for FastAPI: each code answers ErrorBody; `descriptions` overrides
    the generic description of a code where an operation knows better."""
    responses: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry = {**ERROR_RESPONSES[code], "model": ErrorBody}
        if descriptions and code in descriptions:
            entry["description"] = descriptions[code]
        responses[code] = entry
    return responses
