"""A sweep is checked whole before anything is stored or queued: every parameter path exists in
the base, every range is usable, the base itself runs, and the values at the ends of each
range still parse as a spec. Each problem is a 422 whose `loc` points into the request."""

from __future__ import annotations

import copy
import math
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.errors import InvalidInput
from api.services.jobs import check_runnable
from api.settings import Settings
from api.sweep_schemas import CategoricalRange, FloatRange, IntRange, SweepCreate
from dlmodels.errors import SpecError
from dlmodels.spec import JobSpec

Range = FloatRange | IntRange | CategoricalRange
GRID_AXIS = 1000


def base_tree(spec: JobSpec) -> dict[str, Any]:
    """The base as the service stores it (defaults filled in): what parameter paths point into."""
    return spec.model_dump(mode="json", exclude_none=True)


def split_path(path: str) -> list[str | int]:
    return [int(part) if part.isdigit() else part for part in path.split(".")]


def path_exists(tree: Any, path: str) -> bool:
    """True if the dotted path names a value in the tree (integers index lists)."""
    node = tree
    for part in split_path(path):
        in_dict = isinstance(node, dict) and isinstance(part, str) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if not (in_dict or in_list):
            return False
        node = node[part]
    return True


def user_tree(spec: JobSpec) -> dict[str, Any]:
    """The base as the user wrote it (no defaults filled in): what trials' values are set in,
    so a sampled `training.optimizer.type` does not carry the old optimizer's defaults."""
    return spec.model_dump(mode="json", exclude_unset=True)


def with_values(tree: dict[str, Any], values: dict[str, Any],
                defaults: dict[str, Any]) -> dict[str, Any]:
    """A copy of `tree` with each path set to its value. A path that exists only in
    `defaults` (the base_tree) gets its missing objects made, each with its `type` tag."""
    result = copy.deepcopy(tree)
    for path, value in values.items():
        *parents, last = split_path(path)
        node: Any = result
        default: Any = defaults
        for part in parents:
            default = default[part]
            if isinstance(node, dict) and part not in node:
                node[part] = {"type": default["type"]} if "type" in default else {}
            node = node[part]
        node[last] = value
    return result


def check_sweep(session: Session, *, body: SweepCreate, tenant: str, settings: Settings) -> None:
    """Raises InvalidInput (or SpecError, for the base) with the loc of the first problem."""
    if body.max_trials > settings.max_sweep_trials:
        raise InvalidInput(f"max_trials is {body.max_trials}; the limit is "
                           f"{settings.max_sweep_trials}", ["max_trials"])
    if body.max_parallel > settings.max_concurrent_jobs:
        raise InvalidInput(f"max_parallel is {body.max_parallel}, above the limit of "
                           f"{settings.max_concurrent_jobs} queued and running jobs per tenant",
                           ["max_parallel"])
    tree = base_tree(body.base)
    for path in body.parameters:
        if not path_exists(tree, path):
            raise InvalidInput(f"{path!r} is not a path in base (its dotted keys and list "
                               "indices must name an existing value)", ["parameters", path])
    _check_objective(body)
    if body.sampler.type == "grid":
        grid_space(body.parameters)
    try:
        check_runnable(session, spec=body.base, tenant=tenant, settings=settings)
    except SpecError as error:
        raise error.prefixed("base") from None
    except InvalidInput as error:
        raise InvalidInput(error.message, ["base", *(error.loc or [])]) from None
    _check_ends(user_tree(body.base), tree, body.parameters)


def _check_objective(body: SweepCreate) -> None:
    training = body.base.training
    reported = {"loss", *training.metrics}
    if training.validation_split > 0:
        reported |= {f"val_{name}" for name in reported}
    if body.objective.metric not in reported:
        hint = "" if training.validation_split > 0 else " (val_* needs validation_split > 0)"
        raise InvalidInput(f"the base job does not report {body.objective.metric!r}; it "
                           f"reports {sorted(reported)}{hint}", ["objective", "metric"])


def _ends(spec: Range) -> list[Any]:
    if isinstance(spec, CategoricalRange):
        return list(spec.choices)
    return [spec.low, spec.high]


def _check_ends(tree: dict[str, Any], defaults: dict[str, Any],
                parameters: dict[str, Range]) -> None:
    """Each end of each range (each choice), the other parameters at their first end, must
    still parse as a job spec: a float range on an integer field, a choice that is no
    optimizer, are the user's mistake, not a trial to fail later. Shapes that no longer fit
    are not checked here: such a trial fails with invalid_spec, and the study learns of it."""
    firsts = {path: _ends(spec)[0] for path, spec in parameters.items()}
    for path, spec in parameters.items():
        for value in _ends(spec):
            try:
                JobSpec.model_validate(with_values(tree, firsts | {path: value}, defaults))
            except ValidationError as error:
                problem = error.errors()[0]
                where = ".".join(map(str, problem["loc"]))
                raise InvalidInput(f"{path} = {value!r} does not make a valid spec: {where}: "
                                   f"{problem['msg']}", ["parameters", path]) from None


def grid_space(parameters: dict[str, Range]) -> dict[str, list[Any]]:
    """The grid sampler's values per path: choices, or every step of an int range."""
    space: dict[str, list[Any]] = {}
    for path, spec in parameters.items():
        if isinstance(spec, CategoricalRange):
            space[path] = list(spec.choices)
        elif isinstance(spec, IntRange) and not spec.log:
            if (spec.high - spec.low) // spec.step >= GRID_AXIS:
                raise InvalidInput(f"a grid axis takes at most {GRID_AXIS} values",
                                   ["parameters", path])
            space[path] = list(range(spec.low, spec.high + 1, spec.step))
        else:
            raise InvalidInput("the grid sampler takes categorical and (non-log) int ranges",
                               ["parameters", path])
    return space


def grid_size(parameters: dict[str, Range]) -> int:
    return math.prod(len(values) for values in grid_space(parameters).values())
