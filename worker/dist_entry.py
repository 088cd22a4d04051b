"""One rank of a data-parallel job, as the rank server forks it: `run(JOB, ATTEMPT, RUN_DIR)`
(see worker.dist_launch), its place in the job in its environment (RANK, WORLD_SIZE, ...).

Rank 0 runs the attempt as a one-process job would (progress, heartbeats, checkpoints, MLflow,
the stored weights, which are the plain model's, without the DDP wrapper); the other ranks only
train. Each rank leaves a note in RUN_DIR for the supervising Celery task: its pid at start
(so every rank can be killed), then `done`, or its error and the error's kind. A rank that
leaves neither died (SIGKILL, OOM).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import torch

from api.db import session_scope
from api.models import Job
from api.services.data import check_job
from api.settings import Settings, get_settings
from dlmodels.builder import build_model
from dlmodels.distributed import DataParallel
from dlmodels.spec import JobSpec
from dlmodels.training import fit
from worker.dist_launch import rank_pid_file
from worker.logs import configure, job_logging
from worker.runner import error_kind, job_device, resume_state, run_attempt

log = logging.getLogger("taas.worker")


def run(job_id: str, attempt: str, run_dir: str) -> int:
    """A forked rank's life: the worker's log format with the job's id, its share of the
    cores (the server never ran a torch op, so its thread pool is still unset), the job."""
    configure(logging.INFO)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    with job_logging(job_id):
        return main(job_id, int(attempt), Path(run_dir))


def main(job_id: str, attempt: int, run_dir: Path) -> int:
    rank = int(os.environ["RANK"])
    rank_pid_file(run_dir, rank).write_text(str(os.getpid()))
    settings = get_settings()
    strategy: DataParallel | None = None
    try:
        spec = _spec(job_id)
        strategy = DataParallel.start(device=job_device(spec, None).type,
                                      timeout=settings.distributed_timeout)
        if rank == 0:
            run_attempt(job_id, attempt, settings, strategy)
        else:
            _train(job_id, attempt, spec, settings, strategy)
    except BaseException as error:
        _note(run_dir, rank, {"rank": rank, "kind": error_kind(error) if isinstance(
            error, Exception) else "infrastructure", "type": type(error).__name__,
            "message": str(error)[:2000]})
        log.exception("rank %s of job %s failed", rank, job_id)
        return 1
    finally:
        DataParallel.stop()
    _note(run_dir, rank, {"rank": rank, "kind": "done"})
    return 0


def _spec(job_id: str) -> JobSpec:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return JobSpec.model_validate(job.spec)


def _train(job_id: str, attempt: int, spec: JobSpec, settings: Settings,
           strategy: DataParallel) -> None:
    """A rank other than 0: the same data, model and resume point as rank 0, no reporting."""
    del settings
    device = job_device(spec, strategy)
    with session_scope() as session:
        tenant = session.get(Job, job_id).tenant  # type: ignore[union-attr]
        _, (x, y) = check_job(spec, session=session, tenant=tenant)
    if spec.training.seed is not None:
        torch.manual_seed(spec.training.seed)
    model = build_model(spec.model, loss=spec.training.loss,
                        standardize=spec.training.standardize)
    fit(model, x, y, spec.training, device=device, resume=resume_state(job_id, attempt),
        strategy=strategy)


def _note(run_dir: Path, rank: int, note: dict[str, object]) -> None:
    (run_dir / f"rank-{rank}.json").write_text(json.dumps(note))


if __name__ == "__main__":  # under torchrun, as a multi-node launcher would start it
    sys.exit(run(*sys.argv[1:4]))
