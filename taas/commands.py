"""The CLI's client commands: each takes (client, args, out) and returns the exit code."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from taas import exits, render
from taas.client import Client
from taas.errors import APIError, ConnectionFailed, InvalidRequest
from taas.files import FileError, read_inputs, read_xy
from taas.job import Job
from taas.progress import format_metrics


class Output:
    """People get rich text on the terminal; machines get JSON (--json, or stdout not a
    terminal). Errors and notes for people go to stderr."""

    def __init__(self, *, json_mode: bool) -> None:
        self.json = json_mode
        self.console = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

    def data(self, value: Any, human: Any = None) -> None:
        if self.json:
            print(json.dumps(value, default=str), flush=True)
        else:
            self.console.print(value if human is None else human)

    def note(self, message: str) -> None:
        if not self.json:
            self.err.print(message)

    def error(self, message: str, body: dict[str, Any] | None = None) -> None:
        if self.json and body is not None:
            print(json.dumps(body), flush=True)
        self.err.print(Text(f"error: {message}", style="red"))


Handler = Callable[[Client, argparse.Namespace, Output], int]


def run(handler: Handler, args: argparse.Namespace) -> int:
    out = Output(json_mode=args.json or not sys.stdout.isatty())
    with Client(args.url, args.api_key) as client:
        try:
            return handler(client, args, out)
        except ConnectionFailed as error:
            out.error(error.message, {"error": {"type": error.type, "message": error.message,
                                                "url": error.url}})
            return exits.NO_CONNECTION
        except APIError as error:
            out.error(str(error), {"error": {"type": error.type, "message": error.message,
                                             "loc": error.loc, "status": error.status}})
            return exits.INVALID if isinstance(error, InvalidRequest) else exits.REFUSED
        except (FileError, OSError, ValueError) as error:
            out.error(str(error), {"error": {"type": "invalid_input", "message": str(error)}})
            return exits.INVALID


# --- jobs --------------------------------------------------------------------------------


def submit(client: Client, args: argparse.Namespace, out: Output) -> int:
    job = client.submit(args.spec, name=args.name)
    if args.watch:
        if out.json:
            out.data({"event": "submitted", "data": job.data})
        else:
            out.note(f"submitted job {job.id} ({job.name})")
        return follow(job, out)
    out.data(job.data, f"submitted job [bold]{job.id}[/] ({job.name}): {job.status}\n"
                       f"follow it: taas watch {job.id}")
    return exits.SUCCEEDED


def watch(client: Client, args: argparse.Namespace, out: Output) -> int:
    return follow(client.job(args.job_id), out)


def follow(job: Job, out: Output) -> int:
    """Follow a job to its end: a live bar for people, its events as JSON lines for machines.
    Ctrl-C detaches (the job goes on) and says how to come back."""
    try:
        if out.json:
            for event in job.events():
                out.data({"id": event.id, "event": event.type, "data": event.data})
        else:
            job.wait(progress=True)
            _ending(job, out)
    except KeyboardInterrupt:
        out.err.print(f"detached: job {job.id} keeps running. Reattach: taas watch {job.id}  "
                      f"(stop it: taas cancel {job.id})")
        return exits.DETACHED
    return exits.BY_STATUS.get(job.status, exits.REFUSED)


def _ending(job: Job, out: Output) -> None:
    progress = job.progress
    line = Text.assemble(render.status_text(job.status),
                         f" after {progress.get('epoch', 0)}/{progress.get('epochs')} epochs  ",
                         format_metrics(job.metrics))
    out.console.print(line)
    if job.error:
        out.console.print(Text(f"{job.error['type']}: {job.error['message']}", style="red"))
    if job.mlflow_url:
        out.console.print(f"MLflow: {job.mlflow_url}")
    if job.status == "succeeded":
        out.console.print(f"predict: taas predict {job.id} INPUTS.json")


def jobs(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = [job.data for job in client.jobs(status=args.status, limit=args.limit)]
    out.data(found, render.jobs_table(found) if found else "no jobs")
    return exits.SUCCEEDED


def show(client: Client, args: argparse.Namespace, out: Output) -> int:
    job = client.job(args.job_id)
    out.data(job.data, render.job_card(job.data))
    return exits.SUCCEEDED


def metrics(client: Client, args: argparse.Namespace, out: Output) -> int:
    history = client.job(args.job_id).history
    if out.json or not history:
        out.data(history, "no epochs recorded yet")
        return exits.SUCCEEDED
    out.console.print(render.table(history[-20:]))
    if len(history) > 20:
        out.note(f"(the last 20 of {len(history)} epochs; --json for all)")
    series = {key: [row.get(key, float("nan")) for row in history]
              for key in ("loss", "val_loss") if any(key in row for row in history)}
    out.console.print(render.loss_chart(series))
    return exits.SUCCEEDED


def cancel(client: Client, args: argparse.Namespace, out: Output) -> int:
    job = client.job(args.job_id).cancel()
    out.data(job.data, f"job {job.id}: {job.status}")
    return exits.SUCCEEDED


def predict(client: Client, args: argparse.Namespace, out: Output) -> int:
    answer = client.job(args.job_id).predict_raw(read_inputs(args.file))
    out.data(answer, _predictions(answer))
    return exits.SUCCEEDED


def _predictions(answer: dict[str, Any], limit: int = 50) -> Table:
    rows = [{"#": i, "prediction": p[0] if isinstance(p, list) and len(p) == 1 else p}
            | ({"label": answer["labels"][i]} if "labels" in answer else {})
            for i, p in enumerate(answer["predictions"])]
    table = render.table(rows, limit=limit)
    if len(rows) > limit:
        table.caption = f"the first {limit} of {len(rows)}; --json for all"
    return table


def evaluate(client: Client, args: argparse.Namespace, out: Output) -> int:
    x, y = read_xy(args.file)
    answer = client.job(args.job_id).evaluate(x, y)
    out.data(answer, render.table([answer]))
    return exits.SUCCEEDED


def datasets_upload(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.upload_dataset_file(args.file)
    out.data(found, render.table([found]))
    return exits.SUCCEEDED


def datasets_show(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.dataset(args.dataset_id)
    out.data(found, render.table([found]))
    return exits.SUCCEEDED


# --- models and sweeps (v1.1) ------------------------------------------------------------


def models_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.models()
    out.data(found, render.table(found, ["name", "latest_version", "aliases"]) if found
             else "no registered models")
    return exits.SUCCEEDED


def models_show(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.model(args.name)
    out.data(found, render.table(found.get("versions", [])))
    if not out.json and found.get("aliases"):
        out.console.print("aliases: " + ", ".join(f"{alias} -> v{version}" for alias, version
                                                  in found["aliases"].items()))
    return exits.SUCCEEDED


def models_alias(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.set_alias(args.name, args.alias, args.version)
    out.data(found, f"{args.name}@{args.alias} -> version {args.version}")
    return exits.SUCCEEDED


def models_unalias(client: Client, args: argparse.Namespace, out: Output) -> int:
    client.delete_alias(args.name, args.alias)
    out.data({"name": args.name, "alias": args.alias, "deleted": True},
             f"{args.name}@{args.alias} removed")
    return exits.SUCCEEDED


def models_predict(client: Client, args: argparse.Namespace, out: Output) -> int:
    predictions = client.predict_model(args.name, read_inputs(args.file), version=args.version,
                                       alias=args.alias)
    answer = {"predictions": predictions.tolist()}
    out.data(answer, _predictions(answer))
    return exits.SUCCEEDED


def sweeps_submit(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.submit_sweep(args.spec)
    out.data(found, f"submitted sweep [bold]{found['id']}[/]: {found.get('status')}\n"
                    f"see it: taas sweeps show {found['id']}")
    return exits.SUCCEEDED


def sweeps_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.sweeps()
    out.data(found, render.table(found, ["id", "name", "status", "trials", "best"]) if found
             else "no sweeps")
    return exits.SUCCEEDED


def sweeps_show(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.sweep(args.sweep_id)
    out.data(found, render.table([{k: v for k, v in found.items() if k != "objective"}]))
    return exits.SUCCEEDED


def sweeps_trials(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.sweep_trials(args.sweep_id)
    out.data(found, render.table(found) if found else "no trials yet")
    return exits.SUCCEEDED


def sweeps_cancel(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.cancel_sweep(args.sweep_id)
    out.data(found, f"sweep {args.sweep_id}: {found.get('status')}")
    return exits.SUCCEEDED


def sweeps_promote(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.promote_sweep(args.sweep_id, alias=args.alias)
    out.data(found, render.table([found]))
    return exits.SUCCEEDED


def webhooks_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.create_webhook(args.target, events=args.event or None)
    out.data(found, f"webhook [bold]{found['id']}[/] -> {found['url']} "
                    f"({', '.join(found['events'])})\n"
                    f"secret: {found['secret']}\n"
                    "keep the secret: it verifies each delivery's signature and is not shown "
                    "again")
    return exits.SUCCEEDED


def webhooks_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.webhooks()
    out.data(found, render.table(found, ["id", "url", "events", "created_at"]) if found
             else "no webhooks")
    return exits.SUCCEEDED


def webhooks_delete(client: Client, args: argparse.Namespace, out: Output) -> int:
    client.delete_webhook(args.webhook_id)
    out.data({"id": args.webhook_id, "deleted": True}, f"webhook {args.webhook_id} removed")
    return exits.SUCCEEDED


def webhooks_deliveries(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.webhook_deliveries(args.webhook_id)
    out.data(found, render.table(found, ["id", "type", "status", "attempts", "last_error",
                                         "created_at"]) if found else "no deliveries yet")
    return exits.SUCCEEDED
