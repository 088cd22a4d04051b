"""Sweep checks without a stack: parameter paths, ranges, seeded sampling."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from api import studies
from api.schemas import HEIGHTS_EXAMPLE
from api.services.sweep_check import base_tree, path_exists, user_tree, with_values
from api.sweep_schemas import SweepCreate
from dlmodels.spec import JobSpec

BASE = JobSpec.model_validate(HEIGHTS_EXAMPLE)
TREE = base_tree(BASE)


def leaf_paths(node: Any, prefix: str = "") -> list[str]:
    """Every dotted path to a value in the tree (objects and lists included)."""
    paths = [prefix] if prefix else []
    children = node.items() if isinstance(node, dict) else \
        enumerate(node) if isinstance(node, list) else []
    for key, child in children:
        paths += leaf_paths(child, f"{prefix}.{key}" if prefix else str(key))
    return paths


EXISTING = leaf_paths(TREE)
SEGMENT = st.one_of(st.sampled_from(["model", "training", "layers", "units", "lr", "type",
                                     "optimizer", "nope", "data", "x"]),
                    st.integers(0, 5).map(str))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.sampled_from(EXISTING), st.lists(SEGMENT, min_size=1, max_size=5)
                 .map(".".join)))
def test_exactly_the_paths_in_the_base_are_accepted(path: str) -> None:
    assert path_exists(TREE, path) == (path in EXISTING)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([p for p in EXISTING if p.startswith(("model.layers", "training"))]),
       st.floats(0.001, 1000), st.floats(0.001, 1000))
def test_a_range_needs_low_below_high(path: str, low: float, high: float) -> None:
    body = {"base": HEIGHTS_EXAMPLE, "objective": {"metric": "loss"}, "max_trials": 2,
            "parameters": {path: {"type": "float", "low": low, "high": high}}}
    if low < high:
        SweepCreate.model_validate(body)
    else:
        with pytest.raises(ValidationError):
            SweepCreate.model_validate(body)


def test_a_sampled_optimizer_type_drops_the_old_optimizers_defaults() -> None:
    tree = with_values(user_tree(BASE), {"training.optimizer.type": "rmsprop"}, TREE)
    assert JobSpec.model_validate(tree).training.optimizer.type == "rmsprop"
    # A default the user never wrote can be swept too.
    path = "training.optimizer.weight_decay"
    assert path_exists(TREE, path) and not path_exists(user_tree(BASE), path)
    tree = with_values(user_tree(BASE), {path: 0.01}, TREE)
    assert JobSpec.model_validate(tree).training.optimizer.weight_decay == 0.01


def test_a_seed_draws_the_same_parameters_for_the_same_sweep() -> None:
    body = SweepCreate.model_validate({
        "base": HEIGHTS_EXAMPLE, "objective": {"metric": "loss"}, "max_trials": 5,
        "sampler": {"type": "random", "seed": 7},
        "parameters": {"training.optimizer.lr": {"type": "float", "low": 1e-4, "high": 1,
                                                 "log": True},
                       "model.layers.0.units": {"type": "int", "low": 1, "high": 64}}})

    def draws() -> list[dict[str, Any]]:
        study = optuna.create_study()
        found = []
        for number in range(5):
            study.sampler = studies.sampler(body, number)
            trial = study.ask(studies.distributions(body))
            found.append(trial.params)
            study.tell(trial, 1.0)
        return found

    first = draws()
    assert first == draws()
    assert len({p["training.optimizer.lr"] for p in first}) == 5  # no repeated draw
