"""The Celery app: `celery -A worker.celery_app worker`.

The worker consumes `cpu` and `webhooks`, and `gpu` too when this host has CUDA. Each worker
process sets torch's threads to its share of the cores, so N processes on N cores never run
N x N threads.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from celery.signals import (
    setup_logging,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)
from kombu import Exchange, Queue

from api.db import get_engine
from api.queue import WEBHOOK_QUEUE, make_celery
from api.settings import get_settings
from worker.dist_launch import rank_server
from worker.logs import configure
from worker.reaper import Reaper

app = make_celery(get_settings())
# A queue declared without an exchange would be bound to the default one with the default
# queue's routing key, and receive a copy of every training message.
app.conf.task_queues = [Queue("cpu"),
                        Queue(WEBHOOK_QUEUE, Exchange(WEBHOOK_QUEUE), routing_key=WEBHOOK_QUEUE),
                        *([Queue("gpu")] if torch.cuda.is_available() else [])]
app.conf.include = ["worker.tasks"]

_processes = 1


@setup_logging.connect
def _setup_logging(loglevel: int | None = None, **_: Any) -> None:
    """Our log format (with the job id) instead of Celery's; stdout is not redirected."""
    configure(loglevel or logging.INFO)


@worker_init.connect
def _remember_concurrency(sender: Any = None, **_: Any) -> None:
    global _processes
    _processes = max(1, int(getattr(sender, "concurrency", 1) or 1))
    _set_threads()  # a solo pool trains in this process; prefork children set theirs below


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # A forked pool process must not share the parent's database connections (the reaper
    # uses them): a shared psycopg connection hangs both. Fresh ones are opened on demand.
    get_engine().dispose(close=False)
    _set_threads()
    if get_settings().distributed_warm:
        rank_server()  # importing in its own process: this one is free for tasks at once


def _set_threads() -> None:
    threads = get_settings().worker_threads or max(1, (os.cpu_count() or 1) // _processes)
    torch.set_num_threads(threads)
    logging.getLogger("taas").setLevel(logging.INFO)


_reaper: Reaper | None = None


@worker_ready.connect
def _start_reaper(**_: Any) -> None:
    """The reaper runs in the worker's main process: no extra process to remember."""
    global _reaper
    _reaper = Reaper(get_settings())
    _reaper.start()


@worker_shutdown.connect
def _stop_reaper(**_: Any) -> None:
    if _reaper is not None:
        _reaper.stopped.set()
