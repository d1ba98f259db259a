"""Post-processing parameters: how predicted maps become cells, and where a run keeps them (RUN/instances.yaml).

`InstanceParams` is what `instances.labels_from_maps` reads; `tuning` writes the validated values with
`save_instance_params`; `predict` finds them beside its models (`run_instance_params`, `run_tta`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from ..common.files import write_text_atomic


@dataclass(frozen=True)
class InstanceParams:
    """How `labels_from_maps` turns predicted maps into cells; saved as YAML beside a run (RUN/instances.yaml).

    fg_threshold:   a pixel is cell when channel 0 (foreground probability) > this.
    seed_threshold: contour: a cell's core is foreground with boundary probability (ch1) < this;
                    distance: a cell's core is where the normalised distance to its border (ch1) > this.
    seed_h:         > 0: a core must also hold a peak of the core score that rises at least this much above the
                    saddle to any higher peak (an h-maximum), so one core region with two peaks gives two seeds:
                    touching cells whose maps dip only a little between them still split. 0 = threshold only.
    min_size:       objects with fewer pixels are dropped (last step).
    fill_holes:     fill background holes enclosed by foreground before splitting (so no cell has a hole).
    connectivity:   1 = 4-neighbours, 2 = 8-neighbours, for foreground components and seeds.
    merge_threshold: two touching cells become one when the map still says "inside a cell" along their shared
                    border: mean core score there > this (distance: ch1; contour: 1 − ch1). A real border between
                    touching cells scores near 0; a cell cut in two by a second seed scores high. 1 = never merge.
    small_fraction: cells smaller than this fraction of the image's median cell area are fragments: each joins the
                    neighbour it shares the longest border with, or is dropped when it touches none. Relative to
                    the image's own cells, so it follows cell size from image to image. 0 = off.
    """

    fg_threshold: float = 0.5
    seed_threshold: float = 0.5
    min_size: int = 16
    fill_holes: bool = True
    connectivity: int = 2
    merge_threshold: float = 1.0
    small_fraction: float = 0.0
    seed_h: float = 0.0

    def __post_init__(self):
        for name in ("fg_threshold", "seed_threshold", "merge_threshold", "small_fraction", "seed_h"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if int(self.min_size) < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")
        if self.connectivity not in (1, 2):
            raise ValueError(f"connectivity must be 1 (4-neighbour) or 2 (8-neighbour), got {self.connectivity}")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> "InstanceParams":
        """Build from a mapping; unknown keys are an error naming `source` (a typo must not pass silently)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{source}: unknown instance parameter(s) {unknown}; known: {', '.join(sorted(names))}")
        types = {"fg_threshold": float, "seed_threshold": float, "min_size": int, "fill_holes": bool,
                 "connectivity": int, "merge_threshold": float, "small_fraction": float, "seed_h": float}
        try:
            return cls(**{k: types[k](v) for k, v in data.items()})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from None

    def replace(self, **changes) -> "InstanceParams":
        """A copy with `changes` applied (None values are ignored, so CLI flags that were not given keep the value)."""
        return self.from_dict({**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}})


def save_instance_params(path: str | os.PathLike, params: InstanceParams, **info) -> Path:
    """Write RUN/instances.yaml atomically: the params at top level, `info` (kind, scores) under `tuning:`."""
    import yaml

    data = params.to_dict()
    if info:
        data["tuning"] = info
    return write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


def _read_instances_yaml(path: str | os.PathLike) -> dict:
    """The mapping in an instances.yaml; unreadable or not a mapping is an error naming the file."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read instance parameters ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of instance parameters, got {type(data).__name__}")
    return data


def load_instance_params(path: str | os.PathLike) -> InstanceParams:
    """Read an instances.yaml written by `save_instance_params` (its `tuning:` block is information only)."""
    data = _read_instances_yaml(path)
    data.pop("tuning", None)
    return InstanceParams.from_dict(data, str(path))


def _run_instances_file(model_paths) -> Path | None:
    """RUN/instances.yaml beside the first model that has one (next to RUN/best.keras, or one folder up for
    RUN/epochs/*.keras); None when no model has one."""
    for p in model_paths:
        for folder in (Path(p).parent, Path(p).parent.parent):
            if (folder / "instances.yaml").is_file():
                return folder / "instances.yaml"
    return None


def run_instance_params(model_paths, default: InstanceParams | None = None) -> InstanceParams:
    """The params saved beside the models (`_run_instances_file`), else `default` (InstanceParams() when None)."""
    path = _run_instances_file(model_paths)
    return load_instance_params(path) if path else (default or InstanceParams())


def run_tta(model_paths) -> str:
    """The test-time augmentation the models' validation chose (`tta` under `tuning:` in RUN/instances.yaml),
    else "none": what PredictOptions(tta="auto") resolves to."""
    path = _run_instances_file(model_paths)
    tuning = _read_instances_yaml(path).get("tuning") if path else None
    return str(tuning.get("tta", "none")) if isinstance(tuning, dict) else "none"
