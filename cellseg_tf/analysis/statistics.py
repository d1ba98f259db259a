"""Statistics for reports on per-image scores (numpy + scipy.stats): is a model better than a baseline, and by how much?

* `one_sample_ttest`     — t-test of per-image scores against a fixed baseline (Das et al. 2025 §4.5: F1 vs 0.75)
* `paired_ttest`         — two models scored on the same images
* `cohens_d`             — effect size (one-sample: (mean − baseline)/sd; two-sample: pooled sd)
* `beta_credible_interval` — Bayesian share of images scoring >= a threshold (Beta posterior, Das et al. 2025 Table 6)
* `task_coverage_score`  — Chen et al. 2025 Table 2: mean score over the tasks a method can run × share it can run
* `baseline_report`      — the Das et al. 2025 Table 6 bundle in one dict
* `compare_reports`      — `cellseg-tf compare A.csv B.csv`: two `evaluate` reports on the same images, paired
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..common.files import write_text_atomic

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
    (Das et al. 2025's "confidence level for μ ≥ 0.75" is 1 − p). Returns n, mean, sd, t, df, p, confidence
    (= 1 − p) and the two-sided `level` confidence interval of the mean (ci_low, ci_high). A zero-variance sample
    gives t = ±inf (or NaN when mean = baseline), as scipy does.
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

    alternative "greater" tests H1: mean(a − b) > 0. Returns n, mean_diff, sd_diff, t, df, p, the two-sided 95 %
    confidence interval of the mean difference (ci_low, ci_high) and Cohen's d_z = mean_diff / sd_diff.
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} vs {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    res = one_sample_ttest(a[keep] - b[keep], baseline=0.0, alternative=alternative)
    return {"n": res["n"], "mean_diff": res["mean"], "sd_diff": res["sd"], "t": res["t"], "df": res["df"],
            "p": res["p"], "ci_low": res["ci_low"], "ci_high": res["ci_high"],
            "cohens_d": cohens_d(a[keep] - b[keep], baseline=0.0)}


def cohens_d(values: Sequence[float], other: Sequence[float] | None = None, baseline: float = 0.0) -> float:
    """Cohen's d effect size.

    One sample (other is None): d = (mean − baseline) / sd (ddof = 1), Das et al. 2025's "effect size" against 0.75;
    for paired differences this is d_z. A zero sd gives ±inf (NaN when the mean difference is 0 too).
    Two independent samples: d = (mean_a − mean_b) / s_pooled,
    s_pooled² = ((n_a−1)s_a² + (n_b−1)s_b²)/(n_a+n_b−2).
    Rough reading (Cohen 1988): 0.2 small, 0.5 medium, 0.8 large.
    """
    a = _values(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        if other is None:
            return float(np.divide(a.mean() - baseline, a.std(ddof=1)))
        b = _values(other, "other")
        pooled = ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)
        return float(np.divide(a.mean() - b.mean(), np.sqrt(pooled)))


def beta_credible_interval(values: Sequence[float], threshold: float = 0.75, level: float = 0.95,
                           prior: tuple[float, float] = (1.0, 1.0), higher_is_better: bool = True) -> dict[str, float]:
    """Bayesian estimate of the share of images with score >= threshold (<= for a distance, higher_is_better=False;
    NaNs dropped).

    k of n images succeed; with a Beta(a, b) prior (default uniform) the share's posterior is Beta(a + k, b + n − k).
    Returns successes, n, posterior_a, posterior_b, mean, and the equal-tailed `level` credible interval (low, high).
    """
    from scipy import stats

    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    k, n = int(np.count_nonzero(v >= threshold if higher_is_better else v <= threshold)), int(v.size)
    a, b = prior[0] + k, prior[1] + n - k
    tail = (1.0 - level) / 2.0
    return {"successes": k, "n": n, "threshold": float(threshold), "posterior_a": float(a), "posterior_b": float(b),
            "mean": float(a / (a + b)), "low": float(stats.beta.ppf(tail, a, b)),
            "high": float(stats.beta.ppf(1.0 - tail, a, b))}


def task_coverage_score(task_scores: Mapping[str, float | None]) -> dict[str, float]:
    """Chen et al. 2025 Table 2: final = (mean score over the tasks the method could run) × (tasks run / tasks).

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
    """Das et al. 2025 §4.5 / Table 6 in one dict: one-sided t-test, Cohen's d, Beta interval of the share >=
    baseline."""
    return {"ttest": one_sample_ttest(values, baseline, "greater", level),
            "cohens_d": cohens_d(values, baseline=baseline),
            "beta": beta_credible_interval(values, baseline, level, prior)}


