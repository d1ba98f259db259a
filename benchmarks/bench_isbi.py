"""Equal-time benchmark on ISBI 2012 EM membranes (../shared/data/isbi2012_em; train 00-19, test 20-29).

Trains, for the same wall-clock budget on this machine and in one run:
  * baseline — the yardstick recipe: a plain Keras U-Net (conv+ReLU, no BN, base 16, transposed-conv decoder),
    BCE+Dice, flips/rot90 only, random 256² patches, Adam 1e-3 constant, all 20 train images, predicted on
    non-overlapping 256² tiles at threshold 0.5;
  * ours — `cellseg_tf.train(TrainConfig(...))` with the package defaults and `time_budget_s`, predicted with the
    default Predictor;
then scores both (ours also with --tta d4) on the test images with the same evaluation code and prints measured figures. Last line:
`baseline_dice=<v> ours_dice=<v> delta=<v> minutes=<v>`.

Usage: python benchmarks/bench_isbi.py [--minutes 12] [--data ../shared/data/isbi2012_em]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cellseg_tf.training.config import TrainConfig  # noqa: E402
from cellseg_tf.data.dataset import load_pairs, train_dataset  # noqa: E402
from cellseg_tf.analysis.evaluation import binary_scores  # noqa: E402
from cellseg_tf.models.loading import load_models  # noqa: E402
from cellseg_tf.predict.inference import Predictor  # noqa: E402
from cellseg_tf.predict.options import PredictOptions  # noqa: E402
from cellseg_tf.data.io import open_manifest  # noqa: E402
from cellseg_tf.data.manifest import select  # noqa: E402
from cellseg_tf.training.engine import train  # noqa: E402


def plain_unet(size: int = 256, base: int = 16, depth: int = 4):
    """The yardstick's plain Keras U-Net: (conv3×3 + ReLU) ×2 per level, max-pool, transposed-conv up, concat."""
    import keras
    from keras import layers

    def block(x, f):
        x = layers.Conv2D(f, 3, padding="same", activation="relu", kernel_initializer="he_normal")(x)
        return layers.Conv2D(f, 3, padding="same", activation="relu", kernel_initializer="he_normal")(x)

    inp = keras.Input((size, size, 1))
    x, skips = inp, []
    for d in range(depth):
        x = block(x, base * 2 ** d)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = block(x, base * 2 ** depth)
    for d in reversed(range(depth)):
        x = layers.Conv2DTranspose(base * 2 ** d, 2, strides=2, padding="same")(x)
        x = block(layers.Concatenate()([x, skips[d]]), base * 2 ** d)
    return keras.Model(inp, layers.Conv2D(1, 1, activation="sigmoid")(x))


def train_baseline(pairs, seconds: float, seed: int = 0):
    import keras

    from cellseg_tf.training.losses import get_loss

    keras.utils.set_random_seed(seed)
    model = plain_unet()
    model.compile(keras.optimizers.Adam(1e-3), get_loss("bce_dice"))
    ds = iter(train_dataset(pairs, 256, 8, policy="flips", seed=seed))
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        x, y = next(ds)
        model.train_on_batch(x, y)
        steps += 1
    return model, steps, time.perf_counter() - start


def score(predictor: Predictor, test_pairs) -> float:
    dice = [binary_scores(predictor.predict_normalized(p.image) > 0.5, p.mask)["dice"] for p in test_pairs]
    return float(np.mean(dice))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "isbi2012_em"))
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_isbi"))
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a TrainConfig default for 'ours' (ablations), e.g. --set learning_rate=1e-4")
    args = ap.parse_args()
    manifest = Path(args.data) / "manifest.csv"
    if not manifest.is_file():
        sys.exit(f"{manifest}: ISBI 2012 data not found (expects ../shared/data/isbi2012_em)")
    seconds = args.minutes * 60
    samples = open_manifest(manifest)
    test_pairs = load_pairs(select(samples, "test"))

    baseline = float("nan")
    if not args.skip_baseline:
        model, steps, secs = train_baseline(load_pairs(select(samples, "train")), seconds)
        baseline = score(Predictor([model], PredictOptions(patch_size=256, overlap=0.0)), test_pairs)
        print(f"baseline: {steps} steps of 8×256² in {secs:.0f} s -> test Dice {baseline:.4f}", flush=True)

    config = TrainConfig(manifest=str(manifest), out=str(Path(args.out) / "ours"), time_budget_s=seconds, verbose=2)
    config.override(args.set)
    result = train(config)
    models = load_models([result.best_model])
    ours = score(Predictor(models), test_pairs)
    print(f"ours: {len(result.history['loss'])} epochs in {result.train_seconds:.0f} s "
          f"(best val Dice {result.best_val_dice:.4f}) -> test Dice {ours:.4f}", flush=True)
    ours_tta = score(Predictor(models, PredictOptions(tta="d4")), test_pairs)
    print(f"ours + 8-fold test-time augmentation (predict --tta d4): test Dice {ours_tta:.4f}", flush=True)
    print(f"baseline_dice={baseline:.4f} ours_dice={ours:.4f} delta={ours - baseline:+.4f} minutes={args.minutes:g}")


if __name__ == "__main__":
    main()
