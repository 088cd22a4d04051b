"""The sweep controller: one turn of `taas.sweep_step(sweep_id)`, under the sweep's lock.

A turn tells the Optuna study how the trials that ended since the last turn did, keeps the
sweep's best trial, asks the study for as many new trials as `max_parallel` and `max_trials`
allow (each an ordinary job, created by the job service), and ends the sweep when every trial
has ended. It holds no state of its own: everything is re-read from the database, so duplicate,
concurrent or late turns change nothing (the lock makes them take turns, and each one counts
what is there).
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import TrialState
from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from api import studies
from api.errors import InvalidInput, TooManyRequests, Unavailable
from api.models import Job, JobStatus, Sweep, SweepStatus, utcnow
from api.services.jobs import create_job
from api.services.sweep_check import base_tree, grid_size, user_tree, with_values
from api.services.sweep_lock import locked_sweep
from api.services.sweep_steps import notify_sweep_finished, request_step
from api.services.sweeps import objective_value, trial_params
from api.settings import Settings
from api.sweep_schemas import SweepCreate
from dlmodels.builder import Summary
from dlmodels.errors import SpecError
from dlmodels.spec import JobSpec
from worker import sweep_tracking

log = logging.getLogger("taas.sweeps")

IN_FLIGHT = (JobStatus.queued, JobStatus.running)
EMPTY_SUMMARY = Summary(input_shape=[], layers=[], total_params=0, trainable_params=0,
                        param_bytes=0, activation_bytes_per_sample=0).model_dump()


def sweep_step(sweep_id: str, settings: Settings) -> None:
    began = time.perf_counter()
    with locked_sweep(sweep_id) as session:
        sweep = session.get(Sweep, sweep_id)
        if sweep is None:
            return
        requested = sweep.step_requested_at
        body = SweepCreate.model_validate(sweep.spec)
        study = studies.load(sweep_id, body)
        _tell_ended(session, sweep, study)
        _keep_best(session, sweep, settings)
        if sweep.status in (SweepStatus.queued, SweepStatus.running):
            _launch(session, sweep, body, study, settings)
            _finish_if_done(session, sweep)
        _clear_request(session, sweep_id, requested)
        session.commit()
        if SweepStatus(sweep.status).is_final:
            sweep_tracking.end(sweep, settings)
    log.info("sweep %s turn: %s, %.3f s", sweep_id, sweep.status, time.perf_counter() - began)


def _tell_ended(session: Session, sweep: Sweep, study: optuna.Study) -> None:
    """Every trial the study still thinks running whose job has ended (or never came to be)
    gets its result: succeeded -> its objective; pruned -> pruned; otherwise failed."""
    open_trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not open_trials:
        return
    # Samplers are rebuilt for every ask; telling through one only runs its after_trial hook,
    # which for the grid sampler calls Study.stop (only allowed inside Study.optimize).
    study.sampler = optuna.samplers.RandomSampler()
    jobs = {job.trial: job for job in session.scalars(select(Job).where(
        Job.sweep_id == sweep.id, Job.trial.in_([t.number for t in open_trials])))}
    metric = sweep.objective["metric"]
    for trial in open_trials:
        job = jobs.get(trial.number)
        if job is not None and not JobStatus(job.status).is_final:
            continue
        value = objective_value(job, metric) if job is not None else None
        if job is not None and job.status == JobStatus.succeeded and _finite(value):
            study.tell(trial.number, value, skip_if_finished=True)
        elif job is not None and job.status == JobStatus.pruned:
            study.tell(trial.number, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _keep_best(session: Session, sweep: Sweep, settings: Settings) -> None:
    """The best succeeded trial by its objective; a new best goes to the sweep's MLflow run."""
    metric, sign = sweep.objective["metric"], \
        (1 if sweep.objective["direction"] == "minimize" else -1)
    done = session.scalars(select(Job).where(Job.sweep_id == sweep.id,
                                             Job.status == JobStatus.succeeded)).all()
    scored = [(value, job) for job in done
              if (value := objective_value(job, metric)) is not None and math.isfinite(value)]
    if not scored:
        return
    value, job = min(scored, key=lambda pair: (sign * pair[0], pair[1].trial))
    if sweep.best is not None and sweep.best["job_id"] == job.id:
        return
    sweep.best = {"trial": job.trial, "job_id": job.id, "value": value,
                  "params": trial_params(job.spec, list(sweep.spec["parameters"]))}
    sweep_tracking.log_best(sweep, value, trials=len(done), settings=settings)


def _counts(session: Session, sweep_id: str) -> tuple[int, int]:
    """(trials in all, trials queued or running)."""
    total = session.scalar(select(func.count()).select_from(Job)
                           .where(Job.sweep_id == sweep_id)) or 0
    in_flight = session.scalar(select(func.count()).select_from(Job).where(
        Job.sweep_id == sweep_id, Job.status.in_(IN_FLIGHT))) or 0
    return total, in_flight


