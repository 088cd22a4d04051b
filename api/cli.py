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


if __name__ == "__main__":  # the CLI's parser lives in taas.cli (`python -m api.cli` still works)
    from taas.cli import main

    sys.exit(main())
