"""Selection rules against values computed by hand."""
from __future__ import annotations

import math

import pytest

from hf_lines.eval.selection import (MergeRule, MetricRule, References, SelectionError, SingleTaskRule, get_rule,
                                     normalized)

REFS = References(
    zeroshot={"t": 0.50, "c1": 0.80, "c2": 0.60},
    finetuned={"t": 0.90, "c1": 0.40, "c2": 0.30},
)


def test_normalized_both_directions():
    assert normalized(0.45, 0.9) == pytest.approx(0.5)
    assert normalized(2.0, 1.0, higher_is_better=False) == pytest.approx(0.5)  # loss doubled: half as good
    assert math.isnan(normalized(0.3, 0.0))


def test_single_task_score_by_hand():
    rule = SingleTaskRule("t")
    m = {"t": 0.81, "c1": 0.72, "c2": 0.45}
    # 2 * 0.81/0.90 + mean(0.72/0.80, 0.45/0.60) = 2 * 0.9 + mean(0.9, 0.75) = 1.8 + 0.825
    assert rule.score(m, REFS) == pytest.approx(2.625)
    d = rule.details(m, REFS)
    assert d == pytest.approx({"target_normalized": 0.9, "control_normalized": 0.825})
    assert SingleTaskRule("t", target_weight=5).score(m, REFS) == pytest.approx(5 * 0.9 + 0.825)
    assert SingleTaskRule("t", control=["c2"]).score(m, REFS) == pytest.approx(1.8 + 0.75)


def test_single_task_ties_keep_larger_alpha():
    rule = SingleTaskRule("t")
    # the paper's gamma grid, alpha = gamma, beta = 1 - gamma: equal scores at gamma 0.3 and 0.6
    points = [(0.3, 0.7), (0.6, 0.4), (0.1, 0.9)]
    same = {"t": 0.9, "c1": 0.8, "c2": 0.6}
    worse = {"t": 0.45, "c1": 0.8, "c2": 0.6}
    assert rule.select(points, [same, same, worse], REFS) == 1
    assert rule.select(list(reversed(points)), [worse, same, same], REFS) == 1  # order does not matter
    # equal alpha: the larger beta wins
    assert rule.select([(0.5, 0.0), (0.5, 0.5)], [same, same], REFS) == 1


def test_merge_rule_by_hand_and_first_tie():
    refs = References(finetuned={"a": 0.8, "b": 0.5})
    rule = MergeRule()
    assert rule.score({"a": 0.6, "b": 0.45}, refs) == pytest.approx((0.75 + 0.9) / 2)
    assert rule.details({"a": 0.6, "b": 0.45}, refs) == pytest.approx({"a:normalized": 0.75, "b:normalized": 0.9})
    pts = [(0.1, 0.0), (0.2, 0.0), (0.3, 0.0)]
    ms = [{"a": 0.4, "b": 0.25}, {"a": 0.6, "b": 0.45}, {"a": 0.6, "b": 0.45}]
    assert rule.select(pts, ms, refs) == 1  # the first of equal maxima, as the paper's code


def test_metric_rule_follows_direction():
    refs = References(higher_is_better={"lm": False})
    rule = MetricRule(["lm"])
    assert rule.select([(0, 0), (1, 0)], [{"lm": 3.0}, {"lm": 2.0}], refs) == 1


def test_nan_scores_never_win_and_missing_refs_say_what():
    refs = References(finetuned={"a": 0.0, "b": 1.0})
    rule = MergeRule(["a"])
    with pytest.raises(SelectionError, match="no finite score"):
        rule.select([(0, 0)], [{"a": 0.5}], refs)
    with pytest.raises(SelectionError, match="no finetuned reference for task 'x'"):
        MergeRule(["x"]).score({"x": 1.0}, References())
    with pytest.raises(SelectionError, match="needs task"):
        SingleTaskRule("t").score({"c1": 1.0}, REFS)


def test_get_rule_forms():
    assert isinstance(get_rule("merge"), MergeRule)
    r = get_rule({"single_task": {"target": "t", "target_weight": 3}})
    assert isinstance(r, SingleTaskRule) and r.target_weight == 3
    custom = get_rule(lambda m, refs: m["a"])
    assert custom.select([(0, 0), (1, 0)], [{"a": 1}, {"a": 2}], References()) == 1
    with pytest.raises(SelectionError, match="unknown selection rule"):
        get_rule("best")
