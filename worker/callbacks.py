"""Training callbacks that connect `fit` to the database and MLflow.

Writes are batched in time (`TAAS_PROGRESS_INTERVAL`): a slow epoch is written as soon as it
ends, a thousand tiny epochs cost a handful of writes; the last epoch is always written. They
run on a background thread, off the training loop. While the database or MLflow is briefly
down, rows and metrics stay buffered and training goes on.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
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
    """Epoch rows to the database and metrics to MLflow, written by a background thread so the
    training thread never waits on either; the final flush is synchronous and raises if the
    rows cannot be stored (the attempt is then re-queued like any database error). A writer
    error (ownership lost, MLflow down too long) stops training at the next batch. Use it as a
    context manager: the writer thread ends however training ends."""

    def __init__(self, *, job_id: str, attempt: int, tracker: Tracker, interval: float,
                 heartbeat: Heartbeat, db_timeout: float) -> None:
        self.job_id, self.attempt = job_id, attempt
        self.tracker = tracker
        self.interval = interval
        self.heartbeat = heartbeat
        self.db_timeout = db_timeout
        self._epochs: queue.SimpleQueue[tuple[int, dict[str, float]]] = queue.SimpleQueue()
        self._rows: list[dict[str, Any]] = []  # drained from _epochs, not yet stored
        self._last_flush = time.monotonic()
        self._wake = threading.Event()
        self._closing = False
        self._failure: Exception | None = None
        self._writer = threading.Thread(target=self._write, name=f"progress-{job_id[:8]}",
                                        daemon=True)

    def __enter__(self) -> ReportProgress:
        self._writer.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop_writer()

    def _stop_writer(self) -> None:
        self._closing = True
        self._wake.set()
        if self._writer.is_alive():
            self._writer.join()

    def _check(self) -> None:
        # The heartbeat and writer threads talk to the database; the loop only reads flags.
        if self.heartbeat.lost.is_set():
            raise LostOwnership(f"job {self.job_id} attempt {self.attempt} was cancelled or "
                                "re-assigned")
        if self._failure is not None:
            raise self._failure

    def on_batch_end(self, state: FitState, batch: int) -> None:
        self._check()

    def on_epoch_end(self, state: FitState, epoch: int, logs: dict[str, float]) -> None:
        self._check()
        self._epochs.put((epoch, dict(logs)))
        if time.monotonic() - self._last_flush >= self.interval:
            self._wake.set()

    def on_train_end(self, state: FitState, history: History) -> None:
        self._stop_writer()
        if self._failure is not None:
            raise self._failure
        self.flush(final=True)

    def _write(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            try:
                self.flush(final=False)
            except Exception as error:  # raised in the training thread at its next batch
                self._failure = error
                return

    def flush(self, *, final: bool) -> None:
        """Drain the finished epochs to MLflow and the database (one thread at a time: the
        writer while training, the training thread after it ended)."""
        self._last_flush = time.monotonic()
        while not self._epochs.empty():
            epoch, logs = self._epochs.get()
            self._rows.append({"epoch": epoch, **logs})
            self.tracker.add_epoch(epoch, logs)
        self.tracker.flush(final=final)
        rows = self._rows
        try:
            owned = with_backoff(lambda: store.record_epochs(self.job_id, self.attempt, rows),
                                 retry_on=(SQLAlchemyError,), what="record progress",
                                 timeout=self.db_timeout if final else 0)
        except SQLAlchemyError as error:
            if final:  # no later write: the attempt must not succeed with a gap in its history
                raise
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
