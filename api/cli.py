"""`taas`: the command line.

`taas up` runs the embedded default (see api.launcher); `taas validate` dry-runs a spec
in-process; `taas keys create TENANT` makes an API key. Heavy imports (torch, mlflow, celery,
fastapi) happen only inside the commands that need them, so `taas --help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api.launcher import cmd_up
from api.launcher import say as _say

if TYPE_CHECKING:  # dlmodels imports torch: only `taas validate` pays for it, at run time
    from dlmodels.builder import Summary


def _check(raw: Any) -> Summary:
    from api.schemas import SpecCheck
    from api.services.specs import check_spec
    from dlmodels.spec import JobSpec

    # A "name" means a whole job (POST /v1/jobs); otherwise the dry run's {model, training?, data?}.
    spec = (JobSpec if isinstance(raw, dict) and "name" in raw else SpecCheck).model_validate(raw)
    data = spec.data
    if data is not None and data.dataset_id is not None:
        _say("note: data.dataset_id lives on the server; its data are not checked", sys.stderr)
        data = None
    return check_spec(model=spec.model, training=spec.training, data=data)


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        raw = json.loads(sys.stdin.read() if args.spec == "-" else Path(args.spec).read_text())
    except (OSError, ValueError) as error:
        _say(f"error: cannot read {args.spec}: {error}", sys.stderr)
        return 2
    from pydantic import ValidationError

    from api.errors import clean_loc
    from dlmodels.errors import SpecError

    try:
        summary = _check(raw)
    except ValidationError as error:
        for item in error.errors():
            where = ".".join(str(part) for part in clean_loc(item["loc"], raw)) or "spec"
            _say(f"error at {where}: {item['msg']}", sys.stderr)
        return 2
    except SpecError as error:
        _say(f"error at {'.'.join(map(str, error.loc)) or 'spec'}: {error.message}", sys.stderr)
        return 2
    _say(summary.model_dump_json(indent=2) if args.json else summary.to_text())
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from api.auth import create_key
    from api.db import get_sessionmaker

    with get_sessionmaker()() as session:
        key = create_key(session, tenant=args.tenant)
    _say(f"API key for tenant {args.tenant!r} (shown once; only its hash is stored):")
    _say(key)
    return 0


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number from {low} to {high}")
        return int(text)
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taas", description="Training as a service.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="run everything locally (the embedded default)",
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
    up.set_defaults(func=cmd_up)
    check = sub.add_parser("validate", help="check a spec and print its summary",
                           description="Check a job spec ({name?, model, training, data}) or a "
                           "dry-run spec ({model, training?, data?}); exit 2 if invalid.")
    check.add_argument("spec", metavar="SPEC.json", help="the spec file; - reads stdin")
    check.add_argument("--json", action="store_true", help="print the summary as JSON")
    check.set_defaults(func=cmd_validate)
    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION")
    create = keys.add_parser("create", help="create an API key for a tenant (auth turns on)",
                             description="Store a new API key's hash in TAAS_DATABASE_URL's "
                             "database and print the key once.")
    create.add_argument("tenant", metavar="TENANT")
    create.set_defaults(func=cmd_keys_create)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
