"""The `taas` command line, run as real processes: `validate` on good and bad specs, and one
`taas up` that starts the whole embedded stack and stops it with Ctrl-C."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.schemas import HEIGHTS_EXAMPLE

ROOT = Path(__file__).resolve().parents[1]

HEIGHTS = HEIGHTS_EXAMPLE  # the README's example (read-only here)


def taas(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=60)


def write(tmp_path: Path, spec: dict[str, Any]) -> str:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return str(path)


def test_validate_heights_prints_the_summary(tmp_path: Path) -> None:
    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "api.cli", "validate", write(tmp_path, HEIGHTS)],
                          cwd=str(ROOT), encoding="utf-8", timeout=60)
    child.expect("Total params: 4,353")  # on a terminal: the table
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    piped = taas("validate", write(tmp_path, HEIGHTS))  # piped: machine output
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["total_params"] == 4353


def test_validate_reads_stdin_and_prints_json() -> None:
    dry_run = {"model": HEIGHTS["model"]}
    result = taas("validate", "--json", "-", stdin=json.dumps(dry_run))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total_params"] == 4353


def test_validate_rejects_conv2d_on_a_flat_input(tmp_path: Path) -> None:
    spec = {"model": {"input_shape": [4], "layers": [
        {"type": "conv2d", "filters": 2, "kernel_size": 3}]}}
    result = taas("validate", write(tmp_path, spec))
    assert result.returncode == 2
    assert "error at model.layers.0" in result.stderr


def test_validate_rejects_an_unknown_field(tmp_path: Path) -> None:
    spec = {"model": {"input_shape": [1], "layers": [{"type": "dense", "units": 1,
                                                       "activaton": "relu"}]}}
    result = taas("validate", write(tmp_path, spec))
    assert result.returncode == 2
    assert "error at model.layers.0.activaton:" in result.stderr
    assert "(did you mean 'activation'?)" in result.stderr  # as the API says it
    error = json.loads(result.stdout)["error"]  # piped: the API's error shape
    assert error["type"] == "validation_error"
    assert error["errors"][0]["loc"] == ["model", "layers", 0, "activaton"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def taas_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAAS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "up", "--port", str(free_port()),
         "--mlflow-port", str(free_port()), "--data-dir", str(tmp_path / "data")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    # A reader thread: the stack's output is large and the pipe must never fill up.
    threading.Thread(target=_read_lines, args=(proc, lines), daemon=True).start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:  # the test failed half-way: leave nothing behind
            children = child_pids(proc.pid)
            proc.kill()
            proc.wait()
            for pid in children:
                if group_alive(pid):
                    os.killpg(pid, signal.SIGKILL)


def _read_lines(proc: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line)


def child_pids(pid: int) -> list[int]:
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True,
                         text=True, check=False).stdout
    return [int(word) for word in out.split()]


def wait_for_api_url(lines: queue.Queue[str], timeout: float) -> str:
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        match = re.match(r"\s+API:\s+(http://\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError("taas up printed no URLs in time:\n" + "".join(seen[-60:]))


@pytest.mark.integration
def test_up_serves_and_stops_cleanly_on_ctrl_c(
        taas_up: tuple[subprocess.Popen[str], queue.Queue[str]]) -> None:
    proc, lines = taas_up
    api_url = wait_for_api_url(lines, timeout=120)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{api_url}/readyz", timeout=10) as response:
        assert response.status == 200
        checks = json.loads(response.read())["checks"]
    assert checks == {"database": "ok", "broker": "ok", "mlflow": "ok"}
    children = child_pids(proc.pid)
    assert len(children) == 4  # mlflow, worker, webhooks, api

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    # Each child led its own process group: nothing of any group, grandchildren included, is left.
    assert [pid for pid in children if group_alive(pid)] == []


def test_up_names_the_real_log_folder_and_files(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from api.launcher import Plan, _announce

    plan = Plan(args=None, data_dir=tmp_path / "data", api_url="http://127.0.0.1:8000",  # type: ignore[arg-type]
                mlflow_url="http://127.0.0.1:5000", start_mlflow=True, env={})
    _announce(plan)
    line = next(x for x in capsys.readouterr().out.splitlines() if "logs:" in x)
    assert f"{tmp_path / 'data' / 'logs'} (mlflow.log, worker.log, webhooks.log, api.log)" in line
