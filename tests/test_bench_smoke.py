"""The benchmark suite runs end to end at smoke size and writes complete results.

No timing is asserted (the machine is shared): only that every benchmark ran and every figure
is a finite number with a unit.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

from tests.integration.stack import PG_ADMIN_URL, REDIS_URL, ROOT

pytestmark = pytest.mark.integration

BENCHMARKS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8"]


def _needs_postgres_and_redis() -> None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=5):
            pass
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5).ping()
    except (psycopg.OperationalError, redis.exceptions.ConnectionError) as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Postgres or Redis unreachable ({error}); CI=true fails the run")
        pytest.skip(f"Postgres or Redis unreachable ({error})")


def test_smoke_run_writes_every_benchmark_with_numbers_and_units(tmp_path: Path) -> None:
    _needs_postgres_and_redis()
    out = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAAS_")}
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    results = json.loads(out.read_text())

    meta = results["meta"]
    assert meta["smoke"] is True
    assert meta["cores"] >= 1 and meta["date"]
    assert meta["versions"]["torch"].startswith("2.")

    by_id = {bench["id"]: bench for bench in results["benchmarks"]}
    assert sorted(by_id) == BENCHMARKS
    for bench_id, bench in by_id.items():
        assert bench["error"] is None, (bench_id, bench["error"])
        assert bench["figures"], bench_id
        for figure in bench["figures"]:
            assert figure["unit"], (bench_id, figure)
            for key in ("median", "min", "max"):
                assert isinstance(figure[key], int | float), (bench_id, figure)
                assert math.isfinite(figure[key]), (bench_id, figure)
            assert figure["min"] <= figure["median"] <= figure["max"], (bench_id, figure)
            assert figure["n"] >= 1
        for target in bench["targets"]:
            assert target["unit"] and isinstance(target["met"], bool), (bench_id, target)
            assert math.isfinite(target["value"]), (bench_id, target)
    assert "median" in done.stdout and "B6" in done.stdout  # the table went to stdout
