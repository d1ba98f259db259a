"""Print total / trainable / non-trainable parameter counts of every registered model at 256×256×3.

Usage: python benchmarks/param_counts.py [--size 256] [--channels 3] [--markdown]
Encoders are built with encoder_weights=None (counts do not depend on the weights). Das et al. 2025 report (millions,
total/trainable) 22.7/15.7 for densenet121_deconv_unet, ~18.8/4.09 for vgg16_attention_unet and ~28.85/~14.1 for
vgg16_attention_ia_unet (their Model-1/2/3); the delta columns compare to those.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PUBLISHED = {"densenet121_deconv_unet": (22.7, 15.7), "vgg16_attention_unet": (18.8, 4.09),
             "vgg16_attention_ia_unet": (28.85, 14.1),
             # Das et al. 2025 Table 1 (§3.4.1), frozen-encoder U-Nets with the authors' own decoders
             "densenet121_unet": (22.70, 15.65), "inceptionv3_unet": (41.66, 19.86), "vgg16_unet": (20.25, 5.53),
             "mobilenetv2_unet": (3.65, 1.39), "resnet50_unet": (54.64, 31.05), "efficientnetb0_unet": (6.09, 2.04)}


def count(model) -> tuple[int, int]:
    import numpy as np

    total = int(sum(np.prod(w.shape) for w in model.weights))
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    return total, trainable


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()

    from cellseg_tf.models import available_models, build_model

    rows = []
    for name in available_models():
        t0 = time.perf_counter()
        model = build_model(name, input_shape=(args.size, args.size, args.channels))
        total, trainable = count(model)
        ref = PUBLISHED.get(name)
        rows.append((name, total, trainable, total - trainable, ref, time.perf_counter() - t0))
        del model
    if args.markdown:
        print("| model | total (M) | trainable (M) | frozen/non-trainable (M) | Das et al. 2025 total/trainable (M) "
              "| Δ total | Δ trainable |")
        print("|---|---:|---:|---:|---|---:|---:|")
    else:
        print(f"{'model':26s} {'total':>12s} {'trainable':>12s} {'non-train':>12s}  published (M) "
              f"dtotal  dtrain  build_s")
    for name, total, trainable, frozen, ref, secs in rows:
        if ref:
            dt, dtr = f"{100 * (total / 1e6 / ref[0] - 1):+.1f}%", f"{100 * (trainable / 1e6 / ref[1] - 1):+.1f}%"
            ref_s = f"{ref[0]}/{ref[1]}"
        else:
            dt = dtr = ref_s = "-"
        if args.markdown:
            print(f"| {name} | {total / 1e6:.2f} | {trainable / 1e6:.2f} | {frozen / 1e6:.2f} | {ref_s} "
                  f"| {dt} | {dtr} |")
        else:
            print(f"{name:26s} {total:12,d} {trainable:12,d} {frozen:12,d}  {ref_s:12s} {dt:>7s} {dtr:>7s} "
                  f"{secs:6.1f}")


if __name__ == "__main__":
    main()
