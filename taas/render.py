"""What the CLI shows people: tables, a job's card, a loss chart drawn in the terminal."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from taas.progress import format_metrics

STATUS_STYLE = {"queued": "yellow", "running": "cyan", "succeeded": "green", "failed": "red",
                "cancelled": "magenta", "pruned": "magenta"}


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def jobs_table(jobs: Sequence[dict[str, Any]]) -> Table:
    table = Table("id", "name", "status", "epoch", "loss", "created", box=None)
    for job in jobs:
        progress = job.get("progress") or {}
        loss = (job.get("metrics") or {}).get("loss")
        table.add_row(job["id"], job.get("name", ""), status_text(job["status"]),
                      f"{progress.get('epoch', 0)}/{progress.get('epochs', '?')}",
                      f"{loss:.4g}" if isinstance(loss, int | float) else "",
                      str(job.get("created_at", ""))[:19].replace("T", " "))
    return table


def job_card(job: dict[str, Any]) -> Table:
    card = Table.grid(padding=(0, 2))
    progress = job.get("progress") or {}
    rows: list[tuple[str, Any]] = [
        ("job", f"{job['id']}  {job.get('name', '')}"), ("status", status_text(job["status"])),
        ("epoch", f"{progress.get('epoch', 0)}/{progress.get('epochs', '?')}"),
        ("metrics", format_metrics(job.get("metrics") or {}) or "-")]
    if job.get("error"):
        rows.append(("error", f"{job['error']['type']}: {job['error']['message']}"))
    summary = job.get("summary") or {}
    if summary:
        rows.append(("params", f"{summary.get('total_params', 0):,} "
                               f"({summary.get('trainable_params', 0):,} trainable)"))
    for key in ("created_at", "started_at", "finished_at", "mlflow_url"):
        if job.get(key):
            rows.append((key.replace("_at", "").replace("_", " "), str(job[key])))
    for name, value in rows:
        card.add_row(Text(name, style="bold"), value)
    return card


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
          limit: int | None = None) -> Table:
    """A table of dict rows (its columns: the keys, in first-seen order)."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    result = Table(*columns, box=None)
    for row in rows[:limit]:
        result.add_row(*(_cell(row.get(column)) for column in columns))
    return result


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def loss_chart(series: Mapping[str, Sequence[float]], width: int = 60, height: int = 12) -> str:
    """A line chart of `series` (e.g. loss and val_loss by epoch) in text: one mark per column,
    the y axis labelled with its range (log scale when it spans over two decades)."""
    values = [v for line in series.values() for v in line if math.isfinite(v)]
    longest = max((len(line) for line in series.values()), default=0)
    if not values or longest < 2:
        return "(not enough epochs to chart)"
    log = min(values) > 0 and max(values) / min(values) > 100
    scale = (lambda v: math.log10(v)) if log else (lambda v: v)
    low, high = scale(min(values)), scale(max(values))
    span = (high - low) or 1.0
    grid = [[" "] * width for _ in range(height)]
    for mark, line in zip("*o+x", series.values(), strict=False):
        for column in range(width):
            index = round(column * (len(line) - 1) / (width - 1)) if len(line) > 1 else 0
            if index < len(line) and math.isfinite(line[index]):
                row = round((scale(line[index]) - low) / span * (height - 1))
                grid[height - 1 - row][column] = mark
    top, bottom = f"{max(values):.4g}", f"{min(values):.4g}"
    pad = max(len(top), len(bottom))
    lines = [f"{(top if i == 0 else bottom if i == height - 1 else ''):>{pad}} |{''.join(row)}"
             for i, row in enumerate(grid)]
    lines.append(f"{'':>{pad}} +{'-' * width}")
    lines.append(f"{'':>{pad}}  epoch 1{'':>{width - 8 - len(str(longest))}}{longest}")
    legend = "  ".join(f"{mark} {name}" for mark, name in zip("*o+x", series, strict=False))
    lines.append(f"{'':>{pad}}  {legend}{'  (log scale)' if log else ''}")
    return "\n".join(lines)
