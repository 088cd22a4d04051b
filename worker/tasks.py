"""The Celery tasks: each takes an id, nothing else; the real work is in worker.runner and
worker.webhooks."""

from __future__ import annotations

import logging

from api.queue import DELIVER_TASK, SWEEP_TASK, TRAIN_TASK
from api.settings import get_settings
from worker.celery_app import app
from worker.logs import job_logging
from worker.runner import run_job
from worker.sweep_controller import sweep_step as run_sweep_step
from worker.webhooks import deliver

log = logging.getLogger("taas.worker")


@app.task(name=TRAIN_TASK)
def train_job(job_id: str) -> str:
    """Returns what Celery's outcome line shows: the job's own final status (a task that
    ran without error "succeeded", whether its job succeeded, failed or was cancelled)."""
    with job_logging(job_id):
        status = run_job(job_id, get_settings())
        log.info("job %s ended: %s", job_id, status)
    return f"job {job_id} {status}"


@app.task(name=DELIVER_TASK)
def deliver_webhook(delivery_id: str) -> None:
    deliver(delivery_id, get_settings())


@app.task(name=SWEEP_TASK)
def sweep_step(sweep_id: str) -> None:
    run_sweep_step(sweep_id, get_settings())
