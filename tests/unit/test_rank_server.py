"""The rank server (worker.rank_server, driven by worker.dist_launch): real processes, forked
ranks joining a real gloo process group around the task's store."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.dist_launch import RankServer, kill_all, launch, rank_cpus, rank_server


@pytest.fixture(scope="module")
def server() -> Iterator[RankServer]:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a Celery pool process
    try:
        started = RankServer(["tests.rank_targets"])
    finally:
        signal.signal(signal.SIGINT, previous)
    started.wait_ready()
    yield started
    started.process.kill()
    started.process.wait()


def _alive(pid: int) -> bool:
    try:  # a zombie (dead, not yet reaped) has an empty command line
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


def _wait_dead(pids: list[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, [pid for pid in pids if _alive(pid)]
        time.sleep(0.05)


def test_forked_ranks_join_one_process_group(server: RankServer, tmp_path: Path) -> None:
    ranks = launch(processes=3, job_id="job-123", attempt=2, run_dir=tmp_path, threads=1,
                   timeout=30, target="tests.rank_targets:join", args=[str(tmp_path)],
                   server=server)
    assert ranks.wait(60) == 0
    notes = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(3)]
    assert [n["sum"] for n in notes] == [6.0, 6.0, 6.0]  # 1 + 2 + 3, seen by every rank
    assert [n["pid"] for n in notes] == ranks.pids
    assert all(n["world"] == 3 and n["threads"] == "1" for n in notes)
    # `ps` names the job: the operator's view, and how the worker tells a rank from a reused pid
    assert notes[1]["title"].startswith(
        f"python -m worker.dist_entry job-123 2 {tmp_path} (rank 1 of 3)")


def test_each_rank_is_bound_to_its_own_cores(server: RankServer, tmp_path: Path) -> None:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("one core: nothing to bind to")
    share = len(cores) // 2
    assert rank_cpus(2, bind=True) == [cores[:share], cores[share:2 * share]]
    assert rank_cpus(len(cores) + 1, bind=True) == [[]] * (len(cores) + 1)  # too few cores
    assert rank_cpus(2, bind=False) == [[], []]
    ranks = launch(processes=2, job_id="j", attempt=1, run_dir=tmp_path, threads=1,
                   timeout=30, target="tests.rank_targets:join", args=[str(tmp_path)],
                   server=server)
    assert ranks.wait(60) == 0
    seen = [json.loads((tmp_path / f"rank-{r}.json").read_text())["cpus"] for r in range(2)]
    assert seen == rank_cpus(2, bind=True)


def test_every_rank_draws_its_own_random_numbers(server: RankServer, tmp_path: Path) -> None:
    """Forks share their parent's random state; an unseeded job's weights must not repeat."""
    for _ in range(2):  # two jobs of two ranks
        ranks = launch(processes=2, job_id="j", attempt=1, run_dir=tmp_path, threads=1,
                       timeout=30, target="tests.rank_targets:draw", args=[str(tmp_path)],
                       server=server)
        assert ranks.wait(30) == 0
    draws = [json.loads(p.read_text()) for p in tmp_path.glob("draw-*.json")]
    assert len(draws) == 4
    for generator in ("torch", "numpy", "random"):
        assert len({d[generator] for d in draws}) == 4, (generator, draws)


def test_the_first_failed_rank_is_reported(server: RankServer, tmp_path: Path) -> None:
    ranks = launch(processes=2, job_id="j", attempt=1, run_dir=tmp_path, threads=1,
                   timeout=30, target="tests.rank_targets:sleep", args=["60"], server=server)
    assert ranks.poll() is None
    os.kill(ranks.pids[1], signal.SIGKILL)
    assert ranks.wait(10) == -signal.SIGKILL
    assert ranks.failed == (1, -signal.SIGKILL)
    kill_all(ranks, tmp_path)  # the peer, as the supervising task does
    _wait_dead(ranks.pids)
    assert set(ranks.codes) == set(ranks.pids)


def test_exit_codes_come_back(server: RankServer, tmp_path: Path) -> None:
    ok = launch(processes=2, job_id="j", attempt=1, run_dir=tmp_path, threads=1, timeout=30,
                target="tests.rank_targets:exit_with", args=["0"], server=server)
    assert ok.wait(10) == 0
    bad = launch(processes=1, job_id="j", attempt=1, run_dir=tmp_path, threads=1, timeout=30,
                 target="tests.rank_targets:exit_with", args=["3"], server=server)
    assert bad.wait(10) == 3
    missing = launch(processes=1, job_id="j", attempt=1, run_dir=tmp_path, threads=1,
                     timeout=30, target="tests.rank_targets:no_such_function", args=[],
                     server=server)
    assert missing.wait(10) == 1  # an error in the rank's own code, printed to the log


def test_a_rank_has_python_s_own_signal_handling(server: RankServer, tmp_path: Path) -> None:
    """Even when the server inherited an ignored SIGINT (as from a Celery pool process)."""
    ranks = launch(processes=1, job_id="j", attempt=1, run_dir=tmp_path, threads=1,
                   timeout=30, target="tests.rank_targets:interruptible",
                   args=[str(tmp_path)], server=server)
    deadline = time.monotonic() + 30
    while not (tmp_path / "ready").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(ranks.pids[0], signal.SIGINT)
    assert ranks.wait(10) == 4 and (tmp_path / "interrupted").exists()


def test_ranks_die_with_their_server(tmp_path: Path) -> None:
    doomed = RankServer(["tests.rank_targets"])
    ranks = launch(processes=2, job_id="j", attempt=1, run_dir=tmp_path, threads=1,
                   timeout=30, target="tests.rank_targets:sleep", args=["60"], server=doomed)
    assert all(_alive(pid) for pid in ranks.pids)
    doomed.process.kill()
    doomed.process.wait()
    _wait_dead(ranks.pids)
    assert ranks.wait(10) == -signal.SIGKILL  # a server gone is every rank lost
    assert not doomed.alive()


def test_a_dead_server_is_started_again() -> None:
    first = rank_server(("tests.rank_targets",))
    assert rank_server() is first  # one per worker process
    first.process.kill()
    first.process.wait()
    second = rank_server(("tests.rank_targets",))
    try:
        assert second is not first and second.alive()
    finally:
        second.process.kill()
        second.process.wait()
