"""The rank server: a warm process that forks the ranks of data-parallel jobs.

`python -m worker.rank_server MODULE...` imports the given modules (a rank's code: torch,
SQLAlchemy, dlmodels, MLflow's client) once and then forks one child per rank it is asked
for. A job's start-up is then a fork and the rendezvous, not one new Python process per rank
importing torch: with torchrun's launcher and two fresh ranks that took 7 s per job on an
idle 2-core machine and up to 30 s on a busy one (B8).

Forking after `import torch` is what Celery's prefork pool already does with this worker. The
server itself never runs a torch op, starts a thread or opens a connection, so a rank inherits
no thread pool or socket it would share with its siblings.

The protocol is one JSON line each way. On stdin, one per rank: `{"target": "module:function",
"args": [...], "env": {...}, "title": ..., "cpus": [...]}` (`cpus`: the cores to bind it to).
On stdout: `{"ready": true}` once the modules are imported, `{"pid": N}` for each fork, in
order, and `{"exited": N, "code": C}` when a child ends (C is minus the signal that killed
it). A rank's own stdout goes to the server's stderr. The server dies with the process that
started it, and each rank with the server (Linux's parent-death
signal), so a SIGKILLed Celery worker leaves none behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import random
import select
import signal
import sys
import traceback
from typing import Any

PR_SET_PDEATHSIG = 1
PARENT_ENV = "TAAS_RANK_SERVER_PARENT"  # the pid that started the server


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def serve(preload: list[str]) -> None:
    die_with_parent()
    if str(os.getppid()) != os.environ.get(PARENT_ENV, str(os.getppid())):
        return  # the parent died before the line above
    # The protocol gets its own descriptor; fd 1 becomes the log, so nothing a module or a
    # rank prints can be taken for a message.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for module in preload:
        importlib.import_module(module)
    _title("taas rank server")
    # SIGCHLD wakes the loop through a pipe; no polling while idle.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    _send(out, {"ready": True})
    pending = b""
    while True:
        readable, _, _ = select.select([0, wake_r], [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
        _reap(out)
        if 0 in readable:
            chunk = os.read(0, 65536)
            if not chunk:  # the Celery process closed its end: it is gone or shutting down
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                _send(out, {"pid": _fork(json.loads(line), [wake_r, wake_w, out.fileno()])})


def _fork(request: dict[str, Any], private: list[int]) -> int:
    server = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for fd in private:  # the server's own: the wake-up pipe, the protocol
            os.close(fd)
        # As a freshly started Python process would have them (a Celery pool process, and so
        # this server, ignores SIGINT): SIGINT raises KeyboardInterrupt in the rank.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.setsid()  # its own session: killing it (and whatever it starts) spares the server
        die_with_parent()
        if os.getppid() != server:  # the server died before the line above
            raise SystemExit(1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.environ.update(request["env"])
        _reseed()
        if request.get("cpus"):
            os.sched_setaffinity(0, request["cpus"])
        _title(str(request.get("title", request["target"])))
        module, function = request["target"].split(":")
        code = int(getattr(importlib.import_module(module), function)(*request["args"]) or 0)
    except SystemExit as error:
        code = 0 if error.code is None else error.code if isinstance(error.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _reseed() -> None:
    """A fork shares its parent's random state: without this every rank of every job would
    draw the same "random" numbers (an unseeded job's initial weights, above all)."""
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()


def _reap(out: Any) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(out, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _send(out: Any, message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _title(title: str) -> None:
    """What `ps` and /proc/PID/cmdline show: a rank names its job, like a started process."""
    import setproctitle

    setproctitle.setproctitle(title)


if __name__ == "__main__":
    serve(sys.argv[1:])
