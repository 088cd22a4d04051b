"""Optuna, the sweep engine, adapted: the study's storage is the service's own database (its
tables made by migration 0007), and a sweep's sampler and pruner are rebuilt from its stored
spec wherever they are needed (the API creates the study, the controller asks and tells, the
worker reports each epoch and asks whether to prune)."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from api.settings import get_settings
from api.sweep_schemas import CategoricalRange, FloatRange, IntRange, SweepCreate

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger("taas.sweeps")


@lru_cache
def _storage(url: str) -> optuna.storages.RDBStorage:
    # The tables exist (migration 0007), and the compatibility check would read the service's
    # own alembic_version table as Optuna's.
    options: dict[str, Any] = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") \
        else {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 4}
    return optuna.storages.RDBStorage(url, engine_kwargs=options, skip_table_creation=True,
                                      skip_compatibility_check=True)


def storage() -> optuna.storages.RDBStorage:
    return _storage(get_settings().resolved_database_url)


def study_name(sweep_id: str) -> str:
    return f"taas-sweep-{sweep_id}"


def distributions(body: SweepCreate) -> dict[str, BaseDistribution]:
    result: dict[str, BaseDistribution] = {}
    for path, spec in body.parameters.items():
        if isinstance(spec, FloatRange):
            result[path] = FloatDistribution(spec.low, spec.high, log=spec.log)
        elif isinstance(spec, IntRange):
            result[path] = IntDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
        else:
            assert isinstance(spec, CategoricalRange)
            result[path] = CategoricalDistribution(spec.choices)
    return result


def sampler(body: SweepCreate, trials_so_far: int) -> optuna.samplers.BaseSampler:
    """A fresh sampler for the next ask. Its seed moves on with the trial count: a sampler is
    rebuilt for every ask (the controller is stateless), and one seed every time would draw
    the same point again."""
    seed = None if body.sampler.seed is None else body.sampler.seed + trials_so_far
    if body.sampler.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if body.sampler.type == "grid":
        from api.services.sweep_check import grid_space

        return optuna.samplers.GridSampler(grid_space(body.parameters), seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def pruner(body: SweepCreate) -> optuna.pruners.BasePruner:
    spec = body.pruner
    if spec.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.n_startup_trials,
                                           n_warmup_steps=spec.n_warmup_steps)
    if spec.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=spec.min_resource,
                                              max_resource=body.base.training.epochs,
                                              reduction_factor=spec.reduction_factor)
    return optuna.pruners.NopPruner()


def create(sweep_id: str, body: SweepCreate) -> None:
    direction = body.objective.direction
    optuna.create_study(storage=storage(), study_name=study_name(sweep_id), direction=direction)


def delete(sweep_id: str) -> None:
    optuna.delete_study(study_name=study_name(sweep_id), storage=storage())


def load(sweep_id: str, body: SweepCreate, *, trials_so_far: int = 0) -> optuna.Study:
    return optuna.load_study(study_name=study_name(sweep_id), storage=storage(),
                             sampler=sampler(body, trials_so_far), pruner=pruner(body))


class TrialReporter:
    """A running trial's side of pruning: each epoch's objective as an intermediate value, and
    the pruner's verdict on it."""

    def __init__(self, *, sweep_id: str, body: SweepCreate, trial: int) -> None:
        study = load(sweep_id, body)
        trial_id = storage().get_trial_id_from_study_id_trial_number(study._study_id, trial)
        self.trial = optuna.trial.Trial(study, trial_id)
        self.metric = body.objective.metric

    def should_stop(self, epoch: int, logs: dict[str, float]) -> bool:
        value = logs.get(self.metric)
        if value is None:
            return False
        self.trial.report(float(value), epoch)
        return self.trial.should_prune()
