"""The job state machine in the database, driven by hypothesis through every interleaving of
delivery, duplicate delivery, heartbeat, worker death, reaping, cancel and finish.

Runs on a real SQLite database migrated by Alembic, through the same functions the worker and
the API use (worker.store, worker.reaper, api.services.jobs).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import update

ROOT = Path(__file__).resolve().parents[2]
MAX_ATTEMPTS = 3


@pytest.fixture(scope="module", autouse=True)
def database(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("state")
    env = {**os.environ, "TAAS_DATA_DIR": str(data)}
    env.pop("TAAS_DATABASE_URL", None)
    env.pop("TAAS_BROKER_URL", None)
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=env,
                   check=True, capture_output=True)
    old = {k: os.environ.get(k) for k in ("TAAS_DATA_DIR", "TAAS_MAX_ATTEMPTS")}
    os.environ.update(TAAS_DATA_DIR=str(data), TAAS_MAX_ATTEMPTS=str(MAX_ATTEMPTS))
    _clear_caches()
    yield
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _clear_caches()


def _clear_caches() -> None:
    from api import db
    from api.queue import get_celery
    from api.settings import get_settings

    for cached in (get_settings, get_celery):
        cached.cache_clear()
    db.reset()


SUMMARY = {"input_shape": [1], "layers": [], "total_params": 0, "trainable_params": 0,
           "param_bytes": 0, "activation_bytes_per_sample": 0}


class JobLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        from api.db import session_scope
        from api.models import Job, JobStatus, new_id, utcnow

        self.job_id = new_id()
        with session_scope() as session:
            session.add(Job(id=self.job_id, name="sm", status=JobStatus.queued, spec={},
                            summary=SUMMARY, epochs=1, dispatched_at=utcnow()))
        self.alive: set[int] = set()  # attempts whose worker process still runs
        self.final: str | None = None

    def _job(self):  # type: ignore[no-untyped-def]
        from api.db import session_scope
        from api.models import Job

        with session_scope() as session:
            job = session.get(Job, self.job_id)
            session.expunge(job)
            return job

    @rule()
    def deliver(self) -> None:
        from worker import store

        before = self._job()
        attempt = store.claim(self.job_id)
        if before.status != "queued":
            assert attempt is None  # duplicate delivery or a final job: nothing changes
        if attempt is not None:
            self.alive.add(attempt)

    @rule()
    def heartbeat(self) -> None:
        from worker import store

        owners = [a for a in self.alive if store.still_running(self.job_id, a)]
        assert len(owners) <= 1

    @precondition(lambda self: bool(self.alive))
    @rule(data=st.data())
    def kill(self, data: st.DataObject) -> None:
        self.alive.discard(data.draw(st.sampled_from(sorted(self.alive))))

    @rule()
    def reap(self) -> None:
        from api.db import session_scope
        from api.models import Job, utcnow
        from api.settings import get_settings
        from worker.reaper import reap_lost_workers

        job = self._job()
        if job.status == "running" and job.attempt not in self.alive:
            with session_scope() as session:  # its heartbeat stopped long ago
                session.execute(update(Job).where(Job.id == self.job_id).values(
                    heartbeat_at=utcnow() - timedelta(hours=1)))
        reap_lost_workers(get_settings())

    @rule()
    def cancel(self) -> None:
        from api.db import get_sessionmaker
        from api.errors import Conflict
        from api.services.jobs import cancel_job

        with get_sessionmaker()() as session:
            try:
                cancel_job(session, job_id=self.job_id, tenant="")
            except Conflict:
                assert self._job().status in ("succeeded", "failed", "cancelled")

    @precondition(lambda self: bool(self.alive))
    @rule(data=st.data(), succeed=st.booleans())
    def finish(self, data: st.DataObject, succeed: bool) -> None:
        from worker import store

        attempt = data.draw(st.sampled_from(sorted(self.alive)))
        if succeed:
            store.succeed(self.job_id, attempt, weights=b"w", sha256="0" * 64)
        else:
            store.fail(self.job_id, attempt, error_type="x", message="y")
        self.alive.discard(attempt)

    @precondition(lambda self: bool(self.alive))
    @rule(data=st.data())
    def store_last_epochs(self, data: st.DataObject) -> None:
        from worker import store

        attempt = data.draw(st.sampled_from(sorted(self.alive)))
        before = self._job()
        stored = store.record_remaining(self.job_id, attempt, [{"epoch": 1, "loss": 1.0}])
        # The attempt that owns the job, while it runs or after a cancel; never a stale one.
        assert stored == (before.attempt == attempt
                          and before.status in ("running", "cancelled"))
        assert self._job().status == before.status

    @invariant()
    def final_states_never_change(self) -> None:
        status = self._job().status
        if self.final is not None:
            assert status == self.final
        elif status in ("succeeded", "failed", "cancelled"):
            self.final = status

    @invariant()
    def attempts_are_bounded(self) -> None:
        assert self._job().attempt <= MAX_ATTEMPTS

    @invariant()
    def the_event_stream_tells_every_status_change(self) -> None:
        from sqlalchemy import select

        from api.db import session_scope
        from api.models import JobEvent

        with session_scope() as session:
            statuses = [data["status"] for data in session.scalars(
                select(JobEvent.data).where(JobEvent.job_id == self.job_id,
                                            JobEvent.type == "status").order_by(JobEvent.id))]
        assert statuses[-1:] == [self._job().status] or (not statuses and
                                                         self._job().status == "queued")
        assert all(a != b for a, b in itertools.pairwise(statuses))
        finals = [s for s in statuses if s in ("succeeded", "failed", "cancelled")]
        assert len(finals) <= 1 and (not finals or statuses[-1] == finals[0])


JobLifecycle.TestCase.settings = hsettings(max_examples=60, stateful_step_count=25,
                                           deadline=None)
test_job_lifecycle = JobLifecycle.TestCase
