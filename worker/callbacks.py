"""The training callback that reports progress to the database and metrics to MLflow.

Writes are batched in time (`TAAS_PROGRESS_INTERVAL`): a slow epoch is written as soon as it
ends, a thousand tiny epochs cost a handful of writes; the last epoch is always written.
"""

from __future__ import annotations

import time
from typing import Any

from dlmodels.callbacks import Callback, FitState
from dlmodels.training import History
from worker import store
from worker.tracking import Tracker


class LostOwnership(Exception):
    """The job is no longer running this attempt (cancelled, or re-assigned)."""


class ReportProgress(Callback):
    def __init__(self, *, job_id: str, attempt: int, tracker: Tracker, interval: float) -> None:
        self.job_id, self.attempt = job_id, attempt
        self.tracker = tracker
        self.interval = interval
        self._rows: list[dict[str, Any]] = []
        self._last_flush = self._last_check = time.monotonic()
        self.check_interval = max(interval, 0.25)

    def on_batch_end(self, state: FitState, batch: int) -> None:
        # One clock read per batch; the database is asked at most once per interval, so a
        # cancel stops a long epoch at a batch boundary without a query per batch.
        now = time.monotonic()
        if now - self._last_check >= self.check_interval:
            self._last_check = now
            if not store.still_running(self.job_id, self.attempt):
                raise LostOwnership(f"job {self.job_id} attempt {self.attempt} was cancelled "
                                    "or re-assigned")

    def on_epoch_end(self, state: FitState, epoch: int, logs: dict[str, float]) -> None:
        self._rows.append({"epoch": epoch, **logs})
        self.tracker.add_epoch(epoch, logs)
        if epoch == state.epochs or time.monotonic() - self._last_flush >= self.interval:
            self.flush()

    def on_train_end(self, state: FitState, history: History) -> None:
        self.flush()

    def flush(self) -> None:
        rows, self._rows = self._rows, []
        self._last_flush = self._last_check = time.monotonic()  # the write below is a check
        if rows:
            self.tracker.flush()
        if not store.record_epochs(self.job_id, self.attempt, rows):
            raise LostOwnership(f"job {self.job_id} attempt {self.attempt} no longer runs")