# --------------------------------------------------------------------------------------------------------------
# Two evaluate reports on the same images (`cellseg-tf compare A.csv B.csv`)
# --------------------------------------------------------------------------------------------------------------

#: Report columns where a smaller value is better (distances in pixels); every other score: larger is better.
LOWER_IS_BETTER = ("hausdorff", "hausdorff95")


@dataclass
class Comparison:
    """B against A on the images both reports score.

    per_image: DataFrame with columns image, a, b, diff (= b − a), outcome ("win" when B is better, "tie", "loss";
    "" when either score is NaN) and b_meets_threshold. summary: the one-row statistics (see `compare_reports`).
    """

    metric: str
    summary: dict
    per_image: "pandas.DataFrame"

    def line(self) -> str:
        """`metric=dice n=<n> mean_diff=<v> t=<v> p=<v> cohens_d=<v> wins=<n> ties=<n> losses=<n>`."""
        s = self.summary
        return (f"metric={self.metric} n={s['n']} mean_diff={s['mean_diff']:.4g} t={s['t']:.4g} p={s['p']:.4g} "
                f"cohens_d={s['cohens_d']:.4g} wins={s['wins']} ties={s['ties']} losses={s['losses']}")


def read_scores(path: str | os.PathLike, metric: str, key: str = "image"):
    """One column of an `evaluate` report as a float Series indexed by `key` (the image path of each row).

    Raises ValueError naming the file when it lacks `key` or `metric`, repeats an image, or has a non-numeric score.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: report not found (write one with cellseg-tf evaluate --out)")
    try:
        report = pd.read_csv(path)
    except Exception as exc:  # pandas raises several types for malformed CSV
        raise ValueError(f"{path}: cannot read report CSV ({exc})") from exc
    for column in (key, metric):
        if column not in report.columns:
            raise ValueError(f"{path}: no {column!r} column; columns: {', '.join(map(str, report.columns))}")
    repeated = report[key][report[key].duplicated()].tolist()
    if repeated:
        raise ValueError(f"{path}: image {repeated[0]} has more than one row")
    scores = pd.to_numeric(report[metric], errors="coerce")
    bad = scores.isna() & report[metric].notna()
    if bad.any():
        raise ValueError(f"{path}: {metric} of {report[key][bad].iloc[0]} is not a number "
                         f"({report[metric][bad].iloc[0]!r})")
    return pd.Series(scores.to_numpy(dtype=np.float64), index=report[key].astype(str), name=metric)


def _same_images(a, b, path_a, path_b) -> None:
    only_a, only_b = a.index.difference(b.index), b.index.difference(a.index)
    for missing, where, other in ((only_a, path_b, path_a), (only_b, path_a, path_b)):
        if len(missing):
            raise ValueError(f"{where}: {len(missing)} image(s) scored in {other} are missing here, e.g. "
                             f"{missing[0]}; compare reports of the same images (evaluate with the same manifest "
                             "and split)")


def compare_scores(a: Sequence[float], b: Sequence[float], metric: str = "dice", threshold: float = 0.75,
                   level: float = 0.95, higher_is_better: bool | None = None) -> dict:
    """Paired statistics of B against A: a[i] and b[i] score the same image; pairs with a NaN are left out.

    * two-sided paired t-test on diff = b − a (= scipy.stats.ttest_rel(b, a)): mean_diff, sd_diff, t, df, p and the
      `level` confidence interval of the mean difference (diff_ci_low, diff_ci_high);
    * Cohen's d_z = mean_diff / sd_diff (sd with ddof = 1, the paired-samples convention; d_z = t / √n);
    * wins / ties / losses: images where B is better than A / equal / worse ("better" = larger, or smaller for
      LOWER_IS_BETTER metrics; `higher_is_better` overrides);
    * a_share / b_share with _low / _high: Beta(1, 1) posterior mean and equal-tailed `level` credible interval of
      the share of images whose score meets `threshold` (>= it, or <= it for a distance).
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} vs {b.size}")
    better = metric not in LOWER_IS_BETTER if higher_is_better is None else bool(higher_is_better)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if a.size < 2:
        raise ValueError(f"{metric}: need at least 2 images scored in both reports, got {a.size}")
    test = one_sample_ttest(b - a, baseline=0.0, alternative="two-sided", level=level)
    gain = (b - a) if better else (a - b)
    share = {f"{name}_{k}": v for name, values in (("a", a), ("b", b))
             for k, v in _share(values, threshold, level, better).items()}
    return {"metric": metric, "n": int(a.size), "dropped": int(np.count_nonzero(~keep)),
            "mean_a": float(a.mean()), "mean_b": float(b.mean()), "mean_diff": test["mean"], "sd_diff": test["sd"],
            "diff_ci_low": test["ci_low"], "diff_ci_high": test["ci_high"], "t": test["t"], "df": test["df"],
            "p": test["p"], "cohens_d": cohens_d(b - a, baseline=0.0), "wins": int(np.count_nonzero(gain > 0)),
            "ties": int(np.count_nonzero(gain == 0)), "losses": int(np.count_nonzero(gain < 0)),
            "higher_is_better": better, "threshold": float(threshold), "level": float(level), **share}


