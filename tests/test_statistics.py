"""Report statistics against scipy.stats, closed forms and the published tables; `compare` of two evaluate reports."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import pandas as pd

from cellseg_tf.analysis.statistics import (baseline_report, beta_credible_interval, cohens_d, compare_reports,
                                            compare_scores, one_sample_ttest, paired_ttest, task_coverage_score,
                                            write_comparison)
from cellseg_tf.cli import main

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


def test_task_coverage_score_reproduces_chen_et_al_table_2():
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


# ------------------------------------------------------------------------------------ compare two evaluate reports
def _report(path, images, dice, **extra):
    pd.DataFrame({"image": images, "prediction": [f"p/{i}.png" for i in range(len(images))], "dice": dice,
                  **extra}).to_csv(path, index=False)
    return path


def test_compare_scores_against_scipy_and_hand_computed_effect_size():
    a = np.array([0.70, 0.80, 0.60, 0.90, 0.75])
    b = np.array([0.72, 0.85, 0.60, 0.88, 0.80])          # diffs 0.02, 0.05, 0, -0.02, 0.05
    res = compare_scores(a, b, threshold=0.8)
    ref = stats.ttest_rel(b, a)
    assert res["t"] == pytest.approx(ref.statistic) and res["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert res["df"] == 4 and res["n"] == 5
    diff = [0.02, 0.05, 0.0, -0.02, 0.05]                  # mean 0.02; sd by hand, ddof 1
    sd = np.sqrt(sum((d - 0.02) ** 2 for d in diff) / 4)
    assert res["mean_diff"] == pytest.approx(0.02) and res["sd_diff"] == pytest.approx(sd)
    assert res["cohens_d"] == pytest.approx(0.02 / sd) and res["cohens_d"] == pytest.approx(ref.statistic / np.sqrt(5))
    assert (res["wins"], res["ties"], res["losses"]) == (3, 1, 1)
    # B meets 0.8 on 3 of 5 images: Beta(1 + 3, 1 + 2) posterior
    assert res["b_meets"] == 3 and res["b_share"] == pytest.approx(4 / 7)
    assert (res["b_share_low"], res["b_share_high"]) == (pytest.approx(stats.beta.ppf(0.025, 4, 3)),
                                                         pytest.approx(stats.beta.ppf(0.975, 4, 3)))
    assert res["a_meets"] == 2


def test_compare_distances_count_smaller_as_wins_and_drops_nan_pairs():
    a = np.array([5.0, 3.0, np.nan, 4.0])
    b = np.array([4.0, 3.5, 1.0, 2.0])
    res = compare_scores(a, b, metric="hausdorff95", threshold=3.0)
    assert (res["wins"], res["ties"], res["losses"], res["n"], res["dropped"]) == (2, 0, 1, 3, 1)
    assert res["mean_diff"] == pytest.approx(np.mean([-1.0, 0.5, -2.0]))
    assert res["b_meets"] == 1                             # b <= 3 px on the kept images: 2.0 only
    with pytest.raises(ValueError, match="at least 2"):
        compare_scores([0.5, np.nan], [0.6, 0.7])


def test_compare_reports_pairs_rows_by_image_not_by_order(tmp_path):
    images = [f"/data/img_{i}.tif" for i in range(6)]
    rng = np.random.default_rng(3)
    a_scores = rng.uniform(0.6, 0.9, 6)
    b_scores = a_scores + rng.normal(0.03, 0.02, 6)
    path_a = _report(tmp_path / "a.csv", images, a_scores)
    order = rng.permutation(6)
    path_b = _report(tmp_path / "b.csv", [images[i] for i in order], b_scores[order])
    result = compare_reports(path_a, path_b)
    ref = stats.ttest_rel(b_scores, a_scores)
    assert result.summary["t"] == pytest.approx(ref.statistic) and result.summary["n"] == 6
    np.testing.assert_allclose(result.per_image["diff"], b_scores - a_scores)
    assert list(result.per_image["image"]) == images
    assert set(result.per_image["outcome"]) <= {"win", "tie", "loss"}
    summary, per_image = write_comparison(result, tmp_path / "out" / "cmp.csv")
    assert per_image.name == "cmp_per_image.csv" and len(pd.read_csv(per_image)) == 6
    saved = pd.read_csv(summary)
    assert len(saved) == 1 and saved.loc[0, "p"] == pytest.approx(ref.pvalue)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]   # no temp files left


def test_compare_reports_of_different_images_name_the_file(tmp_path):
    path_a = _report(tmp_path / "a.csv", ["x.tif", "y.tif", "z.tif"], [0.5, 0.6, 0.7])
    path_b = _report(tmp_path / "b.csv", ["x.tif", "y.tif"], [0.5, 0.6])
    with pytest.raises(ValueError, match=r"b\.csv: 1 image\(s\) scored in .*a\.csv are missing here, e\.g\. z\.tif"):
        compare_reports(path_a, path_b)
    with pytest.raises(ValueError, match=r"b\.csv: 1 image\(s\) scored in .*a\.csv"):   # either order: the
        compare_reports(path_b, path_a)                                               # file lacking z.tif
    with pytest.raises(ValueError, match=r"a\.csv: no 'ssim' column"):
        compare_reports(path_a, path_b, metric="ssim")
    words = _report(tmp_path / "w.csv", ["x.tif", "y.tif", "z.tif"], [0.5, "high", 0.7])
    with pytest.raises(ValueError, match="w\\.csv: dice of y.tif is not a number \\('high'\\)"):
        compare_reports(path_a, words)
    twice = _report(tmp_path / "c.csv", ["x.tif", "x.tif"], [0.5, 0.6])
    with pytest.raises(ValueError, match="c\\.csv: image x.tif has more than one row"):
        compare_reports(twice, path_a)


def test_cli_compare_prints_the_summary_line_last(tmp_path, capsys):
    images = [f"im{i}.png" for i in range(5)]
    a, b = [0.70, 0.80, 0.60, 0.90, 0.75], [0.72, 0.85, 0.60, 0.88, 0.80]
    path_a = _report(tmp_path / "a.csv", images, a, hausdorff=[3.0, 2.0, 4.0, 1.0, 2.0])
    path_b = _report(tmp_path / "b.csv", images, b, hausdorff=[2.0, 2.0, 5.0, 1.0, 1.0])
    out = tmp_path / "compare.csv"
    assert main(["compare", str(path_a), str(path_b), "--out", str(out), "--threshold", "0.8"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    ref = stats.ttest_rel(b, a)
    assert last == (f"metric=dice n=5 mean_diff={0.02:.4g} t={ref.statistic:.4g} p={ref.pvalue:.4g} "
                    f"cohens_d={ref.statistic / np.sqrt(5):.4g} wins=3 ties=1 losses=1")
    assert pd.read_csv(out).loc[0, "b_meets"] == 3 and (tmp_path / "compare_per_image.csv").is_file()
    assert main(["compare", str(path_a), str(path_b), "--metric", "hausdorff", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("wins=2 ties=2 losses=1")
    assert main(["compare", str(path_a), str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    assert "missing.csv" in capsys.readouterr().err
