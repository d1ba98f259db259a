"""Training throughput of the default model (TrainConfig defaults: model, patch size, batch size, loss, Adam).

Prints train patches/s in float32, measured over `--steps` optimizer steps after `--warmup` steps (tracing excluded):
- model: `train_on_batch` on one fixed in-memory batch (the network's cost alone);
- pipeline (with --pipeline): `model.fit` on the real augmented tf.data stream from synthetic images.
On a GPU it also measures mixed_float16 and prints the mixed/float32 step-time ratio (same run, same shapes);
without a GPU the ratio is reported as not measured.

    python benchmarks/bench_train.py [--steps 10] [--warmup 3] [--pipeline] [--patch-size P] [--batch-size B]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def _compiled_model(config):
    import keras

    from cellseg_tf.training.losses import get_loss
    from cellseg_tf.training.metrics import default_metrics
    from cellseg_tf.models import build_model
    from cellseg_tf.training.schedules import build_optimizer
    from cellseg_tf.training.engine import base_learning_rate

    keras.utils.set_random_seed(config.seed)
    model = build_model(config.model, input_shape=(config.patch_size, config.patch_size, config.channels),
                        **config.model_options)
    model.compile(optimizer=build_optimizer(config.optimizer, base_learning_rate(config)),
                  loss=get_loss(config.loss, **config.loss_options), metrics=default_metrics())
    return model


def bench_model(config, steps: int, warmup: int) -> float:
    """Seconds per train step on a fixed batch."""
    rng = np.random.default_rng(0)
    p, b = config.patch_size, config.batch_size
    x = rng.random((b, p, p, config.channels), dtype=np.float32)
    y = (rng.random((b, p, p, 1)) > 0.7).astype(np.float32)
    model = _compiled_model(config)
    for _ in range(warmup):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)  # returns numpy logs: the step has finished
    return (time.perf_counter() - start) / steps


def bench_pipeline(config, steps: int, warmup: int) -> float:
    """Seconds per train step through fit() on the augmented patch stream of 8 synthetic 256×256 images."""
    from cellseg_tf.data.dataset import load_pairs, train_dataset
    from cellseg_tf.data.io import open_manifest
    from cellseg_tf.data.manifest import select
    from cellseg_tf.data.synthetic import make_dataset

    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_dataset(Path(tmp) / "data", n_images=8, shape=(256, 256), splits=(8, 0, 0), seed=0)
        pairs = load_pairs(select(open_manifest(manifest), "train"), config.channels)
    ds = train_dataset(pairs, config.patch_size, config.batch_size, config.augmentation, config.seed)
    model = _compiled_model(config)
    model.fit(ds, steps_per_epoch=warmup, epochs=1, verbose=0, shuffle=False)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    return (time.perf_counter() - start) / steps


def main(argv=None) -> int:
    import tensorflow as tf

    from cellseg_tf.training.config import TrainConfig
    from cellseg_tf.training.engine import precision_policy

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--patch-size", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--pipeline", action="store_true", help="also time fit() on the augmented tf.data stream")
    args = ap.parse_args(argv)
    config = TrainConfig()
    config.patch_size = args.patch_size or config.patch_size
    config.batch_size = args.batch_size or config.batch_size
    gpus = tf.config.list_physical_devices("GPU")
    device = f"GPU ×{len(gpus)}" if gpus else f"CPU ({os.cpu_count()} logical cores visible)"
    print(f"model={config.model} options={config.model_options or '{}'} loss={config.loss} "
          f"patch={config.patch_size} batch={config.batch_size} device={device} tf={tf.__version__}")
    benches = [("model", bench_model)] + ([("pipeline", bench_pipeline)] if args.pipeline else [])
    for label, fn in benches:
        with precision_policy(False):
            t32 = fn(config, args.steps, args.warmup)
        print(f"[{label}] float32: {t32 * 1000:.1f} ms/step, {config.batch_size / t32:.1f} train patches/s "
              f"({args.steps} steps after {args.warmup} warm-up)")
        if gpus:
            with precision_policy(True):
                t16 = fn(config, args.steps, args.warmup)
            print(f"[{label}] mixed_float16: {t16 * 1000:.1f} ms/step, {config.batch_size / t16:.1f} train patches/s; "
                  f"step-time ratio mixed/float32 = {t16 / t32:.3f}")
        else:
            print(f"[{label}] mixed_float16/float32 step-time ratio: not measured (no GPU visible)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
