"""`taas up`: the embedded default (migrations, MLflow, a Celery worker, the API) as child
processes, supervised, and stopped cleanly on Ctrl-C. Standard library only, so the CLI
starts at once."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # dlmodels imports torch: only `taas validate` pays for it, at run time
    pass

ROOT = Path(__file__).resolve().parent.parent  # the source tree: alembic.ini, migrations/, worker/
START_TIMEOUT, STOP_GRACE = 90.0, 15.0
STOP_LAST = ("mlflow",)  # the API and the worker log to MLflow until they are gone
_print_lock = threading.Lock()
# Local services only: an http_proxy in the environment must not capture the health probes.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Failure(Exception):
    """`taas up` cannot go on; the message says why."""


class Interrupted(Exception):
    """The user asked to stop (Ctrl-C, SIGTERM, SIGHUP)."""


def say(message: str, stream: IO[str] | None = None) -> None:
    """One whole line, even among the children's lines written by the reader threads."""
    with _print_lock:
        print(message, file=stream or sys.stdout, flush=True)


def _get(url: str) -> tuple[int | None, str]:
    try:
        with _opener.open(url, timeout=3) as response:
            return response.status, response.read(4000).decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read(4000).decode(errors="replace")
    except (OSError, ValueError) as error:
        return None, str(error)


class StopSignals:
    """SIGINT/SIGTERM/SIGHUP set a flag the main thread polls instead of raising wherever it is
    (a KeyboardInterrupt inside Popen could leak a child). Children run in their own sessions,
    so a terminal's Ctrl-C or hang-up reaches only taas, which then stops them in order."""

    def __init__(self) -> None:
        self.count, self.event = 0, threading.Event()
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.event.set()

    def __enter__(self) -> StopSignals:
        sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        self._old = {sig: signal.signal(sig, self._handle) for sig in sigs}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def check(self) -> None:
        if self.event.is_set():
            raise Interrupted


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    reader: threading.Thread
    log_path: Path

    def group_alive(self) -> bool:
        """Whether anything of its process group runs (the leader is reaped first: a zombie
        would count)."""
        self.proc.poll()
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def status(self) -> str:
        code = self.proc.returncode
        return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


def _pump(name: str, stream: IO[bytes], log: IO[bytes], echo: bool) -> None:
    prefix = f"[{name}]".ljust(9)
    with log:
        for raw in iter(stream.readline, b""):
            log.write(raw)
            log.flush()
            if echo:
                try:
                    say(prefix + raw.decode(errors="replace").rstrip())
                except (OSError, ValueError):  # our stdout went away; keep draining the pipe
                    echo = False


