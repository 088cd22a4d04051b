"""Runs one job: claim it, train it with dlmodels, store the weights, track it in MLflow.

Every way it can end is a final state with a reason a user can act on, or another attempt:
- user errors are never retried: `invalid_spec` (spec or data that cannot train),
  `training_diverged` (NaN loss), `device_unavailable`, `time_limit_exceeded`;
- `tracking_unavailable`: MLflow stayed down longer than TAAS_TRACKING_TIMEOUT;
- infrastructure errors (database, broker) put the job back in the queue with backoff, for the
  next attempt, which resumes from the last checkpoint; after TAAS_MAX_ATTEMPTS it fails;
- anything else is a bug: `internal_error` with the exception's type and message, logged.
"""

from __future__ import annotations

import io
import logging

import torch
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import SQLAlchemyError

from api.db import session_scope
from api.models import Job, mlflow_model_name
from api.queue import dispatch
from api.services.data import check_job
from api.settings import Settings
from dlmodels.builder import build_model
from dlmodels.distributed import DataParallel
from dlmodels.errors import SpecError, TrainingDiverged
from dlmodels.serialize import sha256, weights_to_bytes
from dlmodels.spec import JobSpec
from dlmodels.training import fit, resolve_device
from worker import store
from worker.callbacks import LostOwnership, ReportProgress, SaveCheckpoints
from worker.distributed import supervise
from worker.heartbeat import Heartbeat
from worker.pruning import PruneTrial, SweepTrial, TrialPruned, load_trial
from worker.tracking import Tracker, TrackingUnavailable

log = logging.getLogger("taas.worker")

EXAMPLE_ROWS = 5


class DeviceUnavailable(Exception):
    pass


# Errors that another attempt would only repeat: the job fails at once.
FINAL_ERRORS: dict[type[Exception], str] = {
    TrainingDiverged: "training_diverged", SpecError: "invalid_spec",
    DeviceUnavailable: "device_unavailable", SoftTimeLimitExceeded: "time_limit_exceeded",
    TrackingUnavailable: "tracking_unavailable",
}
INFRASTRUCTURE = (SQLAlchemyError, ConnectionError, OSError)


def run_job(job_id: str, settings: Settings) -> str:
    """Runs an attempt of the job; its status after it (`queued` when re-queued)."""
    attempt = store.claim(job_id)
    if attempt is None:
        log.info("job %s is not queued (duplicate delivery or cancelled); skipping", job_id)
        return "skipped (not queued)"
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        distributed = (job.spec.get("training") or {}).get("distributed") or {}
    if int(distributed.get("processes", 1)) > 1:  # the spec was validated when submitted
        supervise(job_id, attempt, settings)
    else:
        run_attempt(job_id, attempt, settings)
    return store.status(job_id)


