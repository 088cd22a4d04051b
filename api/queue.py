"""The Celery app's configuration, shared by the API (which only sends) and the worker.

Long training tasks need: acks after the task finishes (a lost worker's job is redelivered),
one message prefetched at a time, JSON messages that carry just a job id, and a Redis
visibility timeout longer than the longest task.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from api.settings import Settings, get_settings

TRAIN_TASK = "taas.train_job"
SWEEP_TASK = "taas.sweep_step"
QUEUES = ("cpu", "gpu")


def make_celery(settings: Settings) -> Celery:
    app = Celery("taas", broker=settings.resolved_broker_url)
    transport: dict[str, object] = {}
    if settings.resolved_broker_url.startswith("redis"):
        # Redis re-delivers an unacked message after this; it must outlast the longest job.
        transport["visibility_timeout"] = settings.job_time_limit + 3600
    elif settings.resolved_broker_url.startswith("sqla+"):
        # kombu hands the SQLAlchemy transport's options to create_engine, so none are set
        # (it polls its table every second).
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    app.conf.update(
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_ignore_result=True, task_acks_late=True, task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1, task_default_queue="cpu",
        task_time_limit=settings.job_time_limit + 60,
        task_soft_time_limit=settings.job_time_limit, broker_transport_options=transport,
        broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0,
                                   "interval_step": 0.5, "interval_max": 1},
    )
    return app


@lru_cache
def get_celery() -> Celery:
    return make_celery(get_settings())


def dispatch(job_id: str, queue: str, countdown: float | None = None) -> None:
    """Send the job id (only the id: the worker re-reads the row) to the queue."""
    get_celery().send_task(TRAIN_TASK, args=[job_id], queue=queue, countdown=countdown)


DELIVER_TASK = "taas.deliver_webhook"
# Deliveries have a queue of their own, so a worker can be given to them alone
# (`celery -A worker.celery_app worker -Q webhooks`) and never wait behind training.
WEBHOOK_QUEUE = "webhooks"


def dispatch_delivery(delivery_id: str, countdown: float | None = None) -> None:
    """Send a webhook delivery's id to its queue (the worker re-reads the row)."""
    get_celery().send_task(DELIVER_TASK, args=[delivery_id], queue=WEBHOOK_QUEUE,
                           countdown=countdown)
def dispatch_sweep_step(sweep_id: str) -> None:
    """Ask a worker for a turn of the sweep's controller (duplicates are harmless)."""
    get_celery().send_task(SWEEP_TASK, args=[sweep_id], queue="cpu")
