"""Streaming evaluation metrics: accumulate per batch, reduce once per epoch.

A metric lives inside the training loop, so ``update()`` is written with tensor ops only: no
``.item()``, ``.tolist()``, ``.cpu()``, truth-testing of tensors or Python loops over elements.
Any of those would make the host wait for the device on every batch. Everything that needs a
host-side value (including input validation that depends on the data) is deferred to
``compute()``, which runs once per epoch and returns a plain ``float``.

State is accumulated in float64 / int64 so sums over many batches do not lose precision.

Regression metrics take float ``preds`` and ``target`` of the same shape ``[B, k]`` (a 1-D
``[B]`` is read as ``[B, 1]``). Classification metrics take int64 label tensors ``[B]`` and need
``num_classes >= 2``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar, Literal, TypeVar

import torch

from dlmodels.registry import Registry, UnknownNameError

__all__ = [
    "METRICS",
    "Metric",
    "UnknownNameError",
    "create_metric",
]

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class Metric(abc.ABC):
    """A streaming accumulator: ``reset()``, then ``update()`` per batch, then ``compute()``.

    ``device`` is where the state lives. Inputs are moved there with ``.to(device)``, a no-op
    when the caller already passes tensors on that device (the intended use); otherwise it is
    a copy, and a device-to-host copy waits for the device.
    """

    name: ClassVar[str]
    kind: ClassVar[Literal["regression", "classification"]]

    def __init__(
        self, *, num_classes: int | None = None, device: torch.device | str = "cpu"
    ) -> None:
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.reset()

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget everything seen so far."""

    @abc.abstractmethod
    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Fold one batch into the state, without synchronising with the device."""

    @abc.abstractmethod
    def compute(self) -> float:
        """The metric over everything since the last ``reset()``; raises if nothing was seen."""

    def _empty_error(self) -> ValueError:
        return ValueError(f"metric {self.name!r}: compute() called before any sample was seen")


METRICS: Registry[type[Metric]] = Registry("metric")

_MetricT = TypeVar("_MetricT", bound=Metric)


def _register(cls: type[_MetricT]) -> type[_MetricT]:
    # Register under the class's own ``name`` so the name is written once.
    METRICS.add(cls.name, cls)
    return cls


def create_metric(
    name: str, *, num_classes: int | None, device: torch.device | str = "cpu"
) -> Metric:
    """Instantiate a registered metric; raises ``UnknownNameError`` for an unknown name.

    ``num_classes`` is required by classification metrics and ignored by regression ones.
    """
    return METRICS.get(name)(num_classes=num_classes, device=device)


# --------------------------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _ColumnStats:
    """Running per-output-column sums, each a float64 tensor of shape ``[k]``."""

    sum_sq_err: torch.Tensor
    sum_abs_err: torch.Tensor
    # Target mean and sum of squared deviations from it, merged batch by batch with Chan et
    # al.'s parallel update: sum(y^2) - sum(y)^2 / n would cancel catastrophically when the
    # target has a large offset relative to its spread.
    target_mean: torch.Tensor
    target_m2: torch.Tensor
    # Exact constant-target detection for r2: a tiny non-zero m2 from rounding must not
    # count as variance.
    target_min: torch.Tensor
    target_max: torch.Tensor

    @classmethod
    def zeros(cls, k: int, device: torch.device) -> _ColumnStats:
        def full(value: float) -> torch.Tensor:
            return torch.full((k,), value, dtype=torch.float64, device=device)

        return cls(
            sum_sq_err=full(0.0),
            sum_abs_err=full(0.0),
            target_mean=full(0.0),
            target_m2=full(0.0),
            target_min=full(float("inf")),
            target_max=full(float("-inf")),
        )


class _RegressionMetric(Metric):
    """Shared accumulator for the regression metrics; subclasses only differ in ``compute``."""

    kind = "regression"

    def reset(self) -> None:
        # Rows seen so far. Batch sizes come from shapes, which the host already knows, so
        # counting in Python costs no synchronisation.
        self._count = 0
        # Allocated on the first batch, once the number of output columns is known.
        self._stats: _ColumnStats | None = None

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.shape != target.shape:
            raise ValueError(
                f"metric {self.name!r}: preds shape {tuple(preds.shape)} != "
                f"target shape {tuple(target.shape)}"
            )
        if preds.dim() == 1:
            preds, target = preds.unsqueeze(1), target.unsqueeze(1)
        if preds.dim() != 2:
            raise ValueError(
                f"metric {self.name!r}: expected [B, k] tensors, got {tuple(preds.shape)}"
            )
        batch, k = preds.shape
        if self._stats is None:
            self._stats = _ColumnStats.zeros(k, self.device)
        elif self._stats.sum_sq_err.shape[0] != k:
            raise ValueError(
                f"metric {self.name!r}: got {k} output columns, earlier batches had "
                f"{self._stats.sum_sq_err.shape[0]}"
            )
        if batch == 0:
            return  # amin/amax reject empty tensors, and there is nothing to add.

        # detach: preds may still carry the autograd graph of the forward pass.
        p = preds.detach().to(self.device, torch.float64)
        y = target.detach().to(self.device, torch.float64)
        s = self._stats

        err = p - y
        s.sum_sq_err += err.square().sum(0)
        s.sum_abs_err += err.abs().sum(0)

        batch_mean = y.mean(0)
        batch_m2 = (y - batch_mean).square().sum(0)
        total = self._count + batch
        delta = batch_mean - s.target_mean
        s.target_mean += delta * (batch / total)
        s.target_m2 += batch_m2 + delta.square() * (self._count * batch / total)
        torch.minimum(s.target_min, y.amin(0), out=s.target_min)
        torch.maximum(s.target_max, y.amax(0), out=s.target_max)
        self._count = total

    def _seen(self) -> _ColumnStats:
        if self._stats is None or self._count == 0:
            raise self._empty_error()
        return self._stats


@_register
class MeanSquaredError(_RegressionMetric):
    """Mean of squared errors over all elements (sklearn ``mean_squared_error``)."""

    name = "mse"

    def compute(self) -> float:
        s = self._seen()
        return float(s.sum_sq_err.sum() / (self._count * s.sum_sq_err.numel()))


@_register
class MeanAbsoluteError(_RegressionMetric):
    """Mean of absolute errors over all elements (sklearn ``mean_absolute_error``)."""

    name = "mae"

    def compute(self) -> float:
        s = self._seen()
        return float(s.sum_abs_err.sum() / (self._count * s.sum_abs_err.numel()))


@_register
class R2Score(_RegressionMetric):
    """Coefficient of determination, ``1 - SSE / SST`` per output column, averaged uniformly.

    Matches sklearn ``r2_score(multioutput="uniform_average")`` except for a column whose
    target is constant (SST == 0): it scores 0.0 here, even for a perfect prediction, so an
    epoch of constant targets yields a finite number rather than NaN/inf and never a
    misleading 1.0.
    """

    name = "r2"

    def compute(self) -> float:
        s = self._seen()
        constant = s.target_max == s.target_min
        # Divide by 1 where constant so no inf/NaN is produced, then overwrite with 0.
        sst = torch.where(constant, torch.ones_like(s.target_m2), s.target_m2)
        per_column = torch.where(constant, torch.zeros_like(sst), 1.0 - s.sum_sq_err / sst)
        return float(per_column.mean())


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


class _ClassificationMetric(Metric):
    """Shared confusion-matrix accumulator; subclasses only differ in ``compute``.

    With ``num_classes == 2`` precision/recall/f1 are binary scores of the positive class 1;
    with more classes they are macro averages over all ``num_classes`` classes, where a
    class with a zero denominator (never predicted, or never present) scores 0, like
    sklearn's ``zero_division=0`` with ``labels=range(num_classes)``.
    """

    kind = "classification"

    def __init__(
        self, *, num_classes: int | None = None, device: torch.device | str = "cpu"
    ) -> None:
        if num_classes is None or num_classes < 2:
            raise ValueError(f"metric {self.name!r} needs num_classes >= 2, got {num_classes}")
        self._classes = num_classes
        super().__init__(num_classes=num_classes, device=device)

    def reset(self) -> None:
        c = self._classes
        # Flattened [actual, predicted] counts plus one trailing bin that counts labels
        # outside [0, C). Checking labels in update() would need a host read; instead they
        # are counted here and reported by compute().
        self._bins = torch.zeros(c * c + 1, dtype=torch.int64, device=self.device)
        self._count = 0

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.shape != target.shape or preds.dim() != 1:
            raise ValueError(
                f"metric {self.name!r}: expected label tensors of equal shape [B], got "
                f"preds {tuple(preds.shape)} and target {tuple(target.shape)}"
            )
        for what, t in (("preds", preds), ("target", target)):
            if t.dtype not in _INT_DTYPES:
                raise TypeError(
                    f"metric {self.name!r}: {what} must be integer labels, not {t.dtype}"
                )
        c = self._classes
        p = preds.detach().to(self.device, torch.int64)
        y = target.detach().to(self.device, torch.int64)
        valid = (p >= 0) & (p < c) & (y >= 0) & (y < c)
        index = torch.where(valid, y * c + p, c * c)
        # scatter_add_ into a fixed-size buffer rather than torch.bincount: bincount on CUDA
        # reads the maximum back to the host to size its output, i.e. it synchronises.
        self._bins.scatter_add_(0, index, torch.ones_like(index))
        self._count += preds.shape[0]

    def _confusion(self) -> torch.Tensor:
        """The float64 ``[actual, predicted]`` confusion matrix, after validating the labels."""
        if self._count == 0:
            raise self._empty_error()
        c = self._classes
        invalid = int(self._bins[-1])
        if invalid:
            raise ValueError(
                f"metric {self.name!r}: {invalid} label(s) outside [0, {c}) since the last reset"
            )
        return self._bins[:-1].view(c, c).to(torch.float64)

    def _average(self, numerator: torch.Tensor, denominator: torch.Tensor) -> float:
        """Per-class ratio with 0 for a zero denominator, then binary or macro reduction."""
        safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
        per_class = torch.where(denominator > 0, numerator / safe, torch.zeros_like(numerator))
        if self._classes == 2:
            return float(per_class[1])
        return float(per_class.mean())


@_register
class Accuracy(_ClassificationMetric):
    """Fraction of samples whose predicted label equals the target."""

    name = "accuracy"

    def compute(self) -> float:
        cm = self._confusion()
        return float(cm.diagonal().sum() / cm.sum())


@_register
class Precision(_ClassificationMetric):
    """TP / (TP + FP): binary for two classes, else macro-averaged."""

    name = "precision"

    def compute(self) -> float:
        cm = self._confusion()
        return self._average(cm.diagonal(), cm.sum(0))


@_register
class Recall(_ClassificationMetric):
    """TP / (TP + FN): binary for two classes, else macro-averaged."""

    name = "recall"

    def compute(self) -> float:
        cm = self._confusion()
        return self._average(cm.diagonal(), cm.sum(1))


@_register
class F1Score(_ClassificationMetric):
    """Harmonic mean of precision and recall, 2TP / (2TP + FP + FN), per class.

    The count form equals 2PR / (P + R) wherever that is defined and is 0 exactly when
    sklearn's ``zero_division=0`` gives 0.
    """

    name = "f1"

    def compute(self) -> float:
        cm = self._confusion()
        tp = cm.diagonal()
        return self._average(2 * tp, cm.sum(0) + cm.sum(1))
