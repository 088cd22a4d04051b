"""Starting and stopping a data-parallel job's processes, from the Celery process that runs it.

The ranks are forked by this process's rank server (worker.rank_server), which has had their
code imported since the worker process started, so a job starts in a fraction of a second.
The rendezvous is a TCPStore this process hosts on a port the kernel picks (two jobs on one
host never clash, no race for a port); every rank joins it as a client, as under torchrun's
agent (`TORCHELASTIC_USE_AGENT_STORE`). The first rank to fail ends the attempt and the
others are killed, as torchrun does; there are no restarts (the job rules decide).

Each rank runs in its own session and writes its pid into the job's run directory; `kill_all`
kills every one of them. The server dies with this process and the ranks with the server
(Linux's parent-death signal), so a SIGKILLed Celery worker leaves none behind.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from torch.distributed import TCPStore

from worker.rank_server import PARENT_ENV, die_with_parent

ENTRY = "worker.dist_entry"
READY_TIMEOUT = 300.0  # the server's imports, on a busy machine
REPLY_TIMEOUT = 60.0  # a fork


class RankServerGone(RuntimeError):
    """The rank server exited (killed, out of memory): an infrastructure error."""


class RankServer:
    """A rank server started by this process (from its main thread: the parent-death signal
    follows the thread that started it), and what it reports."""

    def __init__(self, preload: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker.rank_server", *preload], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent,
            env={**os.environ, PARENT_ENV: str(os.getpid())})
        self._changed = threading.Condition()
        self._ready = self._closed = False
        self._forked: deque[int] = deque()
        self._exits: dict[int, int] = {}
        self._launching = threading.Lock()
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True,
                         name="rank-server").start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            try:
                message = json.loads(line)
            except ValueError:  # not the protocol: this server cannot be trusted any more
                self.process.kill()
                break
            with self._changed:
                if "ready" in message:
                    self._ready = True
                elif "pid" in message:
                    self._forked.append(int(message["pid"]))
                else:
                    self._exits[int(message["exited"])] = int(message["code"])
                self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def alive(self) -> bool:
        return self.process.poll() is None and not self._closed

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self._ready or self._closed, timeout):
                raise RankServerGone(f"the rank server was not ready after {timeout:g} s")
            if self._closed:
                raise RankServerGone(f"the rank server exited ({self.process.poll()})")

    def fork(self, requests: list[dict[str, Any]]) -> list[int]:
        """One child per request, in order; their pids."""
        self.wait_ready()
        payload = "".join(json.dumps(request) + "\n" for request in requests).encode()
        with self._launching:
            assert self.process.stdin is not None
            try:
                self.process.stdin.write(payload)
                self.process.stdin.flush()
            except OSError as error:
                raise RankServerGone(f"the rank server exited: {error}") from error
            pids = []
            with self._changed:
                for _ in requests:
                    if not self._changed.wait_for(lambda: self._forked or self._closed,
                                                  REPLY_TIMEOUT) or not self._forked:
                        self.process.kill()  # its late answers must not reach another job
                        raise RankServerGone("the rank server stopped answering")
                    pids.append(self._forked.popleft())
        return pids

    def exit_code(self, pid: int) -> int | None:
        """The child's exit code (minus a signal's number), once it ended."""
        with self._changed:
            if pid in self._exits:
                return self._exits.pop(pid)
            return -signal.SIGKILL if self._closed else None  # gone with the server


_server: RankServer | None = None


def rank_server(preload: tuple[str, ...] = (ENTRY,)) -> RankServer:
    """This process's rank server, started (or started again, if it died) on first use."""
    global _server
    if _server is None or not _server.alive():
        _server = RankServer(list(preload))
    return _server


@dataclass
class Ranks:
    """A job's running ranks, as forked by the rank server."""

    server: RankServer
    pids: list[int]
    store: TCPStore  # the rendezvous: it must live as long as the ranks
    codes: dict[int, int] = field(default_factory=dict)
    failed: tuple[int, int] | None = None  # the first rank seen failing, and its exit code

    def poll(self) -> int | None:
        """None while the ranks run; the first failed rank's code; 0 once all ended well."""
        for rank, pid in enumerate(self.pids):
            if pid not in self.codes and (code := self.server.exit_code(pid)) is not None:
                self.codes[pid] = code
                if code != 0 and self.failed is None:
                    self.failed = (rank, code)
        if self.failed is not None:
            return self.failed[1]
        return 0 if len(self.codes) == len(self.pids) else None

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return code


def rank_cpus(processes: int, bind: bool) -> list[list[int]]:
    """Each rank's own share of the cores this process may use (rank r: the r-th k of them,
    as `mpirun --bind-to core` does), or none when not binding or too few cores. On a shared
    2-core host a rank that the scheduler moves between cores makes the gradient all-reduce
    wait for it: bound, its median fell from 0.8-2.3 ms to 0.45 ms a step (B8's MLP)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not bind or processes > len(cores):
        return [[] for _ in range(processes)]
    share = len(cores) // processes
    return [cores[rank * share:(rank + 1) * share] for rank in range(processes)]


def launch(*, processes: int, job_id: str, attempt: int, run_dir: Path, threads: int,
           timeout: float, bind: bool = True, target: str = f"{ENTRY}:run",
           args: list[str] | None = None, server: RankServer | None = None) -> Ranks:
    """Fork `processes` ranks of `target(*args)` around a fresh rendezvous store."""
    server = server or rank_server()
    cpus = rank_cpus(processes, bind)
    store = TCPStore("127.0.0.1", 0, world_size=processes, is_master=True,
                     wait_for_workers=False, timeout=datetime.timedelta(seconds=timeout))
    common = {"WORLD_SIZE": str(processes), "LOCAL_WORLD_SIZE": str(processes),
              "GROUP_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port),
              "TORCHELASTIC_USE_AGENT_STORE": "True", "OMP_NUM_THREADS": str(threads),
              "PYTHONUNBUFFERED": "1"}
    args = [job_id, str(attempt), str(run_dir)] if args is None else args
    requests: list[dict[str, Any]] = [{"target": target, "args": args,
        "env": {**common, "RANK": str(rank), "LOCAL_RANK": str(rank)}, "cpus": cpus[rank],
        "title": f"python -m {ENTRY} {job_id} {attempt} {run_dir} (rank {rank} of {processes})"}
        for rank in range(processes)]
    return Ranks(server=server, pids=server.fork(requests), store=store)


def rank_pid_file(run_dir: Path, rank: int) -> Path:
    return run_dir / f"rank-{rank}.pid"


def kill_all(ranks: Ranks, run_dir: Path) -> None:
    """SIGKILL every rank's session; then wait (bounded) until the server has reaped them."""
    sessions = {pid for pid in ranks.pids if pid not in ranks.codes}  # reaped: maybe reused
    for pid_file in run_dir.glob("rank-*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text())
            if _is_rank(pid, run_dir):
                sessions.add(pid)
    for session in sessions:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(session, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(session, signal.SIGKILL)  # forked a moment ago: maybe not a session yet
    deadline = time.monotonic() + 10
    while len(ranks.codes) < len(ranks.pids) and time.monotonic() < deadline:
        ranks.poll()
        time.sleep(0.02)


def _is_rank(pid: int, run_dir: Path) -> bool:
    """The pid still belongs to a rank of this job (a pid may be reused once it exited)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return not sys.platform.startswith("linux")  # no /proc: trust the pid file
    return ENTRY.encode() in cmdline and str(run_dir).encode() in cmdline

