"""The data manifest: a CSV of image/mask pairs with a split column, validated on load
(read one with `cellseg_tf.data.io.open_manifest`, which also checks image/mask sizes).

Columns: image, mask, split (train|val|test); optional dataset, modality, fold. Lines starting with '#' are
comments. Paths are relative to the manifest's folder (absolute paths are kept). An image path may address one
frame of a multi-page stack as `stack.tif#3`.
"""
from __future__ import annotations

import os
from io import StringIO
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..common.files import write_text_atomic

REQUIRED_COLUMNS = ("image", "mask", "split")
OPTIONAL_COLUMNS = ("dataset", "modality", "fold")
SPLITS = ("train", "val", "test")


class ManifestError(ValueError):
    """A manifest row or file is invalid; the message names the row and the file."""


def split_frame(path: str) -> tuple[str, int | None]:
    """`'a/stack.tif#3'` -> `('a/stack.tif', 3)`; a path without `#k` -> `(path, None)`."""
    base, sep, frame = str(path).rpartition("#")
    if sep and frame.isdigit():
        return base, int(frame)
    return str(path), None


def output_stem(image: str | os.PathLike) -> str:
    """The name every output of an image starts with: its file stem, plus `_fK` for page K of a stack
    (`a/stack.tif#3` -> `stack_f3`, `x/img.v2.png` -> `img.v2`). File names of outputs: `predict.options.output_paths`."""
    base, frame = split_frame(str(image))
    stem = Path(base).stem
    return f"{stem}_f{frame}" if frame is not None else stem


@dataclass(frozen=True)
class Sample:
    """One manifest row with absolute paths. `mask` is None for unlabelled images (prediction only)."""

    image: str
    mask: str | None
    split: str
    row: int
    dataset: str = ""
    modality: str = ""
    fold: int | None = None

    @property
    def stem(self) -> str:
        """Output name of this sample's image (`output_stem`)."""
        return output_stem(self.image)


def _resolve(root: Path, value: str) -> str:
    base, frame = split_frame(value)
    p = Path(base)
    p = p if p.is_absolute() else (root / p)
    p = Path(os.path.normpath(p))
    return f"{p}#{frame}" if frame is not None else str(p)


def _parse_manifest(path: str | os.PathLike) -> list[Sample]:
    """The structural half of `cellseg_tf.data.io.open_manifest` — call that, the one public way to read a manifest:
    it also checks every image/mask pair has the same size, which needs the file readers of a later stage.

    Reads the CSV and returns its rows as `Sample`s with absolute paths. Raises ManifestError naming the row (its line
    in the file) and file for: missing columns, missing files, duplicate rows, unknown split, an image listed both
    as test and as train/val.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        # whole-line comments only: '#' inside a field addresses a stack frame (`stack.tif#3`)
        kept = [(number, line) for number, line in
                enumerate(path.read_text(encoding="utf-8-sig").splitlines(keepends=True), start=1)
                if not line.lstrip().startswith("#")]
        df = pd.read_csv(StringIO("".join(line for _, line in kept)), dtype=str, keep_default_na=False,
                         skipinitialspace=True)
    except Exception as exc:  # pandas raises several types for malformed CSV
        raise ManifestError(f"{path}: cannot parse manifest CSV ({exc})") from exc
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}; expected header image,mask,split[,dataset,modality,fold]")
    if df.empty:
        raise ManifestError(f"{path}: manifest has no rows")
    root = path.parent
    # file line number of every data row (pandas skips the header, blank lines and, above, comment lines)
    line_numbers = [number for number, line in kept[1:] if line.strip()]
    samples: list[Sample] = []
    seen: dict[tuple[str, str], int] = {}
    image_split: dict[str, tuple[str, int]] = {}
    for i, rec in enumerate(df.to_dict("records")):
        row = line_numbers[i] if i < len(line_numbers) else i + 2  # the line of the file, header = line 1
        where = f"{path} row {row}"
        image_rel, mask_rel = rec["image"].strip(), rec["mask"].strip()
        split = rec["split"].strip().lower()
        if split not in SPLITS:
            raise ManifestError(f"{where}: unknown split {rec['split']!r}; use one of {', '.join(SPLITS)}")
        if not image_rel:
            raise ManifestError(f"{where}: empty image path")
        image = _resolve(root, image_rel)
        mask = _resolve(root, mask_rel) if mask_rel else None
        if mask is None and split != "test":
            raise ManifestError(f"{where}: {image_rel}: a {split} row needs a mask")
        for p in (image, mask):
            if p is not None and not Path(split_frame(p)[0]).is_file():
                raise ManifestError(f"{where}: file not found: {split_frame(p)[0]}")
        key = (image, mask or "")
        if key in seen:
            raise ManifestError(f"{where}: duplicate of row {seen[key]} ({image_rel})")
        seen[key] = row
        earlier = image_split.get(image)
        if earlier is not None and earlier[0] != split and "test" in (earlier[0], split):
            raise ManifestError(f"{where}: {image_rel} is also a {earlier[0]} image (row {earlier[1]}); an image in "
                                "both test and train/val leaks the test set into training")
        image_split.setdefault(image, (split, row))
        fold_text = str(rec.get("fold", "")).strip()
        try:
            fold = int(fold_text) if fold_text else None
        except ValueError:
            raise ManifestError(f"{where}: fold must be an integer, got {fold_text!r}") from None
        samples.append(Sample(image=image, mask=mask, split=split, row=row,
                              dataset=str(rec.get("dataset", "")).strip(),
                              modality=str(rec.get("modality", "")).strip(), fold=fold))
    return samples


def select(samples: list[Sample], split: str | None) -> list[Sample]:
    """Rows of one split (None = all)."""
    if split is None:
        return list(samples)
    if split not in SPLITS:
        raise ManifestError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return [s for s in samples if s.split == split]


def write_manifest(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Write rows (dicts with image, mask, split, ...) as a manifest CSV; paths are made relative to its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for r in rows:
        r = dict(r)
        for key in ("image", "mask"):
            if r.get(key):
                base, frame = split_frame(r[key])
                rel = os.path.relpath(os.path.abspath(base), path.parent.resolve())
                r[key] = f"{rel}#{frame}" if frame is not None else rel
        out.append(r)
    cols = list(REQUIRED_COLUMNS) + [c for c in OPTIONAL_COLUMNS if any(c in r for r in out)]
    return write_text_atomic(path, pd.DataFrame(out, columns=cols).to_csv(index=False))
