"""The database schema (SQLAlchemy 2.0). Created only by Alembic migrations, never create_all."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    pruned = "pruned"  # a sweep's trial stopped early by its pruner (its history is kept)

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled,
                          JobStatus.pruned})


class SweepStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        return self not in (SweepStatus.queued, SweepStatus.running)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them without a zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType, datetime: UTCDateTime()}


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
        Index("ix_jobs_tenant_created", "tenant", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(200), default="")
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued, index=True)
    queue: Mapped[str] = mapped_column(String(32), default="cpu")
    # Deferred: it holds inline training data, which status reads and predictions never need.
    spec: Mapped[dict[str, Any]] = mapped_column(deferred=True)
    summary: Mapped[dict[str, Any]]
    epochs: Mapped[int]
    progress_epoch: Mapped[int] = mapped_column(default=0)
    metrics: Mapped[dict[str, Any] | None]
    error_type: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    mlflow_experiment_id: Mapped[str | None] = mapped_column(String(64))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    dispatched_at: Mapped[datetime | None]  # last time the id was sent to the broker
    # The MLflow status still to be set on this job's run (MLflow was down when it ended).
    mlflow_end_pending: Mapped[str | None] = mapped_column(String(16))
    # A sweep's trial: its sweep and its trial number (Optuna's, from 0).
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"),
                                                 index=True)
    trial: Mapped[int | None]


class Sweep(Base):
    """A hyperparameter search; its trials are jobs, its Optuna study is in the same database
    (study name `taas-sweep-<id>`)."""

    __tablename__ = "sweeps"
    __table_args__ = (Index("ix_sweeps_tenant_created", "tenant", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(200), default="")
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=SweepStatus.queued, index=True)
    # The request as validated: base, parameters, objective, sampler, pruner, limits.
    spec: Mapped[dict[str, Any]] = mapped_column(deferred=True)
    objective: Mapped[dict[str, Any]]
    max_trials: Mapped[int]
    max_parallel: Mapped[int]
    best: Mapped[dict[str, Any] | None]  # {trial, job_id, params, value}
    mlflow_experiment_id: Mapped[str | None] = mapped_column(String(64))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    # Set whenever the controller must take a step (a trial ended, the tenant's limit was
    # full); cleared by the step. The reaper re-sends steps requested long ago.
    step_requested_at: Mapped[datetime | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class JobEpoch(Base):
    """One row per finished epoch: the history behind GET /v1/jobs/{id}/metrics."""

    __tablename__ = "job_epochs"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    epoch: Mapped[int] = mapped_column(primary_key=True)
    values: Mapped[dict[str, Any]]


class JobWeights(Base):
    """The trained weights (a weights-only torch state_dict) and their sha256."""

    __tablename__ = "job_weights"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))


class Dataset(Base):
    """An uploaded dataset, stored once per tenant by the hash of its arrays (as an NPZ)."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(200), default="", index=True)
    format: Mapped[str] = mapped_column(String(16))
    n: Mapped[int]
    x_shape: Mapped[dict[str, Any]]  # {"shape": [...], "dtype": "float32"}
    y_shape: Mapped[dict[str, Any]]
    size_bytes: Mapped[int]
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobCheckpoint(Base):
    """The latest end-of-epoch state of a running job, so a retried attempt resumes there."""

    __tablename__ = "job_checkpoints"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    epoch: Mapped[int]
    data: Mapped[bytes] = mapped_column(LargeBinary)  # weights-only torch.save of a dict
    sha256: Mapped[str] = mapped_column(String(64))


class ApiKey(Base):
    """A stored API key: only its sha256 is kept (the key is shown once, at creation)."""

    __tablename__ = "api_keys"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(200), index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class JobEvent(Base):
    """One event of a job's stream (GET /v1/jobs/{id}/events): its id is the SSE event id.

    Written in the transaction that moved the job (see api.events), so ids of one job's events
    grow in commit order."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"),
                                    primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16))  # "status" or "epoch"
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
class Webhook(Base):
    """A tenant's webhook endpoint. The secret signs deliveries, so it is kept (shown once)."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(200), default="", index=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSONType)
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeliveryStatus(enum.StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


class WebhookDelivery(Base):
    """One event for one webhook; its id is the `webhook-id` header, the same on every retry."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_status_next", "status", "next_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"),
                                            index=True)
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]  # the body: {type, timestamp, data}
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.pending)
    attempts: Mapped[int] = mapped_column(default=0)
    next_at: Mapped[datetime]  # due (pending) or leased to a sender until then
    dispatched_at: Mapped[datetime | None]  # last time the id was sent to the broker
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]
def mlflow_model_name(tenant: str, name: str) -> str:
    """The MLflow registered model of a tenant's model: MLflow's names are global, ours are
    per tenant, so with auth on the tenant prefixes it (`alice.heights`); off, it is the name."""
    return f"{tenant}.{name}" if tenant else name


class ModelVersion(Base):
    """One version per succeeded job, numbered per (tenant, name) from 1, in order of success."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("tenant", "name", "version",
                                       name="uq_model_versions_tenant_name_version"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    tenant: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelAlias(Base):
    """A named pointer to a version. `version` None: deleted, kept until MLflow has been told
    (`mlflow_pending`); the MLflow registry follows this table, never the other way round."""

    __tablename__ = "model_aliases"

    tenant: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    alias: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int | None]
    mlflow_pending: Mapped[bool] = mapped_column(default=True, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelRegistryState(Base):
    """One row whose generation every registry change bumps: API processes poll it (one tiny
    query) and reload their name -> job directory only when it moved."""

    __tablename__ = "model_registry_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    generation: Mapped[int] = mapped_column(default=0)
