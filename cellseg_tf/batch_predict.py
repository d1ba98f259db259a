"""The batch prediction job: many images through one ensemble, resumable, shardable, every output written atomically.

Per input image `<stem>` (see `inference.output_stem`) it writes into OUT:
- `<stem>.png` — uint8 mask 0/255 at the input's H×W (always; written last, after the optional outputs);
- `<stem>_prob.npy` or `<stem>_prob.tif` — float32 vote map (`save_prob="npy"|"tiff"`; soft vote: probability,
  hard vote: weighted fraction of models voting "cell"), streamed to a temp file as rows are finished;
- `<stem>_instances.tif` — instance labels (`instances=True`): 8-connected components of the mask after hole filling,
  objects smaller than `min_size` px removed, uint16 (uint32 if there are more than 65535 objects).
Plus `timings.csv` (image, H, W, read/predict/write seconds, tiles, models, TTA copies) and `failures.csv`
(file, reason); with `shard=(i, n)` they are `timings.shard<i>of<n>.csv` / `failures.shard<i>of<n>.csv` so that
concurrent shards never overwrite each other's logs.

Resume: an image whose outputs all exist is skipped (its old timing row is kept) unless `overwrite`. A failing image
(unreadable, wrong channels, NaN, ...) is logged in failures.csv and the batch goes on; its partial outputs are
removed, so a later run retries it. Inputs are only read.
"""
from __future__ import annotations

import csv
import io
import os
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .ensemble import TTA_MODES
from .inference import Predictor, output_stem
from .io import write_png, write_text_atomic, write_tiff
from .manifest import split_frame

PROB_FORMATS = {"npy": ".npy", "tiff": ".tif"}
TIMING_HEADER = ["image", "height", "width", "read_s", "predict_s", "write_s", "tiles", "models", "tta_copies"]
FAILURE_HEADER = ["file", "reason"]


@dataclass
class BatchOptions:
    """Everything about a batch run besides models, inputs and OUT. Defaults reproduce the classic behaviour."""

    patch_size: int | None = None
    overlap: float = 0.25
    threshold: float = 0.5
    batch_size: int | None = 8
    tiling: str = "overlap"
    vote: str = "soft"
    tta: str = "none"
    group_weights: dict[str, float] = field(default_factory=dict)
    model_weights: list[float] | None = None
    model_thresholds: list[float] | None = None
    save_prob: str | None = None       # None | "npy" | "tiff"
    instances: bool = False
    min_size: int = 16
    overwrite: bool = False
    shard: tuple[int, int] | None = None
    norm_low: float | None = None      # None: the percentiles of the models' run config.yaml, else 2
    norm_high: float | None = None     # None: likewise, else 98
    precision: str = "auto"            # auto | float32 | saved (see inference.load_models)
    progress: bool = True
    flush_every_s: float = 5.0         # rewrite the CSV logs at most this often (and at the end)

    def validate(self) -> "BatchOptions":
        if self.save_prob not in (None, *PROB_FORMATS):
            raise ValueError(f"save_prob must be one of {', '.join(PROB_FORMATS)} (or None), got {self.save_prob!r}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")
        if self.shard is not None:
            check_shard(*self.shard)
        if self.model_thresholds is not None and self.vote != "hard":
            raise ValueError("per-model thresholds apply to the hard vote only (--vote hard); the soft vote "
                             "thresholds the mean probability at --threshold")
        if self.precision not in ("auto", "float32", "saved"):
            raise ValueError(f"precision must be auto, float32 or saved, got {self.precision!r}")
        return self


def expand_model_list(models: Sequence[str | os.PathLike]) -> list[str]:
    """Model arguments -> `.keras` paths: a `.txt` file lists one model per line (relative to the list's folder;
    '#' comments), e.g. CVDIR/models.txt written by `cellseg-tf cv`."""
    paths: list[str] = []
    for m in models:
        m = Path(m)
        if m.suffix.lower() != ".txt":
            paths.append(str(m))
            continue
        if not m.is_file():
            raise FileNotFoundError(f"{m}: model list not found")
        for line in m.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                paths.append(str(Path(line) if Path(line).is_absolute() else m.parent / line))
        if not paths:
            raise ValueError(f"{m}: the model list is empty")
    return paths


# ------------------------------------------------------------------------------------------------- sharding
def check_shard(i: int, n: int) -> tuple[int, int]:
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"shard must be i/n with 1 <= i <= n, got {i}/{n}")
    return i, n


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


