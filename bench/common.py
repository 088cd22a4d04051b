"""What every benchmark shares: interleaved arms, statistics, the table and results.json.

An arm is a callable returning one sample per call: `{metric: value}` or `{metric: [values]}`
(a list when one call measures many requests). `interleave` warms every arm up, then calls
them in turn (A B C A B C ...), so slow drift of the machine hits every arm alike.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

Sample = Mapping[str, float | Sequence[float]]
ArmFn = Callable[[], Sample]


@dataclass(frozen=True)
class Config:
    smoke: bool = False

    def pick(self, full: Any, smoke: Any) -> Any:
        """The full run's size, or the smoke run's."""
        return smoke if self.smoke else full


@dataclass
class Stat:
    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        if not values:
            raise ValueError("no samples")
        return cls(statistics.median(values), min(values), max(values), len(values))


def interleave(arms: Mapping[str, ArmFn], rounds: int, warmup: int = 1,
               ) -> dict[str, dict[str, list[float]]]:
    """Run the arms A B C A B C ... `rounds` times after `warmup` discarded rounds.

    Returns {arm: {metric: [samples]}}.
    """
    for _ in range(warmup):
        for fn in arms.values():
            fn()
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in arms}
    for _ in range(rounds):
        for name, fn in arms.items():
            for metric, value in fn().items():
                bucket = samples[name].setdefault(metric, [])
                if isinstance(value, int | float):
                    bucket.append(float(value))
                else:
                    bucket.extend(float(v) for v in value)
    return samples


def by_round(arms: Mapping[str, ArmFn], rounds: int,
             ) -> tuple[dict[str, dict[str, list[float]]], list[dict[str, dict[str, list[float]]]]]:
    """`interleave` without warm-up, also keeping each round's samples apart (for paired
    ratios): (all samples, [each round's samples])."""
    each = [interleave(arms, rounds=1, warmup=0) for _ in range(rounds)]
    pooled: dict[str, dict[str, list[float]]] = {name: {} for name in arms}
    for one in each:
        for name, metrics in one.items():
            for metric, values in metrics.items():
                pooled[name].setdefault(metric, []).extend(values)
    return pooled, each


def paired_ratio(each: Sequence[Mapping[str, Mapping[str, list[float]]]], arm: str,
                 anchor: str, metric: str) -> Stat:
    """Per round, arm's median / anchor's median in that round; their median, min and max.
    The arms of one round ran back to back, so a burst of load that lasts a round (common on
    a shared machine) moves both sides of its ratio instead of one side of the pooled one."""
    return Stat.of([statistics.median(r[arm][metric]) / statistics.median(r[anchor][metric])
                    for r in each])


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


@dataclass
class Figure:
    case: str
    arm: str
    metric: str
    unit: str
    median: float
    min: float
    max: float
    n: int
    anchor: str | None = None
    ratio: float | None = None  # this arm's median / the anchor arm's median


@dataclass
class Target:
    what: str
    value: float
    unit: str
    target: str
    met: bool


@dataclass
class BenchResult:
    id: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    loadavg: list[float] = field(default_factory=list)  # 1-min load: before, after
    error: str | None = None

    def add(self, case: str, arm: str, metric: str, unit: str, values: Sequence[float],
            anchor: Figure | None = None) -> Figure:
        return self.add_stat(case, arm, metric, unit, Stat.of(values), anchor)

    def add_stat(self, case: str, arm: str, metric: str, unit: str, stat: Stat,
                 anchor: Figure | None = None) -> Figure:
        ratio = None
        if anchor is not None and anchor.median:
            ratio = stat.median / anchor.median
        figure = Figure(case, arm, metric, unit, stat.median, stat.min, stat.max, stat.n,
                        anchor.arm if anchor is not None else None, ratio)
        self.figures.append(figure)
        return figure

    def add_arms(self, case: str, samples: Mapping[str, Mapping[str, list[float]]],
                 metric: str, unit: str, anchor: str | None) -> dict[str, Figure]:
        """One figure per arm for `metric`, with ratios against the `anchor` arm."""
        base = self.add(case, anchor, metric, unit, samples[anchor][metric]) if anchor else None
        figures = {anchor: base} if anchor and base else {}
        for arm, metrics in samples.items():
            if arm != anchor and metric in metrics:
                figures[arm] = self.add(case, arm, metric, unit, metrics[metric], base)
        return figures

    def target(self, what: str, value: float, unit: str, target: str, met: bool) -> None:
        self.targets.append(Target(what, value, unit, target, bool(met)))

    def figure(self, case: str, arm: str, metric: str) -> Figure:
        for f in self.figures:
            if (f.case, f.arm, f.metric) == (case, arm, metric):
                return f
        raise KeyError((case, arm, metric))


def loadavg() -> float:
    """The machine's 1-minute load average (other processes compete for the cores)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def _versions() -> dict[str, str]:
    names = ["torch", "numpy", "mlflow", "fastapi", "starlette", "uvicorn", "pydantic",
             "celery", "kombu", "redis", "sqlalchemy", "psycopg", "httpx", "pytorch-lightning"]
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "platform": platform.platform(),
            "python": platform.python_version()}


def write_results(path: Path, results: list[BenchResult], *, smoke: bool,
                  extra_meta: Mapping[str, Any]) -> None:
    meta = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "smoke": smoke,
            **machine(), "versions": _versions(), **extra_meta}
    body = {"meta": meta, "benchmarks": [asdict(r) for r in results]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2) + "\n")


def _num(value: float | None) -> str:
    if value is None:
        return ""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.01:
        return f"{value:.3f}"
    return f"{value:.2e}"


def table(results: Sequence[BenchResult]) -> str:
    """The figures, then the targets, as plain-text tables."""
    rows = [("bench", "case", "arm", "metric", "median", "min", "max", "unit", "n", "vs anchor")]
    for r in results:
        for f in r.figures:
            ratio = f"{f.ratio:.3f}x {f.anchor}" if f.ratio is not None else ""
            rows.append((r.id, f.case, f.arm, f.metric, _num(f.median), _num(f.min),
                         _num(f.max), f.unit, str(f.n), ratio))
        if r.error:
            rows.append((r.id, "ERROR", r.error[:80], "", "", "", "", "", "", ""))
    text = [_render(rows)]
    goals = [("bench", "target", "value", "unit", "wanted", "met")]
    for r in results:
        goals += [(r.id, t.what, _num(t.value), t.unit, t.target, "yes" if t.met else "NO")
                  for t in r.targets]
    text += ["", _render(goals)]
    notes = [f"{r.id}: {r.seconds:g} s, 1-min load average {r.loadavg}" for r in results]
    notes += [f"{r.id}: {note}" for r in results for note in r.notes]
    if notes:
        text += ["", *notes]
    return "\n".join(text)


def _render(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = {4, 5, 6, 8} if len(rows[0]) == 10 else {2}
    lines = []
    for index, row in enumerate(rows):
        cells = [c.rjust(w) if i in numeric and index else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
