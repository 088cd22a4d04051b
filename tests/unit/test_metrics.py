"""dlmodels.metrics against sklearn.metrics, plus the registry and no-host-sync contracts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from dlmodels.metrics import METRICS, Metric, UnknownNameError, create_metric

# Deliberately uneven, including a single-row batch, so merging across batches is exercised.
BATCH_SIZES = [1, 17, 64, 5, 33]
REGRESSION = ["mae", "mse", "r2"]
CLASSIFICATION = ["accuracy", "f1", "precision", "recall"]


def batches(*tensors: torch.Tensor) -> Iterator[tuple[torch.Tensor, ...]]:
    start = 0
    for size in BATCH_SIZES:
        yield tuple(t[start : start + size] for t in tensors)
        start += size
    assert start == tensors[0].shape[0]


def feed(metric: Metric, preds: torch.Tensor, target: torch.Tensor) -> float:
    for p, y in batches(preds, target):
        metric.update(p, y)
    return metric.compute()


def regression_data(seed: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = sum(BATCH_SIZES)
    # A large offset on the target checks the variance merge does not cancel catastrophically.
    target = 1000.0 + 3.0 * torch.randn(n, k, generator=g)
    preds = target + torch.randn(n, k, generator=g)
    return preds, target


def classification_data(
    seed: int, num_classes: int, present: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random labels in [0, present); classes >= present never occur in preds or target."""
    g = torch.Generator().manual_seed(seed)
    n = sum(BATCH_SIZES)
    high = num_classes if present is None else present
    target = torch.randint(0, high, (n,), generator=g)
    # Mostly correct predictions, so the scores are far from both 0 and 1.
    noise = torch.randint(0, high, (n,), generator=g)
    preds = torch.where(torch.rand(n, generator=g) < 0.6, target, noise)
    return preds, target


SKLEARN_REGRESSION: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "mse": lambda y, p: float(skm.mean_squared_error(y, p)),
    "mae": lambda y, p: float(skm.mean_absolute_error(y, p)),
    "r2": lambda y, p: float(skm.r2_score(y, p, multioutput="uniform_average")),
}


def sklearn_classification(name: str, y: np.ndarray, p: np.ndarray, num_classes: int) -> float:
    if name == "accuracy":
        return float(skm.accuracy_score(y, p))
    fn = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}[name]
    if num_classes == 2:
        return float(fn(y, p, average="binary", pos_label=1, zero_division=0))
    # labels= makes absent classes count as 0 in the macro mean, as dlmodels does.
    labels = list(range(num_classes))
    return float(fn(y, p, labels=labels, average="macro", zero_division=0))


@pytest.mark.parametrize("name", REGRESSION)
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_regression_matches_sklearn(name: str, k: int, seed: int) -> None:
    preds, target = regression_data(seed, k)
    got = feed(create_metric(name, num_classes=None, device="cpu"), preds, target)
    want = SKLEARN_REGRESSION[name](target.double().numpy(), preds.double().numpy())
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", REGRESSION)
def test_regression_accepts_1d_as_single_column(name: str) -> None:
    preds, target = regression_data(2, 1)
    one_d = feed(create_metric(name, num_classes=None), preds[:, 0], target[:, 0])
    two_d = feed(create_metric(name, num_classes=None), preds, target)
    assert one_d == pytest.approx(two_d, rel=1e-12)


def test_r2_constant_target_column_scores_zero() -> None:
    preds, target = regression_data(3, 3)
    target[:, 1] = 7.0
    got = feed(create_metric("r2", num_classes=None), preds, target)
    per_column = skm.r2_score(
        target.double().numpy(), preds.double().numpy(), multioutput="raw_values"
    )
    assert got == pytest.approx((per_column[0] + 0.0 + per_column[2]) / 3, rel=1e-9)


def test_r2_constant_target_is_zero_even_when_predicted_perfectly() -> None:
    target = torch.full((sum(BATCH_SIZES), 2), 0.1)
    assert feed(create_metric("r2", num_classes=None), target.clone(), target) == 0.0


