"""`taas`: the command line, on the Python client (taas.Client).

Client commands talk to the API at --url / $TAAS_URL with --api-key / $TAAS_API_KEY. The
server-side commands (`up`, `validate`, `keys create`) import the server's code only when run,
so `taas --help` and the client commands never load torch, FastAPI or SQLAlchemy.

Exit codes: 0 succeeded (or done), 1 the job failed, 2 invalid input, 3 cancelled, 4 pruned,
5 the API refused (any other API error), 6 no connection, 130 detached with Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from taas.exits import DETACHED


def _common() -> argparse.ArgumentParser:
    """Options every command also takes after its name (`taas jobs --json`); SUPPRESS keeps a
    value given before the command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help="the API (default $TAAS_URL or http://127.0.0.1:8000)")
    common.add_argument("--api-key", default=argparse.SUPPRESS, help="default $TAAS_API_KEY")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine output (also whenever stdout is not a terminal)")
    return common


COMMON = [_common()]
EVENTS = ["job.succeeded", "job.failed", "job.cancelled", "sweep.finished"]


def _add(sub: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, parents=COMMON, **kwargs)
    return parser


def _server(command: str) -> Callable[[argparse.Namespace], int]:
    """A server-side command, imported when it runs."""
    def run(args: argparse.Namespace) -> int:
        if command == "up":
            from api.launcher import cmd_up
            return cmd_up(args)
        from api import cli as server_cli
        handler: Callable[[argparse.Namespace], int] = getattr(server_cli, f"cmd_{command}")
        return handler(args)
    return run


def _client(name: str) -> Callable[[argparse.Namespace], int]:
    """A client command (taas.commands.NAME), imported when it runs."""
    def run(args: argparse.Namespace) -> int:
        from taas import commands
        handler: commands.Handler = getattr(commands, name)
        return commands.run(handler, args)
    return run


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number from {low} to {high}")
        return int(text)
    return parse


def _add_server_commands(sub: Any) -> None:
    up = _add(sub, "up", help="run everything locally (the embedded default)",
                        description="Migrate the database, then run MLflow, a worker and the "
                        "API until Ctrl-C.")
    port = _int_in(1, 65535)
    up.add_argument("--host", default="127.0.0.1", help="interface for the API and MLflow")
    up.add_argument("--port", type=port, default=8000, help="API port (default 8000)")
    up.add_argument("--mlflow-port", type=port, default=5000, help="MLflow port (default 5000)")
    up.add_argument("--workers", type=_int_in(1, 1024), default=1, metavar="N",
                    help="training processes of the worker (default 1)")
    up.add_argument("--data-dir", default=os.environ.get("TAAS_DATA_DIR", "data"), metavar="DIR",
                    help="SQLite files, broker, MLflow store, logs (default $TAAS_DATA_DIR or "
                    "./data)")
    up.add_argument("--quiet", action="store_true",
                    help="write the processes' output only to DIR/logs/NAME.log")
    up.set_defaults(func=_server("up"))
    check = _add(sub, "validate", help="check a spec locally and print its summary",
                           description="Check a job spec ({name?, model, training, data}) or a "
                           "dry-run spec ({model, training?, data?}) in this process; exit 2 "
                           "if invalid.")
    check.add_argument("spec", metavar="SPEC.json", help="the spec file; - reads stdin")
    check.set_defaults(func=_server("validate"))
    keys = _add(sub, "keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION")
    create = _add(keys, "create", help="create an API key for a tenant (auth turns on)",
                             description="Store a new API key's hash in TAAS_DATABASE_URL's "
                             "database and print the key once.")
    create.add_argument("tenant", metavar="TENANT")
    create.set_defaults(func=_server("keys_create"))


def _add_job_commands(sub: Any) -> None:
    submit = _add(sub, "submit", help="submit a job spec (JSON); --watch follows it")
    submit.add_argument("spec", metavar="SPEC.json", help="{name?, model, training, data}")
    submit.add_argument("--name", help="the job's name (overrides the spec's)")
    submit.add_argument("--watch", "-w", action="store_true",
                        help="follow it live; the exit code says how it ended")
    submit.set_defaults(func=_client("submit"))
    watch = _add(sub, "watch", help="follow a job live until it ends (Ctrl-C detaches)")
    watch.add_argument("job_id", metavar="ID")
    watch.set_defaults(func=_client("watch"))
    jobs = _add(sub, "jobs", help="list jobs, newest first")
    jobs.add_argument("--status", choices=["queued", "running", "succeeded", "failed",
                                           "cancelled", "pruned"])
    jobs.add_argument("--limit", type=_int_in(1, 10000), default=20)
    jobs.set_defaults(func=_client("jobs"))
    for name, text in (("show", "a job: status, progress, metrics, error, MLflow link"),
                       ("metrics", "a job's per-epoch history, as a table and a loss chart"),
                       ("cancel", "cancel a queued or running job")):
        command = _add(sub, name, help=text)
        command.add_argument("job_id", metavar="ID")
        command.set_defaults(func=_client(name))
    predict = _add(sub, "predict", help="predictions of a job's model for FILE's inputs")
    predict.add_argument("job_id", metavar="ID")
    predict.add_argument("file", metavar="FILE", help=".json, .npy or .csv: [N, *input_shape]")
    predict.set_defaults(func=_client("predict"))
    evaluate = _add(sub, "evaluate", help="loss and metrics of a job's model on FILE")
    evaluate.add_argument("job_id", metavar="ID")
    evaluate.add_argument("file", metavar="FILE",
                          help=".json {x, y}, .npz (x, y) or .csv (a target column)")
    evaluate.set_defaults(func=_client("evaluate"))
    datasets = _add(sub, "datasets", help="upload and show datasets").add_subparsers(
        dest="datasets_command", required=True, metavar="ACTION")
    upload = _add(datasets, "upload", help="upload FILE (.json {x, y}, .csv, .npz)")
    upload.add_argument("file", metavar="FILE")
    upload.set_defaults(func=_client("datasets_upload"))
    show = _add(datasets, "show", help="a dataset's id, size and shapes")
    show.add_argument("dataset_id", metavar="ID")
    show.set_defaults(func=_client("datasets_show"))