def run_attempt(job_id: str, attempt: int, settings: Settings,
                strategy: DataParallel | None = None) -> None:
    """One attempt, in this process; with `strategy`, as rank 0 of a data-parallel job, which
    leaves an infrastructure loss or a bug to the supervising task (it sees every rank)."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        name, tenant, queue, raw_spec = job.name, job.tenant, job.queue, job.spec
        sweep_id, trial_number = job.sweep_id, job.trial
    tracker = Tracker(tracking_uri=settings.mlflow_tracking_uri,
                      experiment=settings.mlflow_experiment, timeout=settings.tracking_timeout)
    try:
        trial = load_trial(sweep_id, trial_number)
        with Heartbeat(job_id, attempt, settings.heartbeat_interval) as heartbeat:
            ended = _train(job_id, attempt, name, tenant, JobSpec.model_validate(raw_spec),
                           tracker, settings, heartbeat, trial, strategy)
        _end_run(job_id, tracker, ended)
    except LostOwnership as error:  # cancelled: the database already says so
        log.info("%s", error)
        _end_run(job_id, tracker, "KILLED")
    except Exception as error:
        if strategy is not None and error_kind(error) not in FINAL_ERRORS.values():
            _end_run(job_id, tracker, "FAILED")
            raise
        _handle_failure(job_id, attempt, queue, error, tracker, settings)


def error_kind(error: BaseException) -> str:
    """A final error type, `infrastructure` (another attempt may work: a lost rank, the
    database), or `internal_error` (a bug)."""
    final = next((kind for cls, kind in FINAL_ERRORS.items() if isinstance(error, cls)), None)
    if final is not None:
        return final
    if isinstance(error, (*INFRASTRUCTURE, torch.distributed.DistError)) or _collective(error):
        return "infrastructure"
    return "internal_error"


def _handle_failure(job_id: str, attempt: int, queue: str, error: Exception, tracker: Tracker,
                    settings: Settings) -> None:
    final_error = next((kind for cls, kind in FINAL_ERRORS.items() if isinstance(error, cls)),
                      None)
    if final_error is None and isinstance(error, INFRASTRUCTURE) \
            and attempt < settings.max_attempts:
        log.warning("job %s attempt %s hit an infrastructure error, re-queued: %s", job_id,
                    attempt, error)
        _end_run(job_id, tracker, "FAILED")
        if store.requeue(job_id, attempt, reason=f"{type(error).__name__}: {error}"):
            dispatch(job_id, queue, countdown=min(60, 2 ** attempt))
        return
    if final_error is None:
        log.exception("job %s failed", job_id, exc_info=error)
    store.fail(job_id, attempt, error_type=final_error or "internal_error",
               message=_message(error))
    _end_run(job_id, tracker, "FAILED")


def _message(error: Exception) -> str:
    if isinstance(error, SpecError):
        where = ".".join(map(str, error.loc))
        return f"{where}: {error.message}" if where else error.message
    if isinstance(error, SoftTimeLimitExceeded):
        return "the job ran past TAAS_JOB_TIME_LIMIT and was stopped"
    if isinstance(error, TrainingDiverged | DeviceUnavailable | TrackingUnavailable):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _end_run(job_id: str, tracker: Tracker, status: str) -> None:
    """End the MLflow run; if MLflow is down, the reaper ends it later (never left RUNNING)."""
    if not tracker.end(status):
        store.mark_mlflow_end_pending(job_id, status)


def _collective(error: BaseException) -> bool:
    """gloo reports a vanished peer or a timed-out collective as a plain RuntimeError."""
    return isinstance(error, RuntimeError) and "gloo" in str(error)


def job_device(spec: JobSpec, strategy: DataParallel | None) -> torch.device:
    try:
        device = resolve_device(spec.training.device, spec.training.precision)
    except RuntimeError as error:
        raise DeviceUnavailable(str(error)) from None
    if device.type == "cuda" and strategy is not None:  # one GPU per process
        return torch.device("cuda", strategy.local_rank)
    return device


def resume_state(job_id: str, attempt: int) -> dict[str, object] | None:
    if attempt == 1:
        return None
    saved = store.load_checkpoint(job_id)
    if saved is None or sha256(saved.data) != saved.sha256:
        return None
    state: dict[str, object] = torch.load(io.BytesIO(saved.data), weights_only=True)
    log.info("job %s attempt %s resumes after epoch %s", job_id, attempt, state["epoch"])
    return state


def _train(job_id: str, attempt: int, name: str, tenant: str, spec: JobSpec, tracker: Tracker,
           settings: Settings, heartbeat: Heartbeat, trial: SweepTrial | None,
           strategy: DataParallel | None) -> str:
    """Train and store the job; its MLflow run's end status (a pruned trial's is KILLED)."""
    device = job_device(spec, strategy)
    with session_scope() as session:
        summary, (x, y) = check_job(spec, session=session, tenant=tenant)
    experiment_id, run_id = tracker.start(job_id=job_id, name=name, tenant=tenant,
                                          attempt=attempt, spec=spec,
                                          summary_text=summary.to_text(),
                                          parent_run_id=trial.parent_run_id if trial else None)
    if not store.set_run(job_id, attempt, experiment_id=experiment_id, run_id=run_id):
        raise LostOwnership(f"job {job_id} attempt {attempt} no longer runs")
    if spec.training.seed is not None:
        torch.manual_seed(spec.training.seed)
    model = build_model(spec.model, loss=spec.training.loss,
                        standardize=spec.training.standardize)
    progress = ReportProgress(job_id=job_id, attempt=attempt, tracker=tracker,
                              heartbeat=heartbeat, interval=settings.progress_interval,
                              db_timeout=settings.heartbeat_timeout)
    checkpoints = SaveCheckpoints(progress=progress, interval=settings.checkpoint_interval)
    pruning = [PruneTrial(trial)] if trial and trial.body.pruner.type != "none" else []
    pruned: TrialPruned | None = None
    with progress:
        try:
            fit(model, x, y, spec.training, callbacks=[progress, checkpoints, *pruning],
                device=device, resume=resume_state(job_id, attempt), strategy=strategy)
        except TrialPruned as stop:
            pruned = stop
        except BaseException:  # cancelled, diverged, failed: keep the epochs it finished
            progress.store_remaining()
            raise
    if pruned is not None:
        return _pruned(job_id, attempt, progress, pruned)
    model.to("cpu").eval()
    weights = weights_to_bytes(model)
    tracker.log_model(model, x_example=x[:EXAMPLE_ROWS].copy(),
                      registered_name=mlflow_model_name(tenant, name))
    if not store.succeed(job_id, attempt, weights=weights, sha256=sha256(weights)):
        raise LostOwnership(f"job {job_id} attempt {attempt} no longer runs")
    store.drop_checkpoint(job_id)
    return "FINISHED"


def _pruned(job_id: str, attempt: int, progress: ReportProgress, pruned: TrialPruned) -> str:
    """The history up to the pruned epoch is stored, then the job ends as pruned."""
    progress.flush(final=True)
    if not store.prune(job_id, attempt, message=str(pruned)):
        raise LostOwnership(f"job {job_id} attempt {attempt} no longer runs")
    store.drop_checkpoint(job_id)
    return "KILLED"
