"""The server-side commands of `taas` (its parser is taas.cli, which imports this module
only when one of them runs): `taas validate` dry-runs a spec in-process; `taas keys create
TENANT` makes an API key; `taas up` is api.launcher.cmd_up. Heavy imports (torch, mlflow,
celery, fastapi) happen only inside the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api.launcher import say as _say

if TYPE_CHECKING:  # dlmodels imports torch: only `taas validate` pays for it, at run time
    from dlmodels.builder import Summary


def _spec_model(raw: Any) -> Any:
    """A "name" means a whole job (POST /v1/jobs); otherwise the dry run's
    {model, training?, data?}."""
    from api.schemas import SpecCheck
    from dlmodels.spec import JobSpec

    return JobSpec if isinstance(raw, dict) and "name" in raw else SpecCheck


def _check(raw: Any) -> Summary:
    from api.services.specs import check_spec

    spec = _spec_model(raw).model_validate(raw)
    data = spec.data
    if data is not None and data.dataset_id is not None:
        _say("note: data.dataset_id lives on the server; its data are not checked", sys.stderr)
        data = None
    return check_spec(model=spec.model, training=spec.training, data=data)


def cmd_validate(args: argparse.Namespace) -> int:
    """The summary, or every error with its place (and a "did you mean"), as the API gives
    them; JSON with --json and whenever stdout is not a terminal (`taas validate x | jq`)."""
    machine = args.json or not sys.stdout.isatty()
    try:
        raw = json.loads(sys.stdin.read() if args.spec == "-" else Path(args.spec).read_text())
    except (OSError, ValueError) as error:
        return _refuse(machine, "invalid_input", f"cannot read {args.spec}: {error}", [])
    from pydantic import ValidationError

    from api.errors import clean_loc
    from api.suggestions import hint
    from dlmodels.errors import SpecError

    try:
        summary = _check(raw)
    except ValidationError as error:
        schema = _spec_model(raw).model_json_schema()
        errors: list[dict[str, Any]] = []
        for item in error.errors():
            loc = clean_loc(item["loc"], raw)
            message = f"{'.'.join(map(str, loc)) or 'spec'}: {item['msg']}" + \
                hint(dict(item), loc, raw, schema, schema.get("$defs", {}))
            errors.append({"loc": loc, "message": message, "type": item["type"]})
        return _refuse(machine, "validation_error", errors[0]["message"], errors)
    except SpecError as error:
        where = ".".join(map(str, error.loc)) or "spec"
        return _refuse(machine, "invalid_spec", f"{where}: {error.message}",
                       [{"loc": list(error.loc), "message": f"{where}: {error.message}"}])
    _say(summary.model_dump_json(indent=2) if machine else summary.to_text())
    return 0


def _refuse(machine: bool, kind: str, message: str, errors: list[dict[str, Any]]) -> int:
    if machine:
        from api.errors import error_body

        print(json.dumps(error_body(kind, message, errors=errors)), flush=True)
    for error in errors:
        _say(f"error at {error['message']}", sys.stderr)
    if not errors:
        _say(f"error: {message}", sys.stderr)
    return 2


def cmd_keys_create(args: argparse.Namespace) -> int:
    from api.auth import create_key
    from api.db import get_sessionmaker

    with get_sessionmaker()() as session:
        key = create_key(session, tenant=args.tenant)
    _say(f"API key for tenant {args.tenant!r} (shown once; only its hash is stored):")
    _say(key)
    return 0


if __name__ == "__main__":  # the CLI's parser lives in taas.cli (`python -m api.cli` still works)
    from taas.cli import main

    sys.exit(main())
