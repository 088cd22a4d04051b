"""Worker log lines name the job they are about: `... job=<id> ...`, set by the task (or a
distributed rank) for as long as it works on that job, `job=-` elsewhere (the reaper, Celery's
own lines between tasks)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s job=%(job)s: %(message)s"

_job: ContextVar[str] = ContextVar("taas_job", default="-")


class JobFilter(logging.Filter):
    """Adds `job` to every record (a handler's filter: it sees every logger's records)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job = _job.get()
        return True


@contextmanager
def job_logging(job_id: str) -> Iterator[None]:
    token = _job.set(job_id)
    try:
        yield
    finally:
        _job.reset(token)


def configure(level: int | str = logging.INFO) -> None:
    """One stderr handler on the root logger, in FORMAT. The worker's Celery calls it instead
    of its own setup (which would also turn every print into a `celery.redirected` warning)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(JobFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