def _share(values: np.ndarray, threshold: float, level: float, higher_is_better: bool) -> dict:
    beta = beta_credible_interval(values, threshold, level, higher_is_better=higher_is_better)
    return {"meets": beta["successes"], "share": beta["mean"], "share_low": beta["low"], "share_high": beta["high"]}


def compare_reports(path_a: str | os.PathLike, path_b: str | os.PathLike, metric: str = "dice",
                    threshold: float = 0.75, level: float = 0.95, key: str = "image") -> Comparison:
    """Compare two `cellseg-tf evaluate` reports (CSV, one row per image, keyed by `key`) of the same images.

    B is the candidate, A the reference: positive mean_diff / t / cohens_d mean B scores higher. Statistics as in
    `compare_scores`. Raises ValueError naming the file when the reports do not cover the same images.
    """
    import pandas as pd

    a, b = read_scores(path_a, metric, key), read_scores(path_b, metric, key)
    _same_images(a, b, path_a, path_b)
    b = b.reindex(a.index)
    summary = {"a": str(path_a), "b": str(path_b), **compare_scores(a.to_numpy(), b.to_numpy(), metric, threshold,
                                                                    level)}
    gain = (b - a) if summary["higher_is_better"] else (a - b)
    outcome = np.select([gain > 0, gain == 0, gain < 0], ["win", "tie", "loss"], default="")
    meets = b >= threshold if summary["higher_is_better"] else b <= threshold
    per_image = pd.DataFrame({"image": a.index, "a": a.to_numpy(), "b": b.to_numpy(), "diff": (b - a).to_numpy(),
                              "outcome": outcome, "b_meets_threshold": meets.to_numpy()})
    return Comparison(metric, summary, per_image)


def write_comparison(result: Comparison, out: str | os.PathLike) -> tuple[Path, Path]:
    """OUT (one row: the summary) and OUT's `<stem>_per_image.csv` beside it, both written atomically."""
    import pandas as pd

    out = Path(out)
    per_image = out.with_name(f"{out.stem}_per_image{out.suffix or '.csv'}")
    write_text_atomic(out, pd.DataFrame([result.summary]).to_csv(index=False))
    write_text_atomic(per_image, result.per_image.to_csv(index=False))
    return out, per_image