def trial_limit(sweep: Sweep, body: SweepCreate) -> int:
    if body.sampler.type == "grid":
        return min(sweep.max_trials, grid_size(body.parameters))
    return sweep.max_trials


def _tenant_slots(session: Session, tenant: str, settings: Settings) -> int:
    busy = session.scalar(select(func.count()).select_from(Job).where(
        Job.tenant == tenant, Job.status.in_(IN_FLIGHT))) or 0
    return settings.max_concurrent_jobs - busy


def _launch(session: Session, sweep: Sweep, body: SweepCreate, study: optuna.Study,
            settings: Settings) -> None:
    """New trials up to max_parallel in flight and max_trials in all (and the tenant's job
    limit: when it is full, the reaper gives the sweep another turn later)."""
    total, in_flight = _counts(session, sweep.id)
    wanted = min(sweep.max_parallel - in_flight, trial_limit(sweep, body) - total)
    if wanted <= 0:
        return
    if sweep.mlflow_run_id is None:
        sweep_tracking.start(sweep, body, settings)
    slots = _tenant_slots(session, sweep.tenant, settings)
    if slots < wanted:
        request_step(session, sweep.id, send_now=False)  # some wait for the tenant's jobs
    sweep.status = SweepStatus.running
    session.commit()
    distributions = studies.distributions(body)
    tree, defaults = user_tree(body.base), base_tree(body.base)
    asked = len(study.get_trials(deepcopy=False))
    for offset in range(min(wanted, slots)):
        study.sampler = studies.sampler(body, asked + offset)
        trial = study.ask(distributions)
        if not _start_trial(session, sweep, trial, with_values(tree, trial.params, defaults),
                            settings):
            study.sampler = optuna.samplers.RandomSampler()  # see _tell_ended
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


def _start_trial(session: Session, sweep: Sweep, trial: optuna.Trial, tree: dict[str, Any],
                 settings: Settings) -> bool:
    """The trial's job, queued; a spec that cannot run is stored as a failed trial
    (invalid_spec). False when the study must count the trial as failed."""
    try:
        spec = JobSpec.model_validate(tree)
        create_job(session, spec=spec, tenant=sweep.tenant, idempotency_key=None,
                   settings=settings, sweep_id=sweep.id, trial=trial.number)
        return True
    except (SpecError, InvalidInput, ValidationError) as error:
        session.rollback()
        _store_invalid(session, sweep, trial.number, tree, _describe(error))
    except (TooManyRequests, Unavailable) as error:  # not the trial's fault: try later
        session.rollback()
        log.warning("sweep %s trial %s not started: %s", sweep.id, trial.number, error)
        request_step(session, sweep.id, send_now=False)
        session.commit()
    return False


def _describe(error: Exception) -> str:
    if isinstance(error, SpecError):
        where = ".".join(map(str, error.loc))
        return f"{where}: {error.message}" if where else error.message
    if isinstance(error, ValidationError):
        problem = error.errors()[0]
        return f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}"
    return str(error)


def _store_invalid(session: Session, sweep: Sweep, number: int, tree: dict[str, Any],
                   message: str) -> None:
    now = utcnow()
    session.add(Job(tenant=sweep.tenant, name=f"{sweep.name}-trial-{number}",
                    status=JobStatus.failed, queue="cpu", spec=tree, summary=EMPTY_SUMMARY,
                    epochs=_epochs(tree),
                    error_type="invalid_spec", error_message=message[:4000],
                    created_at=now, finished_at=now, sweep_id=sweep.id, trial=number))
    session.commit()


def _epochs(tree: dict[str, Any]) -> int:
    training = tree.get("training")
    epochs = training.get("epochs") if isinstance(training, dict) else None
    return epochs if isinstance(epochs, int) else 0


def _finish_if_done(session: Session, sweep: Sweep) -> None:
    """Every trial ended and no more to ask: succeeded with a best trial, else failed."""
    body = SweepCreate.model_validate(sweep.spec)
    total, in_flight = _counts(session, sweep.id)
    if in_flight or total < trial_limit(sweep, body):
        return
    sweep.status = SweepStatus.succeeded if sweep.best else SweepStatus.failed
    sweep.finished_at = utcnow()
    notify_sweep_finished(session, sweep)


def _clear_request(session: Session, sweep_id: str, requested: datetime | None) -> None:
    """The request this turn answered is done; one made during the turn stays."""
    session.execute(update(Sweep).where(Sweep.id == sweep_id,
                                        Sweep.step_requested_at == requested)
                    .values(step_requested_at=None))
