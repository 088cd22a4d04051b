"""What idle live-event streams cost the API: N connections held open on a running job (resumed
past its last event, so nothing is sent but pings), the API process's CPU time over T seconds,
against the same T with none.

    python -m bench.event_streams URL API_PID JOB_ID [N=100] [T=20]

(API_PID: the uvicorn process, e.g. `pgrep -f "uvicorn api.main:app"`; JOB_ID: a running job.)
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def hold(client: httpx.AsyncClient, job_id: str) -> None:
    async with client.stream("GET", f"/v1/jobs/{job_id}/events",
                             headers={"Last-Event-ID": "999999999999"}) as response:
        response.raise_for_status()
        async for _ in response.aiter_lines():
            pass


async def measure(url: str, pid: int, job_id: str, n: int, seconds: float) -> None:
    limits = httpx.Limits(max_connections=n + 5)
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as client:
        start = cpu_seconds(pid)
        await asyncio.sleep(seconds)
        idle = cpu_seconds(pid) - start
        streams = [asyncio.create_task(hold(client, job_id)) for _ in range(n)]
        await asyncio.sleep(3)  # all connected
        start = cpu_seconds(pid)
        await asyncio.sleep(seconds)
        held = cpu_seconds(pid) - start
        for stream in streams:
            stream.cancel()
    per_stream = (held - idle) / n / seconds
    print(f"API CPU over {seconds:g} s: {idle:.2f} s with no stream, {held:.2f} s with {n}: "
          f"{per_stream * 1000:.2f} ms of CPU per stream per second")


if __name__ == "__main__":
    url, pid, job = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    duration = float(sys.argv[5]) if len(sys.argv) > 5 else 20.0
    asyncio.run(measure(url, pid, job, count, duration))
