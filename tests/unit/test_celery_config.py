"""Celery is set up for long training tasks; these settings are what keep jobs from being lost."""

from __future__ import annotations

from api.queue import TRAIN_TASK, make_celery
from api.settings import Settings


def test_long_task_settings() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:6379/0", job_time_limit=3600)
    conf = make_celery(settings).conf
    assert conf.task_acks_late is True  # a task is acked after it ran, not when received
    assert conf.task_reject_on_worker_lost is True  # a killed child's message is re-queued
    assert conf.worker_prefetch_multiplier == 1  # one job reserved per process
    assert conf.task_serializer == "json" and list(conf.accept_content) == ["json"]
    assert conf.task_soft_time_limit == 3600
    assert conf.task_time_limit > conf.task_soft_time_limit
    # Redis re-delivers unacked messages after the visibility timeout: it must outlast a job.
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.task_default_queue == "cpu"


def test_the_embedded_broker_gets_no_engine_options(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conf = make_celery(Settings(data_dir=tmp_path)).conf
    assert conf.broker_url.startswith("sqla+sqlite:///")
    assert conf.broker_transport_options == {}


def test_the_worker_consumes_cpu_and_registers_the_task() -> None:
    from worker.celery_app import app

    assert "cpu" in {queue.name for queue in app.conf.task_queues}
    app.loader.import_default_modules()
    assert TRAIN_TASK in app.tasks
