"""Starting and stopping a data-parallel job's processes: PyTorch's elastic launcher (torchrun)
as a subprocess of the Celery task, and every process it starts.

Not `torch.multiprocessing.spawn`: Celery's prefork children are daemonic and may not have
children of their own; a subprocess that execs Python may. torchrun starts each rank in its
own session, so killing the launcher's process group alone would leave the ranks running:
each rank writes its pid into the job's run directory, and `kill_all` kills every one of them.
The launcher and the ranks also die with their parent (Linux's parent-death signal), so a
SIGKILLed Celery worker leaves none behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1
ENTRY = "worker.dist_entry"
ROOT_ARGS = ["--nnodes", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0",
             "--max-restarts", "0", "--monitor-interval", "0.2"]


def command(*, processes: int, job_id: str, attempt: int, run_dir: Path) -> list[str]:
    """torchrun on this host alone: a c10d rendezvous on 127.0.0.1, its port picked by the
    kernel (port 0: two jobs on one host never clash, and no race for a port), no restarts
    (a failed rank fails the attempt; the job rules decide what follows), a quick check of
    the ranks."""
    return [sys.executable, "-m", "torch.distributed.run", *ROOT_ARGS,
            "--nproc-per-node", str(processes), "-m", ENTRY, job_id, str(attempt), str(run_dir)]


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def launch(cmd: list[str], *, threads: int) -> subprocess.Popen[bytes]:
    """The launcher in its own process group, dying with the Celery process that starts it."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, env=env, start_new_session=True,
                            preexec_fn=die_with_parent)


def rank_pid_file(run_dir: Path, rank: int) -> Path:
    return run_dir / f"rank-{rank}.pid"


def kill_all(launcher: subprocess.Popen[bytes], run_dir: Path) -> None:
    """SIGKILL the launcher's group and every rank's session; then reap the launcher."""
    groups = [launcher.pid]
    for pid_file in run_dir.glob("rank-*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text())
            if _is_rank(pid, run_dir):
                groups.append(pid)
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        launcher.wait(timeout=10)


def _is_rank(pid: int, run_dir: Path) -> bool:
    """The pid still belongs to a rank of this job (a pid may be reused once it exited)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return not sys.platform.startswith("linux")  # no /proc: trust the pid file
    return ENTRY.encode() in cmdline and str(run_dir).encode() in cmdline


def leftovers(run_dir: Path) -> list[int]:
    """Ranks of this job still alive (for checks and tests)."""
    alive = []
    for pid_file in run_dir.glob("rank-*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text())
            if _is_rank(pid, run_dir) and Path(f"/proc/{pid}").exists():
                alive.append(pid)
    return alive
