"""Runs one job: claim it, train it with dlmodels, store the weights, track it in MLflow.

Failures become a final state with a reason a user can act on: `invalid_spec` for a spec or
data that cannot train, `training_diverged` for a NaN loss, `device_unavailable`, and
`internal_error` (with the exception's type and message) for bugs and infrastructure.
"""

from __future__ import annotations

import logging

import torch

from api.db import session_scope
from api.models import Job
from api.services.data import check_job
from api.settings import Settings
from dlmodels.builder import build_model
from dlmodels.errors import SpecError, TrainingDiverged
from dlmodels.serialize import sha256, weights_to_bytes
from dlmodels.spec import JobSpec
from dlmodels.training import fit, resolve_device
from worker import store
from worker.callbacks import LostOwnership, ReportProgress
from worker.tracking import Tracker

log = logging.getLogger("taas.worker")

EXAMPLE_ROWS = 5


class DeviceUnavailable(Exception):
    pass


def run_job(job_id: str, settings: Settings) -> None:
    attempt = store.claim(job_id)
    if attempt is None:
        log.info("job %s is not queued (duplicate delivery or cancelled); skipping", job_id)
        return
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        name, tenant, raw_spec = job.name, job.tenant, job.spec
    tracker = Tracker(tracking_uri=settings.mlflow_tracking_uri,
                      experiment=settings.mlflow_experiment)
    try:
        _train(job_id, attempt, name, tenant, JobSpec.model_validate(raw_spec), tracker, settings)
    except LostOwnership as error:  # cancelled: the database already says so
        log.info("%s", error)
        tracker.end("KILLED")
    except Exception as error:
        error_type, message = _classify(error)
        if error_type == "internal_error":
            log.exception("job %s failed", job_id)
        store.fail(job_id, attempt, error_type=error_type, message=message)
        tracker.end("FAILED")


def _classify(error: Exception) -> tuple[str, str]:
    if isinstance(error, TrainingDiverged):
        return "training_diverged", str(error)
    if isinstance(error, SpecError):
        where = ".".join(map(str, error.loc))
        return "invalid_spec", f"{where}: {error.message}" if where else error.message
    if isinstance(error, DeviceUnavailable):
        return "device_unavailable", str(error)
    return "internal_error", f"{type(error).__name__}: {error}"


def _train(job_id: str, attempt: int, name: str, tenant: str, spec: JobSpec, tracker: Tracker,
           settings: Settings) -> None:
    try:
        device = resolve_device(spec.training.device)
    except RuntimeError as error:
        raise DeviceUnavailable(str(error)) from None
    with session_scope() as session:
        summary, (x, y) = check_job(spec, session=session, tenant=tenant)
    experiment_id, run_id = tracker.start(job_id=job_id, name=name, tenant=tenant,
                                          attempt=attempt, spec=spec,
                                          summary_text=summary.to_text())
    if not store.set_run(job_id, attempt, experiment_id=experiment_id, run_id=run_id):
        raise LostOwnership(f"job {job_id} attempt {attempt} no longer runs")
    if spec.training.seed is not None:
        torch.manual_seed(spec.training.seed)
    model = build_model(spec.model, loss=spec.training.loss,
                        standardize=spec.training.standardize)
    progress = ReportProgress(job_id=job_id, attempt=attempt, tracker=tracker,
                              interval=settings.progress_interval)
    fit(model, x, y, spec.training, callbacks=[progress], device=device)
    model.to("cpu").eval()
    weights = weights_to_bytes(model)
    tracker.log_model(model, x_example=x[:EXAMPLE_ROWS].copy(), registered_name=name)
    if store.succeed(job_id, attempt, weights=weights, sha256=sha256(weights)):
        tracker.end("FINISHED")
    else:
        raise LostOwnership(f"job {job_id} attempt {attempt} no longer runs")
