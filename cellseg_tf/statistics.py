"""Statistics for reports on per-image scores (numpy + scipy.stats): is a model better than a baseline, and by how much?

* `one_sample_ttest`     — t-test of per-image scores against a fixed baseline (seed 002 §4.5: F1 vs 0.75)
* `paired_ttest`         — two models scored on the same images
* `cohens_d`             — effect size (one-sample: (mean − baseline)/sd; two-sample: pooled sd)
* `beta_credible_interval` — Bayesian share of images scoring >= a threshold (Beta posterior, seed 002 Table 6)
* `task_coverage_score`  — seed 000 Table 2: mean score over the tasks a method can run × share of tasks it can run
* `baseline_report`      — the seed 002 Table 6 bundle in one dict
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

_ALTERNATIVES = ("greater", "less", "two-sided")


def _values(values, name: str = "values") -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size < 2:
        raise ValueError(f"{name}: need at least 2 non-NaN values, got {v.size}")
    return v


def _p_value(t: float, df: float, alternative: str) -> float:
    from scipy import stats

    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative must be one of {_ALTERNATIVES}, got {alternative!r}")
    if alternative == "greater":
        return float(stats.t.sf(t, df))
    if alternative == "less":
        return float(stats.t.cdf(t, df))
    return float(2.0 * stats.t.sf(abs(t), df))


def one_sample_ttest(values: Sequence[float], baseline: float = 0.75, alternative: str = "greater",
                     level: float = 0.95) -> dict[str, float]:
    """Student's one-sample t-test of mean(values) against `baseline` (NaNs dropped).

    t = (mean − baseline) / (sd / √n), df = n − 1, sd with ddof = 1. alternative "greater" tests H1: μ > baseline
    (seed 002's "confidence level for μ ≥ 0.75" is 1 − p). Returns n, mean, sd, t, df, p, confidence (= 1 − p) and
    the two-sided `level` confidence interval of the mean (ci_low, ci_high). A zero-variance sample gives t = ±inf
    (or NaN when mean = baseline), as scipy does.
    """
    from scipy import stats

    v = _values(values)
    n, mean, sd = v.size, float(v.mean()), float(v.std(ddof=1))
    se = sd / math.sqrt(n)
    diff = mean - baseline
    with np.errstate(divide="ignore", invalid="ignore"):
        t = float(np.divide(diff, se))
    df = n - 1
    p = _p_value(t, df, alternative) if not math.isnan(t) else float("nan")
    half = float(stats.t.ppf(0.5 + level / 2.0, df) * se)
    return {"n": n, "mean": mean, "sd": sd, "baseline": float(baseline), "t": t, "df": df, "p": p,
            "confidence": 1.0 - p, "ci_low": mean - half, "ci_high": mean + half}


def paired_ttest(a: Sequence[float], b: Sequence[float], alternative: str = "two-sided") -> dict[str, float]:
    """Paired t-test of per-image differences a − b (same images, same order; pairs with a NaN are dropped).

    alternative "greater" tests H1: mean(a − b) > 0. Returns n, mean_diff, t, df, p and Cohen's d_z of the differences.
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} vs {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    res = one_sample_ttest(a[keep] - b[keep], baseline=0.0, alternative=alternative)
    return {"n": res["n"], "mean_diff": res["mean"], "t": res["t"], "df": res["df"], "p": res["p"],
            "cohens_d": cohens_d(a[keep] - b[keep], baseline=0.0)}


def cohens_d(values: Sequence[float], other: Sequence[float] | None = None, baseline: float = 0.0) -> float:
    """Cohen's d effect size.

    One sample (other is None): d = (mean − baseline) / sd (ddof = 1), seed 002's "effect size" against 0.75.
    Two independent samples: d = (mean_a − mean_b) / s_pooled, s_pooled² = ((n_a−1)s_a² + (n_b−1)s_b²)/(n_a+n_b−2).
    Rough reading (Cohen 1988): 0.2 small, 0.5 medium, 0.8 large.
    """
    a = _values(values)
    if other is None:
        return float((a.mean() - baseline) / a.std(ddof=1))
    b = _values(other, "other")
    pooled = ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)
    return float((a.mean() - b.mean()) / math.sqrt(pooled))


def beta_credible_interval(values: Sequence[float], threshold: float = 0.75, level: float = 0.95,
                           prior: tuple[float, float] = (1.0, 1.0)) -> dict[str, float]:
    """Bayesian estimate of the share of images with score >= threshold (NaNs dropped).

    k of n images succeed; with a Beta(a, b) prior (default uniform) the share's posterior is Beta(a + k, b + n − k).
    Returns successes, n, posterior_a, posterior_b, mean, and the equal-tailed `level` credible interval (low, high).
    """
    from scipy import stats

    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    k, n = int(np.count_nonzero(v >= threshold)), int(v.size)
    a, b = prior[0] + k, prior[1] + n - k
    tail = (1.0 - level) / 2.0
    return {"successes": k, "n": n, "threshold": float(threshold), "posterior_a": float(a), "posterior_b": float(b),
            "mean": float(a / (a + b)), "low": float(stats.beta.ppf(tail, a, b)),
            "high": float(stats.beta.ppf(1.0 - tail, a, b))}


def task_coverage_score(task_scores: Mapping[str, float | None]) -> dict[str, float]:
    """Seed 000 Table 2: final = (mean score over the tasks the method could run) × (tasks run / tasks).

    task_scores: {task: score, or None/NaN when the method cannot run it (e.g. shape-incompatible)}. E.g. Cellpose
    (0.9834, 0.9036, N/A) -> average 0.9435, coverage 0.6667, final 0.6290. No task run -> average NaN, final 0.
    """
    if not task_scores:
        raise ValueError("task_scores is empty")
    done = [float(s) for s in task_scores.values() if s is not None and not math.isnan(float(s))]
    coverage = len(done) / len(task_scores)
    average = float(np.mean(done)) if done else float("nan")
    return {"average": average, "coverage": coverage, "final": average * coverage if done else 0.0,
            "tasks": len(task_scores), "tasks_run": len(done)}


def baseline_report(values: Sequence[float], baseline: float = 0.75, level: float = 0.95,
                    prior: tuple[float, float] = (1.0, 1.0)) -> dict[str, dict | float]:
    """Seed 002 §4.5 / Table 6 in one dict: one-sided t-test, Cohen's d, Beta interval of the share >= baseline."""
    return {"ttest": one_sample_ttest(values, baseline, "greater", level),
            "cohens_d": cohens_d(values, baseline=baseline),
            "beta": beta_credible_interval(values, baseline, level, prior)}
