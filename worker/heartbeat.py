"""The heartbeat of a training attempt: a thread that proves the worker alive in the database.

Its write is conditional on the attempt still owning the running job, so it is also how a
worker learns of a cancel (or of being replaced): `lost` is set and training stops at the next
batch boundary, with no database query in the training loop itself.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from sqlalchemy.exc import SQLAlchemyError

from worker import store

log = logging.getLogger("taas.heartbeat")


class Heartbeat:
    def __init__(self, job_id: str, attempt: int, interval: float) -> None:
        self.job_id, self.attempt, self.interval = job_id, attempt, interval
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id[:8]}",
                                        daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not store.still_running(self.job_id, self.attempt):
                    self.lost.set()
                    return
            except SQLAlchemyError as error:  # the database is down; keep training, retry
                log.warning("heartbeat of job %s failed: %s", self.job_id, error)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