def _add_registry_commands(sub: Any) -> None:
    models = _add(sub, "models", help="registered models by name").add_subparsers(
        dest="models_command", required=True, metavar="ACTION")
    _add(models, "list", help="the models").set_defaults(func=_client("models_list"))
    show = _add(models, "show", help="a model's versions and aliases")
    show.add_argument("name")
    show.set_defaults(func=_client("models_show"))
    alias = _add(models, "alias", help="point ALIAS at VERSION")
    alias.add_argument("name")
    alias.add_argument("alias")
    alias.add_argument("version", type=_int_in(1, 10**9))
    alias.set_defaults(func=_client("models_alias"))
    unalias = _add(models, "unalias", help="remove an alias")
    unalias.add_argument("name")
    unalias.add_argument("alias")
    unalias.set_defaults(func=_client("models_unalias"))
    predict = _add(models, "predict", help="predictions of a model for FILE's inputs")
    predict.add_argument("name")
    predict.add_argument("file", metavar="FILE")
    which = predict.add_mutually_exclusive_group()
    which.add_argument("--version", type=_int_in(1, 10**9))
    which.add_argument("--alias")
    predict.set_defaults(func=_client("models_predict"))
    sweeps = _add(sub, "sweeps", help="hyperparameter sweeps").add_subparsers(
        dest="sweeps_command", required=True, metavar="ACTION")
    submit = _add(sweeps, "submit", help="start a sweep from a JSON file")
    submit.add_argument("spec", metavar="SWEEP.json")
    submit.set_defaults(func=_client("sweeps_submit"))
    _add(sweeps, "list", help="the sweeps").set_defaults(
        func=_client("sweeps_list"))
    for name, text in (("show", "a sweep: status, trial counts, best"),
                       ("trials", "a sweep's trials"), ("cancel", "stop a sweep"),
                       ("promote", "point a model alias at the best trial's version")):
        command = _add(sweeps, name, help=text)
        command.add_argument("sweep_id", metavar="ID")
        if name == "promote":
            command.add_argument("--alias", default="champion",
                                 help="the alias to move (default: champion)")
        command.set_defaults(func=_client(f"sweeps_{name}"))


def _add_webhook_commands(sub: Any) -> None:
    hooks = _add(sub, "webhooks", help="be told when jobs and sweeps end (signed deliveries)"
                 ).add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")
    create = _add(hooks, "create", help="deliver events to URL; prints the secret once")
    create.add_argument("target", metavar="URL")  # `url` is the API's (--url)
    create.add_argument("--event", action="append", choices=EVENTS,
                        help="an event to deliver (repeat it; default: all)")
    create.set_defaults(func=_client("webhooks_create"))
    _add(hooks, "list", help="the endpoints").set_defaults(func=_client("webhooks_list"))
    for name, text in (("delete", "remove an endpoint"),
                       ("deliveries", "an endpoint's latest deliveries")):
        command = _add(hooks, name, help=text)
        command.add_argument("webhook_id", metavar="ID")
        command.set_defaults(func=_client(f"webhooks_{name}"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taas", description="Training as a service: submit, watch, predict.",
        epilog="exit codes: 0 succeeded, 1 failed, 2 invalid input, 3 cancelled, 4 pruned, "
               "5 refused by the API, 6 no connection, 130 detached (Ctrl-C)")
    parser.add_argument("--url", help="the API (default $TAAS_URL or http://127.0.0.1:8000)")
    parser.add_argument("--api-key", help="default $TAAS_API_KEY")
    parser.add_argument("--json", action="store_true",
                        help="machine output (also whenever stdout is not a terminal)")
    parser.set_defaults(url=None, api_key=None, json=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_job_commands(sub)
    _add_registry_commands(sub)
    _add_webhook_commands(sub)
    _add_server_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return DETACHED
    except BrokenPipeError:
        # The reader went away (`taas jobs | head`): stop quietly; point stdout at devnull so
        # the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