@pytest.mark.parametrize("name", CLASSIFICATION)
@pytest.mark.parametrize("num_classes", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_classification_matches_sklearn(name: str, num_classes: int, seed: int) -> None:
    preds, target = classification_data(seed, num_classes)
    got = feed(create_metric(name, num_classes=num_classes), preds, target)
    want = sklearn_classification(name, target.numpy(), preds.numpy(), num_classes)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_macro_counts_absent_classes_as_zero(name: str) -> None:
    # Classes 3 and 4 never occur: each contributes 0 to the macro mean of five classes.
    preds, target = classification_data(4, 5, present=3)
    got = feed(create_metric(name, num_classes=5), preds, target)
    want = sklearn_classification(name, target.numpy(), preds.numpy(), 5)
    assert got == pytest.approx(want, rel=1e-12)
    if name != "accuracy":
        present_only = sklearn_classification(name, target.numpy(), preds.numpy(), 3)
        assert got == pytest.approx(present_only * 3 / 5, rel=1e-12)


def test_binary_never_predicting_positive_scores_zero() -> None:
    target = torch.tensor([0, 1, 1, 0])
    preds = torch.zeros(4, dtype=torch.int64)
    for name in ("precision", "recall", "f1"):
        metric = create_metric(name, num_classes=2)
        metric.update(preds, target)
        assert metric.compute() == 0.0


def test_registry_holds_exactly_the_documented_metrics() -> None:
    assert METRICS.names() == sorted(REGRESSION + CLASSIFICATION)
    for name, cls in METRICS.items():
        assert cls.name == name
        assert cls.kind == ("regression" if name in REGRESSION else "classification")


def sample_batch(metric: Metric, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if metric.kind == "regression":
        return regression_data(seed, 2)
    return classification_data(seed, 3)


@pytest.mark.parametrize("name", METRICS.names())
def test_reset_forgets_everything(name: str) -> None:
    fresh = create_metric(name, num_classes=3)
    reused = create_metric(name, num_classes=3)
    feed(reused, *sample_batch(reused, seed=10))
    reused.reset()
    with pytest.raises(ValueError, match="before any sample"):
        reused.compute()
    data = sample_batch(fresh, seed=11)
    assert feed(reused, *data) == feed(fresh, *data)


@pytest.mark.parametrize("name", METRICS.names())
def test_compute_before_update_raises(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        create_metric(name, num_classes=3).compute()


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        create_metric("rmsle", num_classes=None, device="cpu")
    message = str(info.value)
    assert "rmsle" in message
    for name in METRICS.names():
        assert name in message


@pytest.mark.parametrize("name", CLASSIFICATION)
@pytest.mark.parametrize("num_classes", [None, 1])
def test_classification_requires_num_classes(name: str, num_classes: int | None) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        create_metric(name, num_classes=num_classes)


def test_classification_rejects_float_preds() -> None:
    metric = create_metric("accuracy", num_classes=3)
    with pytest.raises(TypeError, match="integer labels"):
        metric.update(torch.rand(4), torch.zeros(4, dtype=torch.int64))


def test_out_of_range_labels_are_reported_by_compute() -> None:
    metric = create_metric("accuracy", num_classes=3)
    # -1 would alias a valid flat index (target * C + preds) if it were not masked out.
    metric.update(torch.tensor([0, -1, 3, 2]), torch.tensor([0, 1, 1, 2]))
    with pytest.raises(ValueError, match="2 label"):
        metric.compute()


def test_regression_rejects_shape_mismatch_and_column_change() -> None:
    metric = create_metric("mse", num_classes=None)
    with pytest.raises(ValueError, match="shape"):
        metric.update(torch.zeros(4, 2), torch.zeros(4, 3))
    metric.update(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="columns"):
        metric.update(torch.zeros(4, 3), torch.zeros(4, 3))


def test_update_accepts_preds_that_require_grad() -> None:
    preds, target = regression_data(5, 2)
    metric = create_metric("mse", num_classes=None)
    assert feed(metric, preds.requires_grad_(), target) > 0.0


def _forbidden(*_: Any, **__: Any) -> Any:
    raise AssertionError("update() read a tensor back to the host")


@pytest.mark.parametrize("name", METRICS.names())
def test_update_never_reads_tensors_on_the_host(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    metric = create_metric(name, num_classes=3)
    data = sample_batch(metric, seed=12)
    with monkeypatch.context() as patch:
        # Every Python-level way a tensor's value reaches the host, implicit ones included.
        for attr in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
            patch.setattr(torch.Tensor, attr, _forbidden)
        for p, y in batches(*data):
            metric.update(p, y)
    assert isinstance(metric.compute(), float)


@pytest.mark.parametrize("name", METRICS.names())
def test_update_runs_on_meta_tensors(name: str) -> None:
    # Meta tensors have shapes but no data, so any data-dependent host read (including ones
    # inside torch, such as bincount sizing its output) fails here.
    metric = create_metric(name, num_classes=3, device="meta")
    preds, target = sample_batch(metric, seed=13)
    for p, y in batches(preds.to("meta"), target.to("meta")):
        metric.update(p, y)
