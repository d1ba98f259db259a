"""Training throughput at equal wall-clock time: a real `train()` run against a plain Keras training loop.

Arms, each given the same wall-clock seconds on this machine, interleaved in one run (per patch size, slots in the
order plain, package, package, plain, ... so a slow spell of a shared machine hits both):
- plain — what a user writes with Keras alone: the U-Net of the default model (base 16, depth 4, conv-BN-ReLU ×2,
  max-pool, bilinear up, concat skips, 1×1 sigmoid) written with keras.layers, BCE + Dice, Adam 1e-3, float32,
  random patches with random flips/rot90 drawn in numpy, `model.fit` on numpy arrays of `--chunk` batches at a time;
- package — `cellseg_tf.training.engine.train` with every TrainConfig default (augmentation, metrics, validation
  each epoch, best/last checkpoints, precision, schedule) except `patch_size`, `time_budget_s` and `verbose`;
- optional extra package arms: `--arm NAME:KEY=VALUE;KEY=VALUE` (TrainConfig overrides, e.g.
  `--arm f32:mixed_precision='off'`; YAML reads a bare off as false), to measure one setting against the defaults
  in the same run.

Each arm's time runs from its start (data loading, model building, tracing included) to its end (for the package:
the final validation and checkpoints included); patches are optimizer steps × batch. Per arm the median of its
slots' patches/s is reported, and beside it the process CPU time per patch: on a machine shared with other jobs the
wall-clock rate depends on their load, the CPU time much less (a CPU-time ratio > 1 means the package needs less
CPU per patch). Data: the ISBI 2012 train images in ../shared/data when present (or --manifest),
else a synthetic set. Last line: `train_to_plain_ratio_128=<v> train_to_plain_ratio_256=<v>` (package ÷ plain).

    python benchmarks/bench_train.py [--seconds 120] [--sizes 128,256] [--rounds 2] [--batch-size 16]
                                     [--arm NAME:KEY=VALUE;...] [--manifest M]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

SHARED_ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012_em" / "manifest.csv"


# ----------------------------------------------------------------------------------------------------------------
# The plain arm: Keras only


def plain_unet(patch: int, channels: int = 1, base: int = 16, depth: int = 4):
    """(B, P, P, C) -> (B, P, P, 1) sigmoid: (conv3×3 no bias, BN, ReLU) ×2 per level, max-pool, bilinear up,
    concat skip, 1×1 conv — the default model's architecture, written with plain keras.layers."""
    import keras
    from keras import layers

    def double_conv(x, filters):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal")(x)
            x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        return x

    inputs = keras.Input((patch, patch, channels))
    x, skips = inputs, []
    for level in range(depth):
        x = double_conv(x, base * 2 ** level)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = double_conv(x, base * 2 ** depth)
    for level in reversed(range(depth)):
        x = layers.UpSampling2D(2, interpolation="bilinear")(x)
        x = double_conv(layers.Concatenate()([x, skips[level]]), base * 2 ** level)
    return keras.Model(inputs, layers.Conv2D(1, 1, activation="sigmoid")(x))


def plain_bce_dice(y_true, y_pred):
    """Mean BCE + (1 − soft Dice) per sample, as a tutorial writes it."""
    from keras import ops

    bce = ops.mean(ops.binary_crossentropy(y_true, y_pred), axis=(1, 2, 3))
    inter = ops.sum(y_true * y_pred, axis=(1, 2, 3))
    dice = (2 * inter + 1) / (ops.sum(y_true, axis=(1, 2, 3)) + ops.sum(y_pred, axis=(1, 2, 3)) + 1)
    return bce + 1 - dice


