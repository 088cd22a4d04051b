"""bench.common's statistics: rounds kept apart for paired ratios."""

from __future__ import annotations

import itertools

import pytest

from bench.common import by_round, paired_ratio


def test_paired_ratio_follows_each_round_while_the_machine_drifts() -> None:
    # The machine halves its speed after the first round; each arm's own speed is steady:
    # "ours" always does 0.96 of the anchor's work per second.
    speed = itertools.chain([1.0, 1.0], itertools.repeat(0.5))
    arms = {"anchor": lambda: {"rate": [100 * next(speed)]},
            "ours": lambda: {"rate": [96 * next(speed)]}}
    pooled, each = by_round(arms, rounds=3)
    assert pooled == {"anchor": {"rate": [100, 50, 50]}, "ours": {"rate": [96, 48, 48]}}
    assert [r["ours"]["rate"] for r in each] == [[96], [48], [48]]
    stat = paired_ratio(each, "ours", "anchor", "rate")
    assert (stat.median, stat.min, stat.max, stat.n) == pytest.approx((0.96, 0.96, 0.96, 3))


def test_paired_ratio_is_robust_to_one_disturbed_round() -> None:
    each = [{"a": {"x": [1.0, 1.0]}, "b": {"x": [1.0, 1.0]}},
            {"a": {"x": [1.0, 1.0]}, "b": {"x": [2.0, 2.0]}},  # a burst slowed "a" here
            {"a": {"x": [1.0, 1.0]}, "b": {"x": [1.0, 1.0]}}]
    stat = paired_ratio(each, "a", "b", "x")
    assert (stat.median, stat.min, stat.max) == (1.0, 0.5, 1.0)