# ------------------------------------------------------------------------------------------------ instances
def instances_from_mask(mask: np.ndarray, min_size: int = 16, connectivity: int = 2) -> np.ndarray:
    """(H, W) bool mask -> (H, W) instance labels 1..K (uint16, or uint32 past 65535 objects), 0 = background.

    Holes are filled, connected components labelled (connectivity 2 = 8-neighbours, as the instance scores in
    `instances.label_components` count them; 1 = 4-neighbours), components smaller than `min_size` px dropped and
    the remaining ones renumbered consecutively in raster order.
    """
    from scipy import ndimage

    filled = ndimage.binary_fill_holes(np.asarray(mask, bool))
    labels, n = ndimage.label(filled, structure=ndimage.generate_binary_structure(2, connectivity))
    del filled
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= max(1, min_size)
    keep[0] = False
    dtype = np.uint16 if keep.sum() <= np.iinfo(np.uint16).max else np.uint32
    remap = np.zeros(n + 1, dtype)
    remap[keep] = np.arange(1, keep.sum() + 1, dtype=np.int64).astype(dtype)
    return remap[labels]


# --------------------------------------------------------------------------------------------------- outputs
def output_paths(out: Path, stem: str, save_prob: str | None, instances: bool) -> dict[str, Path]:
    """The files one input produces: {"mask": ..., ["prob": ...], ["instances": ...]}."""
    paths = {"mask": out / f"{stem}.png"}
    if save_prob:
        paths["prob"] = out / f"{stem}_prob{PROB_FORMATS[save_prob]}"
    if instances:
        paths["instances"] = out / f"{stem}_instances.tif"
    return paths


class _ImageOutputs:
    """Sink for one image's streamed vote rows: mask in memory (uint8), probabilities streamed into a temp file.

    `commit()` moves everything into place (mask last); `abort()` removes temp files — never a partial output.
    """

    def __init__(self, paths: dict[str, Path], predictor: Predictor, save_prob: str | None, instances: bool,
                 min_size: int):
        self.paths, self.predictor = paths, predictor
        self.save_prob, self.instances, self.min_size = save_prob, instances, min_size
        self.write_s = 0.0
        self.mask = None
        self._prob = None
        self._tmp = None

    def start(self, h: int, w: int) -> None:
        self.shape = (h, w)
        self.mask = np.zeros((h, w), np.uint8)
        if not self.save_prob:
            return
        t0 = time.perf_counter()
        final = self.paths["prob"]
        self._tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp{final.suffix}")
        if self.save_prob == "npy":
            self._prob = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=np.float32, shape=(h, w))
        else:
            import rasterio
            from rasterio.errors import NotGeoreferencedWarning

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._prob = rasterio.open(self._tmp, "w", driver="GTiff", height=h, width=w, count=1,
                                           dtype="float32")
        self.write_s += time.perf_counter() - t0

    def write(self, r0: int, rows: np.ndarray) -> None:
        self.mask[r0:r0 + len(rows)] = np.where(self.predictor.binarize(rows), 255, 0)
        if self._prob is None:
            return
        t0 = time.perf_counter()
        if self.save_prob == "npy":
            self._prob[r0:r0 + len(rows)] = rows
        else:
            from rasterio.windows import Window

            self._prob.write(rows[None], window=Window(0, r0, rows.shape[1], len(rows)))
        self.write_s += time.perf_counter() - t0

    def _close_prob(self) -> None:
        if self._prob is None:
            return
        if self.save_prob == "npy":
            self._prob.flush()
        else:
            self._prob.close()
        self._prob = None

    def commit(self) -> None:
        t0 = time.perf_counter()
        self._close_prob()
        if self._tmp is not None:
            os.replace(self._tmp, self.paths["prob"])
            self._tmp = None
        if self.instances:
            write_tiff(self.paths["instances"], instances_from_mask(self.mask > 0, self.min_size))
        write_png(self.paths["mask"], self.mask)
        self.write_s += time.perf_counter() - t0

    def abort(self) -> None:
        """Remove temp files and any output of this image written before the failure (so resume retries it)."""
        try:
            self._close_prob()
        except Exception:  # noqa: BLE001 - cleaning up after a failure; the original error is what matters
            pass
        if self._tmp is not None and self._tmp.exists():
            self._tmp.unlink()
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


