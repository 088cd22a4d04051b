"""`python -m bench.flush_cost`: what one progress write of the worker costs (epoch rows to
Postgres, metrics to a real `mlflow server`), wall time and CPU time of the writing thread,
median of 40. The basis of TAAS_PROGRESS_INTERVAL's default (api/settings.py)."""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench import b1_training as b1
from bench.stack import Services
from dlmodels.callbacks import FitState

WRITES = 40


def main() -> None:
    from api.settings import get_settings
    from worker.callbacks import ReportProgress
    from worker.heartbeat import Heartbeat
    from worker.tracking import Tracker

    with Services() as services:
        b1._use_database(services)
        settings = get_settings()
        job_id = b1._running_job("flush-cost", WRITES)
        tracker = Tracker(tracking_uri=settings.mlflow_tracking_uri, experiment="flush-cost",
                          timeout=settings.tracking_timeout)
        case = b1.b1_loops.cases(smoke=True)[0]
        tracker.start(job_id=job_id, name="flush-cost", tenant="", attempt=1,
                      spec=b1._job_spec(case), summary_text="")
        # Not entered: no writer thread, so each flush below is timed on this thread alone.
        progress = ReportProgress(job_id=job_id, attempt=1, tracker=tracker, interval=1e9,
                                  heartbeat=Heartbeat(job_id, 1, 1e9), db_timeout=10)
        state: Any = FitState(model=None, optimizer=None, epochs=WRITES)  # type: ignore[arg-type]
        wall, cpu = [], []
        for epoch in range(1, WRITES + 1):
            progress.on_epoch_end(state, epoch, {"loss": 0.5, "accuracy": 0.9, "lr": 1e-3})
            start_wall, start_cpu = time.perf_counter(), time.thread_time()
            progress.flush(final=False)
            wall.append(time.perf_counter() - start_wall)
            cpu.append(time.thread_time() - start_cpu)
        tracker.end("FINISHED")
    print(f"one progress write: {statistics.median(wall) * 1000:.1f} ms wall, "
          f"{statistics.median(cpu) * 1000:.1f} ms CPU of the writing thread "
          f"(median of {WRITES})")


if __name__ == "__main__":
    main()
