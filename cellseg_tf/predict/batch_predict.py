"""The batch prediction job: many images through one ensemble, resumable, shardable, every output written atomically.

`predict_batch(inputs, models, out, options)` writes, per input image, the files named by `options.output_paths`:
- `<stem>.png` — uint8 mask 0/255 at the input's H×W (always; written last, after the optional outputs);
- `<stem>_prob.npy` or `<stem>_prob.tif` — float32 vote map (`save_prob="npy"|"tiff"`; soft vote: probability,
  hard vote: weighted fraction of models voting "cell"), streamed row band by row band into a temp file;
- `<stem>_instances.tif` — cells (`instances=True`): `instances.labels_from_maps` on the ensemble's blended maps
  (binary models: components of the foreground; contour/distance models: seeded watershed), with the parameters of
  RUN/instances.yaml beside the models (else the defaults, with the mask's own threshold as foreground threshold)
  overridden by `min_size`/`fg_threshold`/`seed_threshold`/`seed_h`/`merge_threshold`/`small_fraction`;
  uint16 (uint32 past 65535 cells). The whole image is labelled at once from its assembled maps (kept as float32,
  or as uint8 = p·255 above MAPS_FLOAT_BYTES), so neither tile seams nor the row bands of a streamed image cut a
  cell, and ids are unique over the image.
Plus `predict_config.yaml` (models, the options that decide the outputs, resolved normalisation and tile size,
package version), `timings.csv` (image, H, W, read/predict/write seconds, tiles, models, TTA copies) and
`failures.csv` (file, reason); with `shard=(i, n)` the logs are `timings.shard<i>of<n>.csv` /
`failures.shard<i>of<n>.csv` so that concurrent shards never overwrite each other's logs.

Resume: an image whose outputs all exist is skipped (its old timing row is kept) unless `overwrite`. A failing image
(unreadable, wrong channels, NaN, ...) is logged in failures.csv and the batch goes on; its partial outputs are
removed, so a later run retries it. Inputs are only read.
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
import time
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import __version__
from ..common.files import atomic_path, write_text_atomic
from ..data.io import write_png
from ..data.manifest import output_stem, split_frame
from ..data.tiff import TiffRowWriter, write_tiff
from .ensemble import decision_threshold
from .inference import Predictor
from .instance_params import InstanceParams, run_instance_params
from .instances import as_label_image, labels_from_maps
from .options import TTA_MODES, BatchOptions, check_shard, output_paths

TIMING_HEADER = ["image", "height", "width", "read_s", "predict_s", "write_s", "tiles", "models", "tta_copies",
                 "label_s"]
MAPS_FLOAT_BYTES = 256 << 20       # an image's maps kept for labelling above this size are quantised to uint8
FAILURE_HEADER = ["file", "reason"]
CONFIG_NAME = "predict_config.yaml"


# ------------------------------------------------------------------------------------------------- sharding
def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' -> (2, 4): the second of four shards (1-based, like 'part 2 of 4')."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/n (e.g. 1/4), got {text!r}") from None
    return check_shard(i, n)


def shard_of(path: str, n: int) -> int:
    """1-based shard of an input: crc32 of its output stem mod n — stable across machines, folders and list order."""
    return zlib.crc32(output_stem(str(path)).encode("utf-8")) % n + 1


def shard_inputs(inputs: Sequence[str], i: int, n: int) -> list[str]:
    """The inputs of shard i of n (order kept). Shards 1..n partition the inputs: each image lands in exactly one."""
    check_shard(i, n)
    return [p for p in inputs if shard_of(p, n) == i]


# --------------------------------------------------------------------------------------------------- outputs
class NpyRowWriter:
    """A new (height, width) float32 `.npy` file filled row band by row band through a memory map (context manager,
    `write(r0, rows)` like `data.tiff.TiffRowWriter`)."""

    def __init__(self, path: str | os.PathLike, height: int, width: int):
        self.path, self.shape = Path(path), (height, width)
        self.array = None

    def __enter__(self) -> "NpyRowWriter":
        self.array = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=self.shape)
        return self

    def write(self, r0: int, rows: np.ndarray) -> None:
        self.array[r0:r0 + len(rows)] = rows

    def __exit__(self, *exc) -> None:
        if self.array is not None:
            self.array.flush()
            self.array = None  # drops the memory map


PROB_WRITERS = {"npy": NpyRowWriter, "tiff": TiffRowWriter}  # keys: options.PROB_FORMATS


def quantise_maps(rows: np.ndarray) -> np.ndarray:
    """Maps in [0, 1] -> uint8 p·255 (rounded): what `instances.labels_from_maps` reads as uint8 maps."""
    return np.round(np.clip(rows, 0.0, 1.0) * 255.0).astype(np.uint8)


class _ImageOutputs:
    """Sink for one image's streamed rows ((n, W) vote rows, or (n, W, K) maps): the mask in memory (uint8), the
    maps kept for labelling when instances are asked for, the probabilities (channel 0) streamed into the temp file
    of an `atomic_path` entered on `stack`.

    Closing `stack` without an error renames the probability file into place, with an error removes it; `finish()`
    then labels and writes the instances and, last, the mask. `remove_partial()` cleans up after a failure in
    `finish()`.
    """

    def __init__(self, paths: dict[str, Path], predictor: Predictor, options: BatchOptions,
                 stack: contextlib.ExitStack, params: InstanceParams | None = None):
        self.paths, self.predictor, self.options, self.stack = paths, predictor, options, stack
        self.params = params
        self.write_s = self.label_s = 0.0
        self.mask = self.maps = None
        self._prob = None

    def start(self, h: int, w: int) -> None:
        self.shape = (h, w)
        self.mask = np.zeros((h, w), np.uint8)
        if self.options.instances:
            k = self.predictor.out_channels
            self.maps = np.empty((h, w, k), np.uint8 if h * w * k * 4 > MAPS_FLOAT_BYTES else np.float32)
        if self.options.save_prob:
            t0 = time.perf_counter()
            tmp = self.stack.enter_context(atomic_path(self.paths["prob"]))
            self._prob = self.stack.enter_context(PROB_WRITERS[self.options.save_prob](tmp, h, w))
            self.write_s += time.perf_counter() - t0

    def write(self, r0: int, rows: np.ndarray) -> None:
        self.mask[r0:r0 + len(rows)] = np.where(self.predictor.binarize(rows), 255, 0)
        if self.maps is not None:
            maps = rows.reshape(rows.shape[:2] + (-1,))
            self.maps[r0:r0 + len(rows)] = quantise_maps(maps) if self.maps.dtype == np.uint8 else maps
        if self._prob is not None:
            t0 = time.perf_counter()
            self._prob.write(r0, rows[..., 0] if rows.ndim == 3 else rows)
            self.write_s += time.perf_counter() - t0

    def finish(self) -> None:
        if self.options.instances:
            t0 = time.perf_counter()
            labels = labels_from_maps(self.maps, self.predictor.kind, self.params)
            self.maps = None
            self.label_s = time.perf_counter() - t0
            write_tiff(self.paths["instances"], as_label_image(labels))
        write_png(self.paths["mask"], self.mask)

    def remove_partial(self) -> None:
        """Remove this image's outputs written before a failure (so that resume retries it)."""
        for key in ("prob", "instances"):  # the mask is written last: if it exists, nothing failed after it
            if key in self.paths and not self.paths["mask"].exists() and self.paths[key].exists():
                self.paths[key].unlink()