def plain_patches(pairs, patch: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n random patches (image chosen by area) with a random flip and 90° rotation: (n, P, P, C), (n, P, P, 1)."""
    weights = np.array([p.mask.size for p in pairs], np.float64)
    xs, ys = [], []
    for k in rng.choice(len(pairs), size=n, p=weights / weights.sum()):
        img, msk = pairs[k].image, pairs[k].mask
        y = rng.integers(0, msk.shape[0] - patch + 1)
        x = rng.integers(0, msk.shape[1] - patch + 1)
        a, b = img[y:y + patch, x:x + patch], msk[y:y + patch, x:x + patch, None]
        if rng.random() < 0.5:
            a, b = a[:, ::-1], b[:, ::-1]
        turns = int(rng.integers(4))
        xs.append(np.rot90(a, turns))
        ys.append(np.rot90(b, turns))
    return np.stack(xs).astype(np.float32), (np.stack(ys) > 0).astype(np.float32)


def run_plain(pairs, patch: int, batch: int, seconds: float, chunk: int, base: int, depth: int,
              seed: int = 0) -> tuple[int, float, float]:
    """Train the plain arm for about `seconds` of wall-clock time -> (patches trained, wall s, CPU s)."""
    import keras

    start, cpu = time.perf_counter(), time.process_time()
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = plain_unet(patch, pairs[0].image.shape[-1], base, depth)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=plain_bce_dice)
    seen = 0
    while time.perf_counter() - start < seconds:
        x, y = plain_patches(pairs, patch, chunk * batch, rng)
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        seen += len(x)
    return seen, time.perf_counter() - start, time.process_time() - cpu


# ----------------------------------------------------------------------------------------------------------------
# The package arm: a real train() run


def run_package(samples, config, seconds: float) -> tuple[int, float, float]:
    """`train(config)` with a `seconds` time budget -> (patches trained, wall s, CPU s of the whole call)."""
    import keras

    from cellseg_tf.training.engine import train

    class Count(keras.callbacks.Callback):
        steps = 0

        def on_train_batch_end(self, batch, logs=None):
            Count.steps += 1

    config.time_budget_s = float(seconds)
    with tempfile.TemporaryDirectory() as out:
        config.out = out
        start, cpu = time.perf_counter(), time.process_time()
        train(config, samples, callbacks=[Count()])
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Count.steps * config.batch_size, wall, cpu


def parse_arm(text: str) -> tuple[str, list[str]]:
    """"NAME:KEY=VALUE;KEY=VALUE" -> (NAME, ["KEY=VALUE", ...]) for TrainConfig.override."""
    name, sep, rest = text.partition(":")
    if not sep or not name:
        raise SystemExit(f"--arm {text!r}: expected NAME:KEY=VALUE[;KEY=VALUE...]")
    return name, [kv for kv in rest.split(";") if kv.strip()]


def _samples(manifest: str | None):
    from cellseg_tf.data.io import open_manifest
    from cellseg_tf.data.synthetic import make_dataset

    if manifest is None and SHARED_ISBI.is_file():
        manifest = str(SHARED_ISBI)
    if manifest is None:
        manifest = str(make_dataset(tempfile.mkdtemp(), n_images=10, shape=(512, 512), splits=(8, 2, 0), seed=0))
    return manifest, open_manifest(manifest)


def main(argv=None) -> int:
    import tensorflow as tf

    from cellseg_tf.data.dataset import load_pairs
    from cellseg_tf.training.config import TrainConfig
    from cellseg_tf.training.engine import resolve_precision, split_train_val

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="wall-clock seconds per arm and patch size")
    ap.add_argument("--sizes", default="128,256", help="patch sizes, comma-separated")
    ap.add_argument("--rounds", type=int, default=2, help="slots per arm (each seconds/rounds long)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: TrainConfig's")
    ap.add_argument("--chunk", type=int, default=8, help="plain arm: batches per model.fit call")
    ap.add_argument("--manifest", default=None)
    ap.add_argument("--arm", action="append", default=[], help="extra package arm NAME:KEY=VALUE;KEY=VALUE")
    ap.add_argument("--base-filters", type=int, default=16, help="both arms (tests shrink the model)")
    ap.add_argument("--depth", type=int, default=4, help="both arms")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    manifest, samples = _samples(args.manifest)
    defaults = TrainConfig()
    batch = args.batch_size or defaults.batch_size
    plain_rows, _ = split_train_val(samples, defaults.val_fraction, defaults.seed)  # the same train images
    plain_pairs = load_pairs(plain_rows, defaults.channels)
    arms = [("package", [])] + [parse_arm(a) for a in args.arm]
    slot = args.seconds / args.rounds
    print(f"manifest={manifest} batch={batch} seconds_per_arm={args.seconds:g} rounds={args.rounds} "
          f"cpus={os.cpu_count()} tf={tf.__version__} precision={resolve_precision(defaults.mixed_precision)}")

    def config_for(patch: int, overrides: list[str]) -> TrainConfig:
        config = TrainConfig(manifest=manifest, patch_size=patch, batch_size=batch, verbose=0)
        if (args.base_filters, args.depth) != (16, 4):
            config.model_options = {"base_filters": args.base_filters, "depth": args.depth}
        return config.override(overrides).validate()

    ratios = {}
    for patch in sizes:
        rates: dict[str, list[float]] = {"plain": []} | {name: [] for name, _ in arms}
        cpu_ms: dict[str, list[float]] = {name: [] for name in rates}
        for r in range(args.rounds):
            order = [("plain", None)] + arms if r % 2 == 0 else arms[::-1] + [("plain", None)]
            for name, overrides in order:
                if name == "plain":
                    n, wall, cpu = run_plain(plain_pairs, patch, batch, slot, args.chunk, args.base_filters,
                                             args.depth)
                else:
                    n, wall, cpu = run_package(samples, config_for(patch, overrides), slot)
                rates[name].append(n / wall)
                cpu_ms[name].append(1000 * cpu / max(n, 1))
                print(f"[{patch}] round {r} {name}: {n} patches in {wall:.1f} s = {n / wall:.2f} patches/s, "
                      f"{cpu_ms[name][-1]:.1f} CPU ms/patch", flush=True)
        med = {name: statistics.median(v) for name, v in rates.items()}
        cpu_med = {name: statistics.median(v) for name, v in cpu_ms.items()}
        for name, _ in arms:
            print(f"[{patch}] {name}/plain = {med[name]:.2f}/{med['plain']:.2f} patches/s = "
                  f"{med[name] / med['plain']:.3f}; CPU ms/patch {cpu_med[name]:.1f} vs {cpu_med['plain']:.1f} "
                  f"(CPU-time ratio {cpu_med['plain'] / cpu_med[name]:.3f})")
        ratios[patch] = med["package"] / med["plain"]
    print(" ".join(f"train_to_plain_ratio_{p}={v:.3f}" for p, v in ratios.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