class Supervisor:
    """Starts `python -m ...` children, each in its own process group, and stops them."""

    def __init__(self, env: dict[str, str], log_dir: Path, quiet: bool,
                 stop: StopSignals) -> None:
        self.env, self.log_dir, self.quiet, self.stop = env, log_dir, quiet, stop
        self.children: list[Child] = []

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Child:
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("ab")
        proc = subprocess.Popen(  # `-m` works from a venv that is not on PATH
            [sys.executable, "-m", *args], cwd=ROOT, env=(env or {}) | self.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        assert proc.stdout is not None
        reader = threading.Thread(target=_pump, args=(name, proc.stdout, log, not self.quiet),
                                  daemon=True)
        reader.start()
        self.children.append(Child(name, proc, reader, log_path))
        return self.children[-1]

    def run(self, name: str, args: list[str]) -> None:
        """A one-shot child (migrations), waited for while Ctrl-C stays possible."""
        child = self.start(name, args)
        while child.proc.poll() is None:
            self.stop.check()
            self.stop.event.wait(0.2)
        child.reader.join(timeout=5)
        self.children.remove(child)
        if child.proc.returncode != 0:
            raise Failure(f"{name} failed ({child.status()}); output in {child.log_path}")

    def check_alive(self) -> None:
        for child in self.children:
            if child.proc.poll() is not None:
                raise Failure(f"{child.name} exited on its own ({child.status()}); "
                              f"output in {child.log_path}")

    def wait_http(self, what: str, url: str) -> None:
        """Until `url` answers 200, a child dies, the user stops, or START_TIMEOUT passes."""
        say(f"taas: waiting for {what} at {url} ...")
        deadline, last = time.monotonic() + START_TIMEOUT, "no answer"
        while time.monotonic() < deadline:
            self.stop.check()
            self.check_alive()
            status, body = _get(url)
            if status == 200:
                return
            last = f"{status} {body}" if status is not None else body
            self.stop.event.wait(0.5)
        raise Failure(f"{what} did not answer {url} within {START_TIMEOUT:.0f} s "
                      f"(last: {last.strip()}); logs are in {self.log_dir}")

    def stop_all(self) -> None:
        """SIGTERM, then SIGKILL after STOP_GRACE in all (MLflow, stopped last, gets at least a
        few seconds); one more Ctrl-C skips the wait."""
        first = [c for c in self.children if c.name not in STOP_LAST]
        last = [c for c in self.children if c.name in STOP_LAST]
        deadline, hurry_at = time.monotonic() + STOP_GRACE, self.stop.count + 1
        for group in (first, last):
            self._terminate(group, max(deadline, time.monotonic() + 3), hurry_at)
        self.children.clear()

    def _terminate(self, group: list[Child], deadline: float, hurry_at: int) -> None:
        for child in group:
            # The leader alone: celery, uvicorn and mlflow each stop their own subprocesses (a
            # group-wide SIGTERM makes celery log its pool child as lost); leftovers get SIGKILL.
            child.proc.send_signal(signal.SIGTERM)
        while time.monotonic() < deadline and self.stop.count < hurry_at:
            if not any(child.group_alive() for child in group):
                break
            time.sleep(0.1)
        for child in group:
            if child.group_alive():  # the leader, or grandchildren it left behind
                say(f"taas: {child.name} did not stop in time; killing it", sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait()
            child.reader.join(timeout=2)


@dataclass
class Plan:
    args: argparse.Namespace
    data_dir: Path
    api_url: str
    mlflow_url: str
    start_mlflow: bool
    env: dict[str, str]


def _url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):  # a wildcard listens everywhere; clients use loopback
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _check_port(host: str, port: int, what: str) -> None:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise Failure(f"cannot use --host {host}: {error}") from None
    with socket.socket(family, kind, proto) as sock:
        # As uvicorn and mlflow do, so a port whose old connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as error:
            raise Failure(f"{what} port {port} on {host} is not available ({error.strerror}); "
                          f"stop whatever uses it or pick another port") from None


def _plan(args: argparse.Namespace) -> Plan:
    if not (ROOT / "alembic.ini").is_file():
        raise Failure(f"alembic.ini not found in {ROOT}: `taas up` runs from a source checkout")
    external = os.environ.get("TAAS_MLFLOW_TRACKING_URI")
    if not external and args.port == args.mlflow_port:
        raise Failure("--port and --mlflow-port must differ")
    _check_port(args.host, args.port, "API")
    if not external:
        _check_port(args.host, args.mlflow_port, "MLflow")
    data_dir = Path(args.data_dir).expanduser().resolve()
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    mlflow_url = external or _url(args.host, args.mlflow_port)
    # TAAS_DATABASE_URL / TAAS_BROKER_URL pass through; unset, settings default to SQLite.
    env = os.environ | {"TAAS_DATA_DIR": str(data_dir), "TAAS_MLFLOW_TRACKING_URI": mlflow_url,
                        "PYTHONUNBUFFERED": "1"}
    return Plan(args, data_dir, _url(args.host, args.port), mlflow_url, not external, env)


WEBHOOK_WORKER = ["celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO",
                  "--queues", "webhooks", "--pool", "threads", "--concurrency", "4",
                  "--hostname", "webhooks@%h"]


def _start_stack(sup: Supervisor, plan: Plan) -> None:
    args, data = plan.args, plan.data_dir
    sup.run("alembic", ["alembic", "upgrade", "head"])
    if plan.start_mlflow:
        sup.start("mlflow", [
            "mlflow", "server", "--backend-store-uri", f"sqlite:///{data / 'mlflow.db'}",
            "--artifacts-destination", str(data / "mlartifacts"),
            "--host", args.host, "--port", str(args.mlflow_port),
            "--workers", "1"],  # its default 4 triple the start-up time; one serves one user
            # Its job runner (7 huey processes) serves GenAI features taas does not use and
            # doubles start and stop times; the user's own setting in the environment wins.
            {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        sup.wait_http("MLflow", f"{plan.mlflow_url}/health")
    sup.start("worker", ["celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO",
                         "--concurrency", str(args.workers), "--exclude-queues", "webhooks"])
    # Deliveries have their own worker (threads: they wait on the network, not the CPU), so a
    # job's webhook never waits behind a training that holds the only process.
    sup.start("webhooks", WEBHOOK_WORKER)
    sup.start("api", ["uvicorn", "api.main:app", "--host", args.host, "--port", str(args.port)])
    sup.wait_http("the API", f"{plan.api_url}/readyz")


def _started(plan: Plan) -> list[str]:
    """The processes `_start_stack` starts, each logging to logs/<name>.log."""
    return [*(["mlflow"] if plan.start_mlflow else []), "worker", "webhooks", "api"]


def _announce(plan: Plan) -> None:
    ui = os.environ.get("TAAS_MLFLOW_UI_URL") or plan.mlflow_url
    say("\n".join([
        "taas is up:", f"  API:       {plan.api_url}", f"  API docs:  {plan.api_url}/docs",
        f"  MLflow UI: {ui.rstrip('/')}", f"  data:      {plan.data_dir}",
        # The real folder, in full: "logs/" read as relative to where the user stands.
        f"  logs:      {plan.data_dir / 'logs'} "
        f"({', '.join(f'{name}.log' for name in _started(plan))})",
        f"Stop with Ctrl-C (or: kill {os.getpid()})."]))


def cmd_up(args: argparse.Namespace) -> int:
    try:
        plan = _plan(args)
    except Failure as error:
        say(f"taas: {error}", sys.stderr)
        return 1
    with StopSignals() as stop:
        sup = Supervisor(plan.env, plan.data_dir / "logs", args.quiet, stop)
        try:
            _start_stack(sup, plan)
            _announce(plan)
            while not stop.event.wait(0.5):
                sup.check_alive()
            return 0
        except Interrupted:
            return 0
        except Failure as error:
            say(f"taas: {error}", sys.stderr)
            return 1
        finally:
            say("taas: stopping (Ctrl-C again to kill at once) ...")
            sup.stop_all()
            say("taas: stopped")
