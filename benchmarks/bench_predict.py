"""Ensemble prediction speed and memory, measured in one run on this machine.

- s_per_image: seconds per 704×520 16-bit image for a 5-model U-Net (base_filters 16) ensemble, overlap tiling;
- overhead_ratio: ensemble time / sum of the 5 single-model times (same Predictor, one model each; goal <= 1.1);
- naive_speedup: time of a naive loop (per model, per tile `model.predict`, numpy blending) / ensemble time;
- peak_rss_mb: peak resident memory of a fresh process predicting an 8192×8192 uint16 TIFF through the batch job
  (`predict_batch`: streamed windowed reads, mask PNG written) with the same 5-U-Net ensemble (several minutes on
  a 2-core CPU). `--rss-base-filters 0` swaps in 5 minimal members (1×1 conv + sigmoid) for a quick check of the
  image-size-dependent memory alone, and then also measures the U-Nets' activation memory on one 704×520 image.

Models have random weights (speed and memory do not depend on them). Last line:
`s_per_image=<v> overhead_ratio=<v> naive_speedup=<v> peak_rss_mb=<v>`.

    python benchmarks/bench_predict.py [--images 2] [--patch 256] [--rss-size 8192]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_ensemble(n: int, patch: int, base_filters: int, depth: int) -> list:
    """n U-Nets (random weights) for (patch, patch, 1) tiles; base_filters 0 = minimal 1×1-conv members."""
    import keras

    from cellseg_tf.models import build_model

    models = []
    for i in range(n):
        keras.utils.set_random_seed(i)
        if base_filters:
            models.append(build_model("unet", (patch, patch, 1), base_filters=base_filters, depth=depth))
        else:
            inp = keras.Input((patch, patch, 1))
            out = keras.layers.Activation("sigmoid")(keras.layers.Conv2D(1, 1)(inp))
            models.append(keras.Model(inp, out))
    return models


def timed(fn, images) -> float:
    t0 = time.perf_counter()
    for image in images:
        fn(image)
    return (time.perf_counter() - t0) / len(images)


def naive_predict(models, image: np.ndarray, patch: int, overlap: float) -> np.ndarray:
    """The slow baseline: for every model, for every tile, one `model.predict` call; blend with the same window."""
    from cellseg_tf.data.preprocessing import pad_to_multiple, percentile_normalize
    from cellseg_tf.data.tiling import TileAccumulator, blend_window, tile_origins

    x = pad_to_multiple(percentile_normalize(image), 1, "reflect", min_size=patch)
    ov = int(round(overlap * patch))
    origins = tile_origins(x.shape[:2], patch, ov)
    acc = TileAccumulator(x.shape[:2] + (1,), blend_window(patch, ov))
    for y, xx in origins:
        tile = x[None, y:y + patch, xx:xx + patch]
        probs = [m.predict(tile, verbose=0)[0] for m in models]
        acc.add(np.mean(probs, axis=0)[None], [(y, xx)])
    return acc.result()[: image.shape[0], : image.shape[1], 0]


def write_test_tiff(path: Path, h: int, w: int) -> None:
    """An (h, w) uint16 TIFF written in bands (in the parent process: GDAL's write cache must not count)."""
    import rasterio

    from cellseg_tf.data.tiff import open_tiff

    with open_tiff(path, "w", driver="GTiff", height=h, width=w, count=1, dtype="uint16",
                   tiled=True, blockxsize=256, blockysize=256) as dst:
        rng = np.random.default_rng(0)
        for r0 in range(0, h, 1024):
            n = min(1024, h - r0)
            band = (rng.random((n, w)) * 4000 + 1000).astype(np.uint16)
            dst.write(band[None], window=rasterio.windows.Window(0, r0, w, n))


def peak_rss_mb() -> float:
    """This process's peak RSS in MB: VmHWM (per address space, so not inherited from the parent the way
    getrusage's ru_maxrss is across fork+exec), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(args) -> None:
    """Runs in a fresh process: predict OUT/image.tif with the batch job, print peak RSS (MB) as JSON."""
    from cellseg_tf.predict.batch_predict import predict_batch
    from cellseg_tf.predict.options import BatchOptions

    tmp = Path(args.rss_dir)
    path = tmp / "image.tif"
    models = build_ensemble(5, args.patch, args.rss_base_filters, args.rss_depth)
    paths = []
    for i, m in enumerate(models):
        paths.append(str(tmp / f"m{i}.keras"))
        m.save(paths[-1])
    del models
    base = peak_rss_mb()
    t0 = time.perf_counter()
    options = BatchOptions(overlap=args.overlap, batch_size=args.batch_size, progress=False)
    result = predict_batch([str(path)], paths, tmp / "out", options)
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb()
    print(json.dumps({"peak_rss_mb": peak, "rss_before_predict_mb": base, "seconds": seconds, **result}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--rss-size", type=int, default=8192)
    parser.add_argument("--rss-base-filters", type=int, default=16,
                        help="members of the 8192² memory run: U-Net base filters, 0 = minimal 1×1-conv members")
    parser.add_argument("--rss-depth", type=int, default=4)
    parser.add_argument("--rss-dir", help=argparse.SUPPRESS)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    if args.rss_dir:
        rss_child(args)
        return

    def peak_rss(shape: str, base_filters: int, depth: int) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            write_test_tiff(Path(tmp) / "image.tif", *(int(v) for v in shape.split("x")))
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--rss-dir", tmp,
                                   "--patch", str(args.patch), "--overlap", str(args.overlap),
                                   "--batch-size", str(args.batch_size), "--rss-base-filters", str(base_filters),
                                   "--rss-depth", str(depth)], capture_output=True, text=True)
            if proc.returncode:
                sys.stderr.write(proc.stderr[-3000:])
                raise SystemExit("RSS subprocess failed")
            rss = json.loads(proc.stdout.strip().splitlines()[-1])
            members = f"U-Net(base {base_filters}, depth {depth})" if base_filters else "1×1-conv"
            print(f"{shape} uint16 TIFF, 5 × {members} members, batch job: peak RSS {rss['peak_rss_mb']:.0f} MB "
                  f"(after loading models: {rss['rss_before_predict_mb']:.0f} MB), predict {rss['seconds']:.1f} s, "
                  f"done={rss['done']} failed={rss['failed']} (subprocess {time.perf_counter() - t0:.1f} s)",
                  flush=True)
            return rss

    # memory first, while this parent process is still small (it has not imported TensorFlow yet)
    size = args.rss_size
    rss = peak_rss(f"{size}x{size}", args.rss_base_filters, args.rss_depth)
    if args.rss_base_filters != args.base_filters:  # the model-activation side of memory, on the benchmark images
        peak_rss("520x704", args.base_filters, 4)

    from cellseg_tf.predict.inference import Predictor
    from cellseg_tf.predict.options import PredictOptions

    rng = np.random.default_rng(0)
    images = [(rng.random((520, 704, 1)) * 3000 + 500).astype(np.uint16) for _ in range(args.images)]
    models = build_ensemble(5, args.patch, args.base_filters, 4)
    options = PredictOptions(overlap=args.overlap, batch_size=args.batch_size)
    ensemble = Predictor(models, options)
    singles = [Predictor([m], options) for m in models]
    for p in [ensemble] + singles:  # compile outside the timings
        p.predict_image(images[0])

    t_ens = timed(ensemble.predict_image, images)
    t_single = [timed(p.predict_image, images) for p in singles]
    overhead = t_ens / sum(t_single)
    print(f"ensemble: {t_ens:.3f} s/image ({ensemble.last_tile_count} tiles of {args.patch} px, 5 models); "
          f"singles: {', '.join(f'{t:.3f}' for t in t_single)} s (sum {sum(t_single):.3f})", flush=True)
    if args.skip_naive:
        naive_speedup = float("nan")
    else:
        for m in models:  # warm Keras' predict function too
            m.predict(np.zeros((1, args.patch, args.patch, 1), np.float32), verbose=0)
        t0 = time.perf_counter()
        naive_predict(models, images[0], args.patch, args.overlap)
        t_naive = time.perf_counter() - t0
        naive_speedup = t_naive / t_ens
        print(f"naive loop (per model, per tile model.predict): {t_naive:.3f} s/image", flush=True)

    print(f"s_per_image={t_ens:.3f} overhead_ratio={overhead:.3f} naive_speedup={naive_speedup:.2f} "
          f"peak_rss_mb={rss['peak_rss_mb']:.0f}")


if __name__ == "__main__":
    main()
