"""The Celery task's side of a data-parallel job: fork its ranks, watch them, end them.

The task beats the job's heart and watches the ranks. A cancel (the heartbeat finds the
attempt no longer running) or the time limit kills every process of the job at once. When a
rank fails, or all exit while the attempt still runs, rank 0 did not end it: the
ranks' notes (see worker.dist_entry) say what, and the job rules decide. A user's error (a
diverged loss, a spec that cannot train) or a bug fails the job naming the rank; a lost rank
(killed, out of memory) or an infrastructure error re-queues it, and the next attempt resumes
from the checkpoint. However it ends, no process of the job is left.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from celery.exceptions import SoftTimeLimitExceeded

from api.db import session_scope
from api.models import Job, JobStatus
from api.queue import dispatch
from api.settings import Settings
from worker import store
from worker.dist_launch import Ranks, RankServerGone, kill_all, launch
from worker.heartbeat import Heartbeat

log = logging.getLogger("taas.worker")

POLL = 0.2  # seconds between looks at the ranks
FINISH_GRACE = 30.0  # rank 0 ended the job: time it may take to close MLflow and exit
CANCEL_GRACE = 10.0  # beyond two heartbeats: rank 0 stores its last epochs, ends its run
ENDED = (JobStatus.succeeded, JobStatus.failed, JobStatus.pruned)


def max_processes(settings: Settings, device: str) -> int:
    """TAAS_MAX_PROCESSES_PER_JOB, else this host's GPUs (device cuda) or CPUs."""
    if settings.max_processes_per_job is not None:
        return settings.max_processes_per_job
    if device == "cuda":
        return torch.cuda.device_count()
    return os.cpu_count() or 1


def supervise(job_id: str, attempt: int, settings: Settings) -> None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        training = job.spec["training"]
        processes, device = int(training["distributed"]["processes"]), \
            training.get("device", "auto")
    refused = _refusal(processes, device, settings)
    if refused is not None:
        store.fail(job_id, attempt, error_type=refused[0], message=refused[1])
        return
    run_dir = Path(tempfile.mkdtemp(prefix=f"taas-{job_id[:8]}-"))
    ranks: Ranks | None = None
    try:
        ranks = launch(processes=processes, job_id=job_id, attempt=attempt, run_dir=run_dir,
                       threads=max(1, torch.get_num_threads() // processes),
                       timeout=settings.distributed_timeout,
                       bind=settings.distributed_bind_cores)
        log.info("job %s attempt %s: %s processes (pids %s)", job_id, attempt, processes,
                 ranks.pids)
        with Heartbeat(job_id, attempt, settings.heartbeat_interval) as heartbeat:
            ended = _watch(job_id, ranks, heartbeat, settings)
        if ended:
            kill_all(ranks, run_dir)  # a failed rank's peers, as torchrun would
            _conclude(job_id, attempt, ranks, run_dir, settings)
    except RankServerGone as error:
        _conclude_lost(job_id, attempt, f"could not start the ranks: {error}", settings)
    except SoftTimeLimitExceeded:  # also while waiting for a cold rank server
        if ranks is not None:
            kill_all(ranks, run_dir)
        if store.fail(job_id, attempt, error_type="time_limit_exceeded",
                      message="the job ran past TAAS_JOB_TIME_LIMIT and was stopped"):
            store.mark_mlflow_end_pending(job_id, "FAILED")
    finally:
        if ranks is not None:
            kill_all(ranks, run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)


def _refusal(processes: int, device: str, settings: Settings) -> tuple[str, str] | None:
    if device == "auto":  # as the ranks will resolve it (worker.runner.job_device)
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and processes > torch.cuda.device_count():
        return "device_unavailable", (f"distributed.processes is {processes} on device cuda, "
                                      f"but this worker has {torch.cuda.device_count()} GPUs")
    limit = max_processes(settings, device)
    if processes > limit:
        return "invalid_spec", (f"training.distributed.processes: {processes} is more than "
                                f"this worker allows (TAAS_MAX_PROCESSES_PER_JOB = {limit})")
    return None


def _watch(job_id: str, ranks: Ranks, heartbeat: Heartbeat, settings: Settings) -> bool:
    """Until a rank fails or all exit (True); a lost attempt ends the processes (False). When
    the job ended (rank 0 ended it, or a cancel that rank 0 learns of at its own next
    heartbeat) the ranks get a grace first: rank 0 stores its last epochs and ends its MLflow
    run. Re-assigned to another attempt: at once."""
    while ranks.poll() is None:
        if heartbeat.lost.is_set():
            status = _status(job_id)
            grace = FINISH_GRACE if status in ENDED else \
                2 * settings.heartbeat_interval + CANCEL_GRACE \
                if status == JobStatus.cancelled else 0.0
            if grace and ranks.wait(grace) is None:
                log.warning("job %s: ranks %s still ran %ss after the job ended", job_id,
                            ranks.pids, grace)
                if status == JobStatus.cancelled:  # rank 0 never ended its run: the reaper will
                    store.mark_mlflow_end_pending(job_id, "KILLED")
            return False
        time.sleep(POLL)
    return True


def _status(job_id: str) -> JobStatus | None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        return None if job is None else JobStatus(job.status)


def _conclude(job_id: str, attempt: int, ranks: Ranks, run_dir: Path,
              settings: Settings) -> None:
    """A rank failed or all exited; if the attempt still runs, rank 0 never ended it: decide."""
    if _status(job_id) != JobStatus.running:
        return
    kind, message = _diagnose(run_dir, ranks)
    if kind == "infrastructure":
        _conclude_lost(job_id, attempt, message, settings)
    elif store.fail(job_id, attempt, error_type=kind, message=message):
        store.mark_mlflow_end_pending(job_id, "FAILED")


def _conclude_lost(job_id: str, attempt: int, message: str, settings: Settings) -> None:
    """A process was lost, not the user's doing: re-queued while attempts remain."""
    if attempt >= settings.max_attempts:
        if store.fail(job_id, attempt, error_type="worker_lost", message=message):
            store.mark_mlflow_end_pending(job_id, "FAILED")
        return
    log.warning("job %s attempt %s lost a process, re-queued: %s", job_id, attempt, message)
    store.mark_mlflow_end_pending(job_id, "FAILED")
    if store.requeue(job_id, attempt, reason=message):
        with session_scope() as session:
            queue = session.get(Job, job_id).queue  # type: ignore[union-attr]
        dispatch(job_id, queue, countdown=min(60, 2 ** attempt))


def _diagnose(run_dir: Path, ranks: Ranks) -> tuple[str, str]:
    """What broke: a rank's own error beats the errors it caused in the others (a peer that
    vanished shows as an infrastructure error in every rank still alive)."""
    notes = {}
    for path in run_dir.glob("rank-*.json"):
        note = json.loads(path.read_text())
        notes[int(note["rank"])] = note
    for note in sorted(notes.values(), key=lambda n: n["rank"]):
        if note["kind"] not in ("done", "infrastructure"):
            return note["kind"], f"rank {note['rank']}: {note['type']}: {note['message']}"
    if ranks.failed is not None and ranks.failed[0] not in notes:
        rank, code = ranks.failed
        return "infrastructure", (f"rank {rank} died without a word (killed, e.g. out of "
                                  f"memory; exit code {code})")
    errors = [n for n in notes.values() if n["kind"] == "infrastructure"]
    if errors:
        first = min(errors, key=lambda n: n["rank"])
        return "infrastructure", f"rank {first['rank']}: {first['type']}: {first['message']}"
    return "infrastructure", "every rank exited, but rank 0 did not end the attempt"
