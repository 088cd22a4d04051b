"""The Celery tasks: each takes an id, nothing else; the real work is in worker.runner and
worker.webhooks."""

from __future__ import annotations

from api.queue import DELIVER_TASK, SWEEP_TASK, TRAIN_TASK
from api.settings import get_settings
from worker.celery_app import app
from worker.runner import run_job
from worker.sweep_controller import sweep_step as run_sweep_step
from worker.webhooks import deliver


@app.task(name=TRAIN_TASK)
def train_job(job_id: str) -> None:
    run_job(job_id, get_settings())


@app.task(name=DELIVER_TASK)
def deliver_webhook(delivery_id: str) -> None:
    deliver(delivery_id, get_settings())
@app.task(name=SWEEP_TASK)
def sweep_step(sweep_id: str) -> None:
    run_sweep_step(sweep_id, get_settings())
