"""A sweep trial's pruning: each epoch its objective goes to the study as an intermediate value,
and the study's pruner says whether the trial goes on."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from api.db import session_scope
from api.models import Sweep
from api.studies import TrialReporter
from api.sweep_schemas import SweepCreate
from dlmodels.callbacks import Callback, FitState

log = logging.getLogger("taas.worker")


class TrialPruned(Exception):
    """The pruner stopped the trial at the end of `epoch`."""

    def __init__(self, epoch: int, metric: str, value: float) -> None:
        super().__init__(f"pruned after epoch {epoch}: its {metric} ({value:.6g}) was behind "
                         "the other trials' at that epoch")
        self.epoch = epoch


@dataclass(frozen=True)
class SweepTrial:
    """What a trial's worker needs of its sweep."""

    sweep_id: str
    trial: int
    parent_run_id: str | None
    body: SweepCreate


def load_trial(sweep_id: str | None, trial: int | None) -> SweepTrial | None:
    if sweep_id is None or trial is None:
        return None
    with session_scope() as session:
        sweep = session.get(Sweep, sweep_id)
        if sweep is None:
            return None
        return SweepTrial(sweep_id, trial, sweep.mlflow_run_id,
                          SweepCreate.model_validate(sweep.spec))


class PruneTrial(Callback):
    """Reports the objective every `report_every` epochs; raises TrialPruned when the pruner
    says so (never at the last epoch: a trial that ran to its end is complete). Pruning is
    advice: when the study cannot be reached, the trial goes on."""

    def __init__(self, trial: SweepTrial) -> None:
        self.reporter = TrialReporter(sweep_id=trial.sweep_id, body=trial.body,
                                      trial=trial.trial)
        self.metric = trial.body.objective.metric
        self.every = trial.body.report_every

    def on_epoch_end(self, state: FitState, epoch: int, logs: dict[str, float]) -> None:
        if epoch % self.every or epoch >= state.epochs:
            return
        try:
            prune = self.reporter.should_stop(epoch, logs)
        except (SQLAlchemyError, RuntimeError, ValueError) as error:
            log.warning("trial could not report epoch %s to its study: %s", epoch, error)
            return
        if prune:
            raise TrialPruned(epoch, self.metric, logs[self.metric])