# ------------------------------------------------------------------------------------------------------ logs
def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def _read_timings(path: Path) -> dict[str, list]:
    if not path.is_file():
        return {}
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header != TIMING_HEADER:
                return {}
            return {row[0]: row for row in reader if row}
    except (OSError, csv.Error):
        return {}


def log_names(shard: tuple[int, int] | None) -> tuple[str, str]:
    """("timings.csv", "failures.csv"), or per-shard names so concurrent shards keep separate logs."""
    if shard is None:
        return "timings.csv", "failures.csv"
    return f"timings.shard{shard[0]}of{shard[1]}.csv", f"failures.shard{shard[0]}of{shard[1]}.csv"


def write_predict_config(out: Path, models: Sequence[str], options: BatchOptions,
                         predictor: Predictor | None, params: InstanceParams | None = None) -> Path:
    """OUT/predict_config.yaml: how the folder was made (package version, models and their vote weights, the options
    that decide the outputs; with a `predictor`, its resolved tile size, batch size, normalisation and target kind;
    with `params`, the instance post-processing used)."""
    import yaml

    described = options.describe()
    if predictor is not None:
        resolved = predictor.options
        described.update(patch_size=resolved.patch_size, batch_size=resolved.batch_size, tta=resolved.tta,
                         norm_low=resolved.norm_low, norm_high=resolved.norm_high, target_kind=predictor.kind)
    if params is not None:
        described["instance_params"] = params.to_dict()
    record = {"cellseg_tf_version": __version__,
              "models": [str(Path(m).resolve()) for m in models],
              "model_vote_weights": None if predictor is None else [float(w) for w in predictor.weights],
              "options": described}
    return write_text_atomic(out / CONFIG_NAME, yaml.safe_dump(record, sort_keys=False))


