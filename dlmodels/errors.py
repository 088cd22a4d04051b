"""Errors a spec, its data or a training run can raise; each says what arrived and what
was needed."""

from __future__ import annotations

from collections.abc import Sequence

Loc = tuple[str | int, ...]


class DLModelsError(Exception):
    """Base of every error this library raises on purpose."""


class SpecError(DLModelsError, ValueError):
    """A spec that parses but cannot work: a shape mismatch, labels that do not fit, ...

    `loc` is the path to the offending field inside the spec, e.g. ("model", "layers", 3).
    """

    def __init__(self, message: str, loc: Sequence[str | int] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.loc: Loc = tuple(loc)

    def prefixed(self, *prefix: str | int) -> SpecError:
        return SpecError(self.message, (*prefix, *self.loc))


class DataError(SpecError):
    """Data that do not fit the spec (shape, dtype, NaN, ragged lists)."""


class TrainingDiverged(DLModelsError):
    """The loss became NaN or infinite; training cannot go on meaningfully."""


class TrainingStopped(DLModelsError):
    """A callback asked training to stop early for a reason other than convergence (e.g. cancel)."""
