"""Shared fixtures: tiny synthetic datasets, the shared/ data root, and dtype-policy hygiene."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory) -> Path:
    """6 synthetic 64×64 nuclei images (4 train / 1 val / 1 test) with a manifest."""
    from cellseg_tf.data.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("tiny"), n_images=6, shape=(64, 64), splits=(4, 1, 1), seed=1)


@pytest.fixture(autouse=True)
def _reset_dtype_policy():
    """No dtype-policy leakage between tests."""
    yield
    import sys

    if "keras" in sys.modules:
        import keras

        keras.mixed_precision.set_global_policy("float32")