# ------------------------------------------------------------------------------------------------------- job
def _plan(inputs: list[str], out: Path, opts: BatchOptions) -> tuple[list[str], list[list]]:
    """(inputs to run, failures): an input whose output would overwrite itself, or whose output name another input
    already has, is a failure; with a shard, only its inputs (and failures) are kept."""
    failures: list[list] = []
    first_of: dict[str, str] = {}
    unique = []
    for p in inputs:
        source = Path(split_frame(p)[0]).resolve()
        if source in {f.resolve() for f in output_paths(out, p, opts.save_prob, opts.instances).values()}:
            failures.append([p, f"its output would overwrite the input itself; choose an --out folder other than "
                                f"{out}"])
            continue
        stem = output_stem(p)
        if stem in first_of:  # two inputs with one stem would overwrite each other's outputs
            failures.append([p, f"output name {stem!r} is already used by {first_of[stem]}; "
                                "rename one of them or predict their folders separately"])
        else:
            first_of[stem] = p
            unique.append(p)
    if opts.shard is not None:
        unique = shard_inputs(unique, *opts.shard)
        failures = [f for f in failures if shard_of(f[0], opts.shard[1]) == opts.shard[0]]
    return unique, failures


def predict_batch(inputs: Sequence[str | os.PathLike], models: Sequence[str | os.PathLike],
                  out: str | os.PathLike, options: BatchOptions | None = None) -> dict:
    """Predict every input image with the ensemble of `.keras` files `models` into folder `out` (see the module
    docstring for the files written); returns {"done", "failed", "skipped", "total"}."""
    from tqdm.auto import tqdm

    opts = (options or BatchOptions()).validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    models = [str(m) for m in models]
    timings_name, failures_name = log_names(opts.shard)
    unique, failures = _plan([str(p) for p in inputs], out, opts)

    todo, skipped = [], []
    for p in unique:
        paths = output_paths(out, p, opts.save_prob, opts.instances)
        done = all(f.is_file() for f in paths.values())
        (skipped if done and not opts.overwrite else todo).append((p, paths))
    old = _read_timings(out / timings_name)
    timings = [old[p] for p, _ in skipped if p in old]

    def flush() -> None:
        _write_csv(out / timings_name, TIMING_HEADER, timings)
        _write_csv(out / failures_name, FAILURE_HEADER, failures)

    predictor = Predictor.from_files(models, opts) if todo else None
    params = None
    if opts.instances:  # untuned default: cells where the mask is (the vote's own decision threshold)
        untuned = InstanceParams(fg_threshold=decision_threshold(opts.vote, opts.threshold))
        params = run_instance_params(models, untuned).replace(
            min_size=opts.min_size, fg_threshold=opts.fg_threshold, seed_threshold=opts.seed_threshold,
            seed_h=opts.seed_h, merge_threshold=opts.merge_threshold, small_fraction=opts.small_fraction)
    if predictor is not None or not (out / CONFIG_NAME).is_file():
        write_predict_config(out, models, opts, predictor, params)
    n_tta = len(TTA_MODES[predictor.options.tta]) if predictor is not None else 1
    done_count, last_flush = 0, time.perf_counter()
    bar = tqdm(todo, desc="predict", unit="img", disable=not opts.progress)
    for path, paths in bar:
        stack = contextlib.ExitStack()
        sink = _ImageOutputs(paths, predictor, opts, stack, params)
        if paths["mask"].exists():  # --overwrite: the image counts as not done until its new outputs are in place
            paths["mask"].unlink()
        try:
            t0 = time.perf_counter()
            with stack:  # on an error the streamed probability file is removed, else renamed into place
                _, read_s = predictor.predict_file(path, sink)
                t1 = time.perf_counter()
                stream_write_s = sink.write_s
            sink.finish()
            t2 = time.perf_counter()
            timings.append([path, sink.shape[0], sink.shape[1], f"{read_s:.4f}",
                            f"{t1 - t0 - read_s - stream_write_s:.4f}",
                            f"{stream_write_s + (t2 - t1) - sink.label_s:.4f}",
                            predictor.last_tile_count, len(predictor.models), n_tta, f"{sink.label_s:.4f}"])
            done_count += 1
        except Exception as exc:  # noqa: BLE001 - a batch job logs any per-image failure and goes on
            sink.remove_partial()
            reason = str(exc) or type(exc).__name__
            failures.append([path, reason if path in reason else f"{type(exc).__name__}: {reason}"])
        except BaseException:  # Ctrl-C / a Colab stop: no temp files left behind, logs saved, then stop
            sink.remove_partial()
            flush()
            raise
        bar.set_postfix(done=done_count, failed=len(failures), skipped=len(skipped), refresh=False)
        if time.perf_counter() - last_flush > opts.flush_every_s:
            flush()
            last_flush = time.perf_counter()
    flush()
    return {"done": done_count, "failed": len(failures), "skipped": len(skipped), "total": len(unique)}
