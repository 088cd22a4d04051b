"""Training callbacks that connect `fit` to the database and MLflow.

Writes are batched in time (`TAAS_PROGRESS_INTERVAL`): a slow epoch is written as soon as it
ends, a thousand tiny epochs cost a handful of writes; the last epoch is always written. They
run on a background thread, off the training loop. While the database or MLflow is briefly
down, rows and metrics stay buffered and training goes on.

Checkpoints are serialized at an epoch's end and stored by the same thread, in one transaction
with the rows not yet stored: a retried attempt resumes after the stored checkpoint, so a
checkpoint must never be ahead of the stored history.
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
from dlmodels.checkpoint import checkpoint
from dlmodels.training import History
from worker import store
from worker.heartbeat import Heartbeat
from worker.retry import with_backoff
from worker.tracking import Tracker, TrackingUnavailable

log = logging.getLogger("taas.worker")


class LostOwnership(Exception):
    """The job is no longer running this attempt (cancelled, or re-assigned)."""


class ReportProgress(Callback):
    """Epoch rows to the database and metrics to MLflow, written by a background thread so the
    training thread never waits on either; the final flush is synchronous and raises if the
    rows cannot be stored (the attempt is then re-queued like any database error). A writer
    error (ownership lost, MLflow down too long) stops training at the next batch. Use it as a
    context manager: the writer thread ends however training ends.

    It also stores the checkpoints `SaveCheckpoints` hands it (`add_checkpoint`), each with
    the rows up to its epoch."""

    def __init__(self, *, job_id: str, attempt: int, tracker: Tracker, interval: float,
                 heartbeat: Heartbeat, db_timeout: float) -> None:
        self.job_id, self.attempt = job_id, attempt
        self.tracker = tracker
        self.interval = interval
        self.heartbeat = heartbeat
        self.db_timeout = db_timeout
        # In training order: an epoch's row comes before a checkpoint taken at its end.
        self._queue: queue.SimpleQueue[tuple[int, dict[str, float]] | store.Checkpoint] = \
            queue.SimpleQueue()
        # The writer's own (the training thread's once the writer has stopped):
        self._rows: list[dict[str, Any]] = []  # drained from _queue, not yet stored
        self._drained = 0  # the last epoch drained from _queue
        self._checkpoint: store.Checkpoint | None = None  # the newest one not yet stored
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
        self._queue.put((epoch, dict(logs)))
        if time.monotonic() - self._last_flush >= self.interval:
            self._wake.set()

    def add_checkpoint(self, epoch: int, data: bytes) -> None:
        """A checkpoint taken at the end of `epoch` (after its `on_epoch_end`), to be stored by
        the writer thread: the training thread does not wait for the database."""
        self._queue.put(store.Checkpoint(epoch, data))
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
        """Drain the finished epochs to MLflow and the database, with the newest checkpoint
        (one thread at a time: the writer while training, the training thread after it
        ended)."""
        self._last_flush = time.monotonic()
        self._drain()
        self.tracker.flush(final=final)
        rows, saved = self._rows, self._ready_checkpoint()
        try:
            owned = with_backoff(
                lambda: store.record_progress(self.job_id, self.attempt, rows, saved),
                retry_on=(SQLAlchemyError,), what="record progress",
                timeout=self.db_timeout if final else 0)
        except SQLAlchemyError as error:
            if final:  # no later write: the attempt must not succeed with a gap in its history
                raise
            log.warning("progress of job %s kept for later: %s", self.job_id, error)
            return
        if not owned:  # the rows stay for `store_remaining` (a cancelled job keeps them)
            raise LostOwnership(f"job {self.job_id} attempt {self.attempt} no longer runs")
        self._rows = []
        if saved is not None:
            self._checkpoint = None

    def store_remaining(self) -> None:
        """After training stopped early (cancelled, diverged, any error): store the epochs it
        finished but had not stored yet, in MLflow and the database, so both hold the same
        history however the job ends. Best effort: the ending's own error is what matters."""
        self._stop_writer()
        self._drain()
        try:
            self.tracker.flush()
        except TrackingUnavailable as error:  # the ending says what matters
            log.warning("metrics of job %s not sent to MLflow: %s", self.job_id, error)
        try:
            stored = store.record_remaining(self.job_id, self.attempt, self._rows)
        except SQLAlchemyError as error:
            log.warning("last epochs of job %s not stored: %s", self.job_id, error)
            return
        if stored:
            self._rows = []

    def _drain(self) -> None:
        while not self._queue.empty():
            item = self._queue.get()
            if isinstance(item, store.Checkpoint):  # only the newest is worth storing
                self._checkpoint = item
                continue
            epoch, logs = item
            self._rows.append({"epoch": epoch, **logs})
            self._drained = epoch
            self.tracker.add_epoch(epoch, logs)

    def _ready_checkpoint(self) -> store.Checkpoint | None:
        """The pending checkpoint, once every row up to its epoch is stored or about to be in
        the same transaction; the next attempt would never re-run an epoch missing before it."""
        pending = self._checkpoint
        return pending if pending is not None and pending.epoch <= self._drained else None


class SaveCheckpoints(Callback):
    """Every `interval` seconds, at an epoch's end, the state a retried attempt resumes from:
    serialized here, stored by `progress`'s writer thread together with the epoch rows (a
    checkpoint that cannot be stored only costs re-done epochs)."""

    def __init__(self, *, progress: ReportProgress, interval: float) -> None:
        self.progress, self.interval = progress, interval
        self._last = time.monotonic()

    def on_epoch_end(self, state: FitState, epoch: int, logs: dict[str, float]) -> None:
        if epoch == state.epochs or time.monotonic() - self._last < self.interval:
            return
        self._last = time.monotonic()
        buffer = io.BytesIO()
        torch.save(checkpoint(state), buffer)
        self.progress.add_checkpoint(epoch, buffer.getvalue())
