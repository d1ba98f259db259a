"""Report statistics against scipy.stats, closed forms and the published seed tables."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cellseg_tf.statistics import (baseline_report, beta_credible_interval, cohens_d, one_sample_ttest, paired_ttest,
                                   task_coverage_score)

F1 = np.random.default_rng(0).normal(0.8, 0.07, 40).clip(0, 1)


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_one_sample_ttest_matches_scipy(alternative):
    res = one_sample_ttest(F1, 0.75, alternative)
    ref = stats.ttest_1samp(F1, 0.75, alternative=alternative)
    assert res["t"] == pytest.approx(ref.statistic) and res["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert res["df"] == 39 and res["confidence"] == pytest.approx(1 - ref.pvalue)
    lo, hi = stats.t.interval(0.95, 39, loc=F1.mean(), scale=stats.sem(F1))
    assert (res["ci_low"], res["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))


def test_ttest_drops_nan_and_rejects_tiny_samples():
    res = one_sample_ttest(np.append(F1, np.nan), 0.75)
    assert res["n"] == 40 and res["t"] == pytest.approx(stats.ttest_1samp(F1, 0.75).statistic)
    with pytest.raises(ValueError, match="at least 2"):
        one_sample_ttest([0.9, np.nan])
    with pytest.raises(ValueError, match="alternative"):
        one_sample_ttest(F1, 0.75, "bigger")


def test_paired_ttest_matches_scipy():
    other = F1 - np.random.default_rng(1).normal(0.02, 0.03, F1.size)
    res = paired_ttest(F1, other, "greater")
    ref = stats.ttest_rel(F1, other, alternative="greater")
    assert res["t"] == pytest.approx(ref.statistic) and res["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    diff = F1 - other
    assert res["cohens_d"] == pytest.approx(diff.mean() / diff.std(ddof=1))
    with pytest.raises(ValueError, match="length"):
        paired_ttest(F1, other[:5])


def test_cohens_d_hand_computed():
    v = np.array([0.7, 0.8, 0.9])                 # mean 0.8, sd 0.1
    assert cohens_d(v, baseline=0.75) == pytest.approx(0.5)
    a, b = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0])   # var 1 and 4 -> pooled sqrt(2.5)
    assert cohens_d(a, b) == pytest.approx((2.0 - 4.0) / np.sqrt(2.5))
    # one-sample d relates to t by d = t / sqrt(n)
    assert cohens_d(F1, baseline=0.75) == pytest.approx(one_sample_ttest(F1, 0.75)["t"] / np.sqrt(F1.size))


def test_beta_credible_interval_closed_form_and_scipy():
    # all 9 succeed, uniform prior -> Beta(10, 1): CDF x^10, so quantiles are q^(1/10)
    res = beta_credible_interval([0.9] * 9, threshold=0.75)
    assert (res["successes"], res["n"], res["posterior_a"], res["posterior_b"]) == (9, 9, 10.0, 1.0)
    assert res["low"] == pytest.approx(0.025 ** 0.1) and res["high"] == pytest.approx(0.975 ** 0.1)
    assert res["mean"] == pytest.approx(10 / 11)
    res = beta_credible_interval(F1, threshold=0.8, level=0.9, prior=(0.5, 0.5))
    k = int(np.sum(F1 >= 0.8))
    lo, hi = stats.beta.interval(0.9, 0.5 + k, 0.5 + F1.size - k)
    assert res["successes"] == k and (res["low"], res["high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert res["low"] < k / F1.size < res["high"]


def test_task_coverage_score_reproduces_seed_000_table_2():
    cellpose = task_coverage_score({"task1": 0.9834, "task2": 0.9036, "task3": None})
    assert cellpose["average"] == pytest.approx(0.9435, abs=1e-4)
    assert cellpose["coverage"] == pytest.approx(2 / 3) and cellpose["final"] == pytest.approx(0.6290, abs=1e-4)
    stardist = task_coverage_score({"task1": 0.8232, "task2": 0.5904, "task3": 0.5164})
    ours = task_coverage_score({"task1": 0.9908, "task2": 0.9327, "task3": 0.6357})
    assert stardist["final"] == pytest.approx(0.6433, abs=1e-4) and ours["final"] == pytest.approx(0.8531, abs=1e-4)
    # the paper's +32.60 % / +35.62 % improvements
    assert ours["final"] / stardist["final"] - 1 == pytest.approx(0.3260, abs=5e-4)
    assert ours["final"] / cellpose["final"] - 1 == pytest.approx(0.3562, abs=5e-4)
    none = task_coverage_score({"a": None, "b": float("nan")})
    assert none["final"] == 0.0 and none["tasks_run"] == 0
    with pytest.raises(ValueError):
        task_coverage_score({})


def test_baseline_report_bundle():
    rep = baseline_report(F1, baseline=0.75)
    assert rep["ttest"]["p"] == pytest.approx(stats.ttest_1samp(F1, 0.75, alternative="greater").pvalue)
    assert rep["cohens_d"] == pytest.approx(cohens_d(F1, baseline=0.75))
    assert rep["beta"]["successes"] == int(np.sum(F1 >= 0.75))
