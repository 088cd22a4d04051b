"""Reading a text/event-stream (the parts of the SSE format the API sends)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """One event of a job's stream: `type` is "status" (data: the job) or "epoch" (data:
    {epoch, loss, ...}); `id` is what `Last-Event-ID` resumes after."""

    id: int
    type: str
    data: dict[str, Any]


def parse(lines: Iterable[str]) -> Iterator[Event]:
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if line == "":
            if data and "id" in fields:
                yield Event(int(fields["id"]), fields.get("event", "message"),
                            json.loads("\n".join(data)))
            fields, data = {}, []
        elif line.startswith(":"):
            continue  # a comment: the server's keep-alive ping
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value
