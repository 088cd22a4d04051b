"""The running compose stack that tests/docker/run.sh started, as fixtures.

run.sh passes the ports it chose and the exact `docker compose` command line through the
environment; these tests only talk to the running containers (HTTP, docker, compose).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest


@dataclass
class Compose:
    command: list[str]
    docker: str

    def __call__(self, *args: str, timeout: float = 600) -> str:
        result = subprocess.run([*self.command, *args], capture_output=True, text=True,
                                timeout=timeout)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def container(self, service: str) -> str:
        (container,) = self("ps", "-q", service).split()
        return container

    def docker_cli(self, *args: str) -> str:
        result = subprocess.run([self.docker, *args], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def up(self) -> None:
        self("up", "-d", "--no-build", "--wait", "--wait-timeout", "900")


@pytest.fixture(scope="session")
def compose() -> Compose:
    command = os.environ.get("TAAS_TEST_COMPOSE")
    if not command:
        pytest.fail("tests/docker run against the stack that `make test-docker` starts")
    return Compose(shlex.split(command), os.environ["TAAS_TEST_DOCKER"])


@pytest.fixture(scope="session")
def api_url() -> str:
    return f"http://127.0.0.1:{os.environ['TAAS_TEST_API_PORT']}"


@pytest.fixture(scope="session")
def mlflow_url() -> str:
    return f"http://127.0.0.1:{os.environ['TAAS_TEST_MLFLOW_PORT']}"


@pytest.fixture
def client(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=30) as client:
        yield client


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Polls `check` until it returns something truthy; connection errors count as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except httpx.TransportError:
            result = None
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
