"""The Celery task's side of a data-parallel job: start torchrun, watch it, end it.

The task beats the job's heart and watches the launcher. A cancel (the heartbeat finds the
attempt no longer running) or the time limit kills every process of the job at once. When the
launcher exits while the attempt still runs, rank 0 did not end it, so something broke: the
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
import subprocess
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
from worker.dist_launch import command, kill_all, launch
from worker.heartbeat import Heartbeat

log = logging.getLogger("taas.worker")

POLL = 0.2  # seconds between looks at the launcher
FINISH_GRACE = 30.0  # rank 0 ended the job: time it may take to close MLflow and exit


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
    threads = max(1, torch.get_num_threads() // processes)
    launcher = launch(command(processes=processes, job_id=job_id, attempt=attempt,
                              run_dir=run_dir), threads=threads)
    log.info("job %s attempt %s: %s processes (launcher pid %s)", job_id, attempt, processes,
             launcher.pid)
    try:
        with Heartbeat(job_id, attempt, settings.heartbeat_interval) as heartbeat:
            _watch(job_id, launcher, heartbeat)
        if launcher.poll() is not None:
            _conclude(job_id, attempt, launcher.returncode, run_dir, settings)
    except SoftTimeLimitExceeded:
        kill_all(launcher, run_dir)
        if store.fail(job_id, attempt, error_type="time_limit_exceeded",
                      message="the job ran past TAAS_JOB_TIME_LIMIT and was stopped"):
            store.mark_mlflow_end_pending(job_id, "FAILED")
    finally:
        kill_all(launcher, run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)


def _refusal(processes: int, device: str, settings: Settings) -> tuple[str, str] | None:
    if device == "cuda" and processes > torch.cuda.device_count():
        return "device_unavailable", (f"distributed.processes is {processes} on device cuda, "
                                      f"but this worker has {torch.cuda.device_count()} GPUs")
    limit = max_processes(settings, "cpu" if device == "auto" else device)
    if processes > limit:
        return "invalid_spec", (f"training.distributed.processes: {processes} is more than "
                                f"this worker allows (TAAS_MAX_PROCESSES_PER_JOB = {limit})")
    return None


def _watch(job_id: str, launcher: subprocess.Popen[bytes], heartbeat: Heartbeat) -> None:
    """Until the launcher exits; a lost attempt (cancel, re-assigned) ends the processes, at
    once unless rank 0 itself ended the job (then it gets a grace to close its MLflow run)."""
    while launcher.poll() is None:
        if heartbeat.lost.is_set():
            if _status(job_id) in (JobStatus.succeeded, JobStatus.failed, JobStatus.pruned):
                _wait(launcher, FINISH_GRACE)
            return
        time.sleep(POLL)


def _wait(launcher: subprocess.Popen[bytes], seconds: float) -> None:
    try:
        launcher.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        log.warning("launcher %s did not exit %ss after the job ended", launcher.pid, seconds)


def _status(job_id: str) -> JobStatus | None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        return None if job is None else JobStatus(job.status)


def _conclude(job_id: str, attempt: int, code: int, run_dir: Path, settings: Settings) -> None:
    """The launcher exited; if the attempt still runs, rank 0 never ended it: decide."""
    if _status(job_id) != JobStatus.running:
        return
    kind, message = _diagnose(run_dir, code)
    if kind == "infrastructure" and attempt < settings.max_attempts:
        log.warning("job %s attempt %s lost a process, re-queued: %s", job_id, attempt, message)
        store.mark_mlflow_end_pending(job_id, "FAILED")
        if store.requeue(job_id, attempt, reason=message):
            with session_scope() as session:
                queue = session.get(Job, job_id).queue  # type: ignore[union-attr]
            dispatch(job_id, queue, countdown=min(60, 2 ** attempt))
        return
    if kind == "infrastructure":
        kind = "worker_lost"
    if store.fail(job_id, attempt, error_type=kind, message=message):
        store.mark_mlflow_end_pending(job_id, "FAILED")


def _diagnose(run_dir: Path, code: int) -> tuple[str, str]:
    """What broke: a rank's own error beats the errors it caused in the others (a peer that
    vanished shows as an infrastructure error in every rank still alive)."""
    notes = {}
    for path in run_dir.glob("rank-*.json"):
        note = json.loads(path.read_text())
        notes[int(note["rank"])] = note
    started = sorted(int(p.stem.split("-")[1]) for p in run_dir.glob("rank-*.pid"))
    for note in sorted(notes.values(), key=lambda n: n["rank"]):
        if note["kind"] not in ("done", "infrastructure"):
            return note["kind"], f"rank {note['rank']}: {note['type']}: {note['message']}"
    silent = [rank for rank in started if rank not in notes]
    if silent:
        return "infrastructure", (f"rank {', '.join(map(str, silent))} died without a word "
                                  f"(killed, e.g. out of memory); the launcher exited {code}")
    errors = [n for n in notes.values() if n["kind"] == "infrastructure"]
    if errors:
        first = min(errors, key=lambda n: n["rank"])
        return "infrastructure", f"rank {first['rank']}: {first['type']}: {first['message']}"
    return "infrastructure", f"the launcher exited {code} before every rank started"
