"""The live display of a job: a spinner while it is queued, then a bar by epoch with the
latest loss and metrics (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from taas._sse import Event


def format_metrics(values: dict[str, Any]) -> str:
    return "  ".join(f"{key} {value:.4g}" if isinstance(value, int | float) else f"{key} {value}"
                     for key, value in values.items() if key != "epoch")


class JobProgress:
    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                 BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.fields[metrics]}"),
                                 console=console or Console(stderr=False))
        self.task: TaskID | None = None

    def __enter__(self) -> JobProgress:
        self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()

    def update(self, job: dict[str, Any]) -> None:
        """Show the job's status; the bar gets its length once the job runs."""
        status = job["status"]
        epochs = (job.get("progress") or {}).get("epochs")
        done = (job.get("progress") or {}).get("epoch", 0)
        running = status != "queued"
        description = f"{job.get('name', job['id'])} [bold]{status}[/]"
        if self.task is None:
            self.task = self.progress.add_task(description, total=epochs if running else None,
                                               completed=done, metrics="")
        else:
            self.progress.update(self.task, description=description,
                                 total=epochs if running else None, completed=done)

    def event(self, event: Event, job: dict[str, Any]) -> None:
        if event.type == "status":
            self.update(event.data)
        elif event.type == "epoch" and self.task is not None:
            if self.progress.tasks[0].total is None:
                self.update({**job, "status": "running"})
            self.progress.update(self.task, completed=event.data.get("epoch", 0),
                                 metrics=format_metrics(event.data))
