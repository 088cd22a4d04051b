"""Training callbacks that connect `fit` to the database and MLflow.

Writes are batched in time (`TAAS_PROGRESS_INTERVAL`): a slow epoch is written as soon as it
ends, a thousand tiny epochs cost a handful of writes; the last epoch is always written. While
the database or MLflow is briefly down, rows and metrics stay buffered and training goes on.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import torch
from sqlalchemy.exc import SQLAlchemyError

from dlmodels.callbacks import Callback, FitState
from dlmodels.serialize import sha256
from dlmodels.training import History, checkpoint
from worker import store
from worker.heartbeat import Heartbeat
from worker.retry import with_backoff
from worker.tracking import Tracker

log = logging.getLogger("taas.worker")


class LostOwnership(Exception):
    """The job is no longer running this attempt (cancelled, or re-assigned)."""


class ReportProgress(Callback):
    def __init__(self, *, job_id: str, attempt: int, tracker: Tracker, interval: float,
                 heartbeat: Heartbeat, db_timeout: float) -> None:
        self.job_id, self.attempt = job_id, attempt
        self.tracker = tracker
        self.interval = interval
        self.heartbeat = heartbeat
        self.db_timeout = db_timeout
        self._rows: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()

    def on_batch_end(self, state: FitState, batch: int) -> None:
        # The heartbeat thread asks the database; the loop only reads a flag.
        if self.heartbeat.lost.is_set():
            raise LostOwnership(f"job {self.job_id} attempt {self.attempt} was cancelled or "
                                "re-assigned")

    def on_epoch_end(self, state: FitState, epoch: int, logs: dict[str, float]) -> None:
        self._rows.append({"epoch": epoch, **logs})
        self.tracker.add_epoch(epoch, logs)
        if epoch == state.epochs or time.monotonic() - self._last_flush >= self.interval:
            self.flush(final=False)

    def on_train_end(self, state: FitState, history: History) -> None:
        self.flush(final=True)

    def flush(self, *, final: bool) -> None:
        self._last_flush = time.monotonic()
        self.tracker.flush(final=final)
        rows = self._rows
        try:
            owned = with_backoff(lambda: store.record_epochs(self.job_id, self.attempt, rows),
                                 retry_on=(SQLAlchemyError,), what="record progress",
                                 timeout=self.db_timeout if final else 0)
        except SQLAlchemyError as error:
            log.warning("progress of job %s kept for later: %s", self.job_id, error)
            return
        self._rows = []
        if not owned:
            raise LostOwnership(f"job {self.job_id} attempt {self.attempt} no longer runs")


class SaveCheckpoints(Callback):
    """Every `interval` seconds, at an epoch's end, the state a retried attempt resumes from."""

    def __init__(self, *, job_id: str, attempt: int, interval: float) -> None:
        self.job_id, self.attempt, self.interval = job_id, attempt, interval
        self._last = time.monotonic()

    def on_epoch_end(self, state: FitState, epoch: int, logs: dict[str, float]) -> None:
        if epoch == state.epochs or time.monotonic() - self._last < self.interval:
            return
        self._last = time.monotonic()
        buffer = io.BytesIO()
        torch.save(checkpoint(state), buffer)
        data = buffer.getvalue()
        try:
            store.save_checkpoint(self.job_id, self.attempt, epoch=epoch, data=data,
                                  sha256=sha256(data))
        except SQLAlchemyError as error:  # a missed checkpoint only costs re-done epochs
            log.warning("checkpoint of job %s skipped: %s", self.job_id, error)