# ------------------------------------------------------------------------------------------------------- job
def predict_batch(model_paths: Sequence[str], inputs: Sequence[str], out_dir: str | os.PathLike,
                  patch_size: int | None = None, overlap: float = 0.25, threshold: float = 0.5,
                  batch_size: int | None = 8, progress: bool = True, options: BatchOptions | None = None,
                  **extra) -> dict:
    """Predict every input with the ensemble of `model_paths`; returns {"done", "failed", "skipped", "total"}.

    The keyword arguments (and any `BatchOptions` field passed in `extra`) override `options`. See the module
    docstring for the files written to `out_dir`.
    """
    from tqdm.auto import tqdm

    opts = options or BatchOptions()
    for key, value in dict(patch_size=patch_size, overlap=overlap, threshold=threshold, batch_size=batch_size,
                           progress=progress, **extra).items():
        if not hasattr(opts, key):
            raise TypeError(f"predict_batch: unknown option {key!r}")
        setattr(opts, key, value)
    opts.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings_name, failures_name = log_names(opts.shard)

    out_resolved = out.resolve()
    inputs = [str(p) for p in inputs]
    failures: list[list] = []
    first_of: dict[str, str] = {}
    unique = []
    for p in inputs:  # two inputs with one stem would overwrite each other's outputs
        source = Path(split_frame(p)[0]).resolve()
        if source in {f.resolve() for f in output_paths(out, output_stem(p), opts.save_prob, opts.instances).values()}:
            failures.append([p, f"its output would overwrite the input itself; choose an --out folder other than "
                                f"{out}"])
            continue
        stem = output_stem(p)
        if stem in first_of:
            failures.append([p, f"output name {stem!r} is already used by {first_of[stem]}; "
                                "rename one of them or predict their folders separately"])
        else:
            first_of[stem] = p
            unique.append(p)
    if opts.shard is not None:
        unique = shard_inputs(unique, *opts.shard)
        failures = [f for f in failures if shard_of(f[0], opts.shard[1]) == opts.shard[0]]

    todo, skipped = [], []
    for p in unique:
        paths = output_paths(out, output_stem(p), opts.save_prob, opts.instances)
        done = all(f.is_file() for f in paths.values())
        (skipped if done and not opts.overwrite else todo).append((p, paths))
    old = _read_timings(out / timings_name)
    timings = [old[p] for p, _ in skipped if p in old]

    def flush() -> None:
        _write_csv(out / timings_name, TIMING_HEADER, timings)
        _write_csv(out / failures_name, FAILURE_HEADER, failures)

    predictor = None
    if todo:
        predictor = Predictor.from_files(list(model_paths), group_weights=opts.group_weights,
                                         model_weights=opts.model_weights, patch_size=opts.patch_size,
                                         overlap=opts.overlap, batch_size=opts.batch_size, tiling=opts.tiling,
                                         vote=opts.vote, threshold=opts.threshold,
                                         model_thresholds=opts.model_thresholds, tta=opts.tta,
                                         norm_low=opts.norm_low, norm_high=opts.norm_high,
                                         precision=opts.precision)
    n_tta = len(TTA_MODES[opts.tta])
    done_count, last_flush = 0, time.perf_counter()
    bar = tqdm(todo, desc="predict", unit="img", disable=not opts.progress)
    for path, paths in bar:
        sink = _ImageOutputs(paths, predictor, opts.save_prob, opts.instances, opts.min_size)
        if paths["mask"].exists():  # --overwrite: the image counts as not done until its new outputs are in place
            paths["mask"].unlink()
        try:
            t0 = time.perf_counter()
            _, read_s = predictor.predict_file(path, sink)
            t1 = time.perf_counter()
            stream_write_s = sink.write_s
            sink.commit()
            t2 = time.perf_counter()
            timings.append([path, sink.shape[0], sink.shape[1], f"{read_s:.4f}",
                            f"{t1 - t0 - read_s - stream_write_s:.4f}", f"{stream_write_s + (t2 - t1):.4f}",
                            predictor.last_tile_count, len(predictor.models), n_tta])
            done_count += 1
        except Exception as exc:  # noqa: BLE001 - a batch job logs any per-image failure and goes on
            sink.abort()
            reason = str(exc) or type(exc).__name__
            failures.append([path, reason if path in reason else f"{type(exc).__name__}: {reason}"])
        except BaseException:  # Ctrl-C / a Colab stop: no temp files left behind, logs saved, then stop
            sink.abort()
            flush()
            raise
        bar.set_postfix(done=done_count, failed=len(failures), skipped=len(skipped), refresh=False)
        if time.perf_counter() - last_flush > opts.flush_every_s:
            flush()
            last_flush = time.perf_counter()
    flush()
    return {"done": done_count, "failed": len(failures), "skipped": len(skipped), "total": len(unique)}
