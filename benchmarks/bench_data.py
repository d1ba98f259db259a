"""Is the data pipeline ever the bottleneck? Measures, in one run on this machine:

1. augmented 256×256 patches/s out of `dataset.train_dataset` (tf.data, parallel map, policy "default");
2. single-thread cost per patch of each stage (crop, augmentation) to show where the data time goes;
3. training patches/s of the default U-Net (`build_model("unet")`, loss bce_dice) on in-memory batches.

Prints `data_to_train_ratio=<1 / 3>` as its last line (goal >= 3). Data: the ISBI 2012 EM training images from
../shared/data when present (or --manifest), else a synthetic set.

    python benchmarks/bench_data.py [--seconds 8] [--patch-size 256] [--batch-size 8] [--policy default]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

SHARED_ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012_em" / "manifest.csv"


def _pairs(manifest: str | None, channels: int):
    from cellseg_tf.data.dataset import load_pairs
    from cellseg_tf.data.io import open_manifest
    from cellseg_tf.data.manifest import select

    if manifest is None and SHARED_ISBI.is_file():
        manifest = str(SHARED_ISBI)
    if manifest is None:
        import tempfile

        from cellseg_tf.data.synthetic import make_dataset

        manifest = str(make_dataset(tempfile.mkdtemp(), n_images=8, shape=(512, 512), splits=(8, 0, 0), seed=0))
    rows = select(open_manifest(manifest), "train")
    t = time.perf_counter()
    pairs = load_pairs(rows, channels)
    return manifest, pairs, time.perf_counter() - t


def _timed(fn, seconds: float, min_iters: int = 3) -> tuple[int, float]:
    """Call fn() repeatedly for about `seconds` (at least min_iters times); returns (iterations, elapsed s)."""
    n, start = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n, time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default=None)
    ap.add_argument("--patch-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--policy", default="default")
    ap.add_argument("--model", default="unet")
    ap.add_argument("--seconds", type=float, default=8.0, help="time spent on each measurement")
    args = ap.parse_args(argv)

    import keras
    import tensorflow as tf

    from cellseg_tf.data.augment import apply_policy, get_policy
    from cellseg_tf.data.dataset import PatchSampler, train_dataset
    from cellseg_tf.training.losses import get_loss
    from cellseg_tf.models import build_model

    p, b = args.patch_size, args.batch_size
    manifest, pairs, load_s = _pairs(args.manifest, 1)
    print(f"data: {manifest} ({len(pairs)} training images, load+normalise {load_s:.2f} s, cached in memory)")
    print(f"cpu cores visible: {os.cpu_count()}  tf inter/intra threads: "
          f"{tf.config.threading.get_inter_op_parallelism_threads()}/"
          f"{tf.config.threading.get_intra_op_parallelism_threads()} (0 = all)")

    # 1. tf.data pipeline throughput
    it = iter(train_dataset(pairs, p, b, policy=args.policy, seed=0))
    for _ in range(3):
        next(it)  # warm up: tracing, thread pool, prefetch buffer
    n, dt = _timed(lambda: next(it), args.seconds)
    data_rate = n * b / dt
    print(f"data pipeline ({args.policy}, tf.data parallel map): {data_rate:.1f} patches/s ({n} batches of {b})")

    # 2. where the data time goes (one thread, no tf.data)
    sampler = PatchSampler(pairs, p, "none", seed=0)
    k, dt_crop = _timed(lambda: sampler.sample(np.random.randint(1 << 30)), args.seconds / 4)
    pipeline = get_policy(args.policy, p, 1, seed=0)
    img, msk = sampler.sample(0)
    k2, dt_aug = _timed(lambda: apply_policy(pipeline, img, msk[..., 0].astype(np.uint8)), args.seconds / 4)
    print(f"per patch, one thread: crop {1e3 * dt_crop / k:.2f} ms, augmentation '{args.policy}' "
          f"{1e3 * dt_aug / k2:.2f} ms")

    # 3. training throughput of the default model on in-memory batches (data cost excluded)
    keras.utils.set_random_seed(0)
    model = build_model(args.model, input_shape=(p, p, 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=get_loss("bce_dice"))
    x, y = next(it)
    x, y = x.numpy(), y.numpy()
    for _ in range(2):
        model.train_on_batch(x, y)  # warm up: graph build
    n, dt = _timed(lambda: model.train_on_batch(x, y), args.seconds)
    train_rate = n * b / dt
    print(f"training ({args.model}, {model.count_params():,} params, batch {b}): {train_rate:.1f} patches/s "
          f"({n} steps)")
    print(f"data_to_train_ratio={data_rate / train_rate:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
