"""All configuration, from environment variables prefixed TAAS_ (see the README's table)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAAS_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="SQLite files, broker and MLflow artifacts "
                           "of the embedded default.")
    database_url: str | None = Field(None, description="Default: SQLite under data_dir.")
    broker_url: str | None = Field(None, description="Default: an embedded SQLite broker.")
    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    mlflow_ui_url: str | None = Field(None, description="Base URL users open for the MLflow UI; "
                                      "default: the tracking URI.")
    mlflow_experiment: str = "taas"
    api_keys: str = Field("", description="tenant:key,tenant:key; empty turns auth off.")
    auth_cache_seconds: float = Field(
        5.0, ge=0, description="Seconds the API reuses what the database said about stored "
        "keys (so most requests make no auth query); a revoked key stops working within it.")
    model_poll_seconds: float = Field(0.25, gt=0, description="How often each API process "
                                      "checks the model registry for new versions and moved "
                                      "aliases (they take effect within this time).")
    predict_cache_size: int = Field(32, ge=1, description="Trained models kept in memory.")
    finished_cache_size: int = Field(4096, ge=1, description="Answers of finished jobs kept in "
                                     "memory for status reads (they never change).")
    # A write (epoch rows to the database, metrics to MLflow) takes ~16 ms of which ~6 ms CPU
    # on the worker's writer thread (python -m bench.flush_cost): once a second keeps it near
    # 0.6% of training.
    progress_interval: float = Field(
        1.0, ge=0, description="Seconds between progress/metric writes while training (the "
        "last epoch is always written).")
    worker_threads: int | None = Field(None, ge=1, description="torch threads per worker "
                                       "process; default: cores / worker processes.")
    heartbeat_interval: float = Field(5.0, gt=0, description="Seconds between a training "
                                      "worker's heartbeats (and its cancel checks).")
    heartbeat_timeout: float = Field(60.0, gt=0, description="A running job whose heartbeat is "
                                     "older than this is taken as lost and re-queued.")
    max_attempts: int = Field(3, ge=1, description="Attempts before a job that keeps losing its "
                              "worker fails with worker_lost.")
    requeue_after: float = Field(30.0, gt=0, description="A queued job not picked up after this "
                                 "many seconds is sent to the broker again.")
    checkpoint_interval: float = Field(30.0, ge=0, description="Seconds between epoch-end "
                                       "checkpoints a retried attempt resumes from.")
    tracking_timeout: float = Field(60.0, gt=0, description="How long MLflow may stay "
                                    "unreachable before a job fails with tracking_unavailable.")
    max_concurrent_jobs: int = Field(20, ge=1, description="Queued + running jobs per tenant.")
    max_sweep_trials: int = Field(1000, ge=1, description="Largest max_trials of a sweep.")
    max_params: int = Field(100_000_000, ge=1, description="Largest model, in parameters.")
    max_activation_bytes: int = Field(2**30, ge=1, description="Largest activation memory "
                                      "per sample (the summary's estimate).")
    max_epoch_samples: int = Field(10**10, ge=1, description="Largest epochs x samples.")
    rate_limit: float = Field(50.0, gt=0, description="Control-plane requests (jobs, datasets, "
                              "models, listings) per second per tenant (token bucket, per API "
                              "process).")
    rate_burst: int = Field(200, ge=1, description="Control-plane requests a tenant may make "
                            "at once.")
    # One API process answers up to ~6,000 small predictions a second (bench B3): this default
    # never throttles a tenant serving a model, yet still caps a runaway client.
    predict_rate_limit: float = Field(20_000.0, gt=0, description="Predictions (job/model "
                                      "predict, V2 infer) per second per tenant, per API "
                                      "process; separate from TAAS_RATE_LIMIT.")
    predict_rate_burst: int = Field(20_000, ge=1, description="Predictions a tenant may make "
                                    "at once.")
    job_time_limit: int = Field(24 * 3600, ge=10, description="Hard limit on one job's run, s.")
    events_poll_interval: float = Field(0.5, gt=0, description="Seconds between a live event "
                                        "stream's reads of the database (per connection).")
    events_max_seconds: float = Field(3600.0, gt=0, description="Longest a live event stream "
                                      "stays open; clients reconnect with Last-Event-ID.")
    max_processes_per_job: int | None = Field(
        None, ge=1, description="Most processes one data-parallel job may train on; default: "
        "the worker's CPU count (its GPU count for device cuda).")
    distributed_timeout: float = Field(
        60.0, gt=0, description="Seconds a data-parallel job's collective (an all-reduce) may "
        "wait for a rank before the attempt fails: a dead rank never hangs the others.")
    distributed_warm: bool = Field(
        True, description="Start each worker process's rank server (a process with a rank's "
        "code imported, ~400 MB) with the worker, so even the first data-parallel job starts "
        "in a fraction of a second; off: the first data-parallel job starts it (seconds).")
    distributed_bind_cores: bool = Field(
        True, description="Bind each rank of a data-parallel job to its own share of the "
        "worker's cores (as `mpirun --bind-to core` does); off: the kernel places the ranks.")
    max_dataset_bytes: int = Field(256 * 2**20, ge=1024, description="Largest upload.")
    max_request_bytes: int = Field(32 * 2**20, ge=1024)
    webhook_allow_private: bool = Field(
        False, description="Let webhooks reach private, loopback and link-local addresses "
        "(refused by default: a webhook must not be a way into the service's own network).")
    webhook_timeout: float = Field(10.0, gt=0, description="Seconds a webhook receiver has to "
                                   "answer one delivery.")
    webhook_backoff: float = Field(5.0, gt=0, description="Seconds before a failed delivery's "
                                   "first retry; each retry waits twice the one before.")
    webhook_max_backoff: float = Field(3600.0, gt=0, description="Longest wait between two "
                                       "retries of a delivery.")
    webhook_retry_for: float = Field(24 * 3600.0, gt=0, description="Seconds after the event "
                                     "during which a failing delivery is retried; then it "
                                     "is marked failed.")

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'taas.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    @property
    def mlflow_public_url(self) -> str:
        return (self.mlflow_ui_url or self.mlflow_tracking_uri).rstrip("/")

    def api_key_map(self) -> dict[str, str]:
        """key -> tenant."""
        pairs = [item.strip() for item in self.api_keys.split(",") if item.strip()]
        result = {}
        for pair in pairs:
            tenant, _, key = pair.partition(":")
            if not tenant or not key:
                raise ValueError("TAAS_API_KEYS must look like tenant:key,tenant:key")
            result[key] = tenant
        return result


@lru_cache
def get_settings() -> Settings:
    return Settings()
