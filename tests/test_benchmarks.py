"""The benchmark scripts still run against the package's current API (tiny settings, no timing asserted)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_train_runs_the_default_config_with_its_model_dependent_learning_rate(capsys):
    assert _load("bench_train").main(["--steps", "1", "--warmup", "1", "--patch-size", "32", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "train patches/s" in out and "model=unet" in out


@pytest.mark.slow
def test_bench_data_prints_its_ratio(capsys):
    _load("bench_data").main(["--patch-size", "32", "--batch-size", "2", "--seconds", "0.5"])
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("data_to_train_ratio=")
