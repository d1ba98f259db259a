"""Run configuration as a dataclass, saved as RUN/config.yaml beside every run so the run can be rebuilt from it."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults work; the CLI maps flags onto these fields."""

    manifest: str = ""
    out: str = "runs/train"
    model: str = "unet"
    model_options: dict = field(default_factory=dict)
    loss: str = "bce_dice"
    loss_options: dict = field(default_factory=dict)
    augmentation: str = "default"
    channels: int = 1
    norm_low: float = 2.0
    norm_high: float = 98.0
    patch_size: int = 128
    batch_size: int = 16
    epochs: int = 40
    steps_per_epoch: int = 0          # 0 = about two passes over the training pixels per epoch
    learning_rate: float = 1e-3
    early_stopping_patience: int = 10  # epochs without val_dice improvement; 0 disables
    time_budget_s: float = 0.0         # stop after this many seconds of training (0 = no limit)
    val_fraction: float = 0.2          # used only when the manifest has no split=val rows
    mixed_precision: str = "auto"      # auto | on | off
    seed: int = 0
    verbose: int = 1

    def validate(self) -> "TrainConfig":
        if self.patch_size < 16 or self.patch_size % 16:
            raise ValueError(f"patch_size must be a multiple of 16 (>= 16), got {self.patch_size}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be >= 1")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.mixed_precision not in ("auto", "on", "off"):
            raise ValueError(f"mixed_precision must be auto, on or off, got {self.mixed_precision!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write as YAML (or JSON if the suffix is .json)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2) if path.suffix == ".json" else yaml.safe_dump(self.to_dict(), sort_keys=False)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown config key(s) {sorted(unknown)}; known: {sorted(names)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """Read a YAML or JSON config file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found")
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: config must be a mapping of field: value")
        return cls.from_dict(data)
