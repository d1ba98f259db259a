"""Run configuration as a dataclass, saved as RUN/config.yaml beside every run so the run can be rebuilt from it."""
from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..common.files import write_text_atomic
from ..data.preprocessing import NORM_HIGH, NORM_LOW
from ..data.targets import TARGET_CHOICES

STRATEGIES = ("auto", "default", "mirrored", "tpu", "multiworker")
PRECISION_MODES = ("auto", "on", "bfloat16", "off")  # "on": mixed_float16 (GPUs); "bfloat16": mixed_bfloat16
DEFAULT_EPOCHS = 40
DEFAULT_PATIENCE = 5
UNLIMITED_EPOCHS = 100_000  # "until the time budget is spent"
# fields whose default is None ("automatic"): the type a given value must have
_OPTIONAL_TYPES = {"epochs": int, "early_stopping_patience": int, "learning_rate": float}


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
    norm_low: float = NORM_LOW         # normalisation percentiles (data.preprocessing: 1 / 99.8)
    norm_high: float = NORM_HIGH
    mask_threshold: float = 0.0        # mask pixel > this is foreground (127 for anti-aliased 8-bit masks)
    target: str = "auto"               # auto | binary | contour | distance (cellseg_tf.data.targets); auto: distance
                                       # when the masks carry instance ids (label images), else binary
    aux_weight: float = 1.0            # weight of the instance target's second channel in the loss
    patch_size: int = 128
    batch_size: int = 16
    epochs: int | None = None          # None: 40, or no limit when time_budget_s > 0 (the budget ends the run)
    steps_per_epoch: int = 0          # 0 = about two passes over the training pixels per epoch
    learning_rate: float | None = None  # None: the model's default (1e-3 from scratch, 1e-4 pretrained encoder)
    early_stopping_patience: int | None = None  # None: 5 (Das et al. 2025), or off with a time budget; 0 disables
    time_budget_s: float = 0.0         # stop after this many seconds of training (0 = no limit)
    val_fraction: float = 0.2          # used only when the manifest has no split=val rows
    mixed_precision: str = "auto"      # auto | on (float16) | bfloat16 | off; auto: float16 on a GPU, bfloat16 on a
                                       # CPU with native bfloat16, else float32 (docs/TRAINING.md, "Speed")
    seed: int = 0
    verbose: int = 1
    # --- optimiser and learning-rate schedule (cellseg_tf.schedules registries) ---
    optimizer: str = "adam"            # adam | adamw | sgd
    optimizer_options: dict = field(default_factory=dict)
    ema_momentum: float = 0.0          # > 0: validate and save the moving average of the weights (Polyak
                                       # averaging, optimizer use_ema) with this momentum, e.g. 0.99; 0 = off
    schedule: str = "cosine"           # cosine (steps or time budget) | constant | exponential | plateau
    schedule_options: dict = field(default_factory=dict)  # e.g. {decay_steps: 9000, decay_rate: 0.9}
    # --- callbacks ---
    checkpoint_every_epoch: bool = False  # also keep RUN/epochs/epoch_XXX.keras (choose ensemble members later)
    tensorboard: bool = False             # write RUN/tensorboard/ event files
    # --- encoder freeze / fine-tune schedule (docs/TRAINING.md; cellseg_tf.models.freezing) ---
    freeze_encoder_epochs: int = 0        # N > 0: N epochs with the whole encoder frozen, then fine-tuning (0 = off)
    unfreeze_blocks: int | str = "all"    # what fine-tuning trains: the deepest k encoder blocks, or "all"
    fine_tune_lr_factor: float = 0.1      # learning rate after unfreezing = learning_rate × this
    # --- distribution ---
    strategy: str = "auto"                # auto | default | mirrored | tpu | multiworker
    # --- patch sampling (cellseg_tf.sampling; both off by default) ---
    sampling_weights: dict = field(default_factory=dict)  # rare-foreground oversampling, e.g. {small: 4, large: 2}
    hard_mining: bool = False             # re-weight patch draws by last epoch's per-patch loss (Das et al. 2025)
    hard_mining_options: dict = field(default_factory=dict)  # max_patches, mix, power, every

    def validate(self) -> "TrainConfig":
        if self.patch_size < 16 or self.patch_size % 16:
            raise ValueError(f"patch_size must be a multiple of 16 (>= 16), got {self.patch_size}")
        if self.batch_size < 1 or (self.epochs is not None and self.epochs < 1):
            raise ValueError("batch_size and epochs must be >= 1")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 0:
            raise ValueError(f"early_stopping_patience must be >= 0, got {self.early_stopping_patience}")
        if self.time_budget_s < 0:
            raise ValueError(f"time_budget_s must be >= 0, got {self.time_budget_s}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.mixed_precision not in PRECISION_MODES:
            raise ValueError(f"mixed_precision must be one of {', '.join(PRECISION_MODES)}, got {self.mixed_precision!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0 <= self.norm_low < self.norm_high <= 100:
            raise ValueError(f"need 0 <= norm_low < norm_high <= 100, got {self.norm_low}, {self.norm_high}")
        if self.mask_threshold < 0:
            raise ValueError(f"mask_threshold must be >= 0, got {self.mask_threshold}")
        if self.target not in TARGET_CHOICES:
            raise ValueError(f"target must be one of {', '.join(TARGET_CHOICES)}, got {self.target!r}")
        if self.aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {self.aux_weight}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.ema_momentum < 1:
            raise ValueError(f"ema_momentum must be in [0, 1), got {self.ema_momentum}")
        if self.freeze_encoder_epochs < 0:
            raise ValueError(f"freeze_encoder_epochs must be >= 0, got {self.freeze_encoder_epochs}")
        if self.unfreeze_blocks != "all" and not (isinstance(self.unfreeze_blocks, int) and self.unfreeze_blocks >= 1):
            raise ValueError(f"unfreeze_blocks must be 'all' or a number of encoder blocks >= 1, "
                             f"got {self.unfreeze_blocks!r}")
        if not 0 < self.fine_tune_lr_factor <= 1:
            raise ValueError(f"fine_tune_lr_factor must be in (0, 1], got {self.fine_tune_lr_factor}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        for key in ("model_options", "loss_options", "optimizer_options", "schedule_options", "sampling_weights",
                    "hard_mining_options"):
            if not isinstance(getattr(self, key), dict):
                raise ValueError(f"{key} must be a mapping, got {getattr(self, key)!r}")
        return self

    def planned_epochs(self) -> int:
        """`epochs`, or its automatic value: 40, or no limit (UNLIMITED_EPOCHS) when a time budget ends the run."""
        if self.epochs is not None:
            return self.epochs
        return UNLIMITED_EPOCHS if self.time_budget_s > 0 else DEFAULT_EPOCHS

    def patience(self) -> int:
        """`early_stopping_patience`, or its automatic value: 5 (Das et al. 2025), or 0 (off) when a time budget is
        set — the default cosine schedule anneals over the budget, and stopping before its end would cut that short."""
        if self.early_stopping_patience is not None:
            return self.early_stopping_patience
        return 0 if self.time_budget_s > 0 else DEFAULT_PATIENCE

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write as YAML (or JSON if the suffix is .json), atomically."""
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=2) if path.suffix == ".json" else yaml.safe_dump(self.to_dict(), sort_keys=False)
        return write_text_atomic(path, text)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Build from a mapping; values are coerced to each field's type (YAML reads `1e-4` as a string)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        data = _legacy_keys(data)
        unknown = set(data) - set(fields)
        if unknown:
            raise ValueError(f"unknown config key(s) {sorted(unknown)}; known: {sorted(fields)}")
        defaults = cls()
        return cls(**{k: _coerce(k, v, getattr(defaults, k)) for k, v in data.items()})

    def override(self, assignments: "list[str] | None") -> "TrainConfig":
        """Apply `KEY=VALUE` strings in place (VALUE parsed as YAML: `schedule_options={decay_steps: 100}`)."""
        fields = {f.name for f in dataclasses.fields(self)}
        for text in assignments or []:
            key, sep, value = text.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in fields | set(LEGACY_KEYS):
                raise ValueError(f"bad override {text!r}: expected KEY=VALUE with KEY one of {sorted(fields)}")
            for key, value in _legacy_keys({key: yaml.safe_load(value) if value.strip() else ""}).items():
                setattr(self, key, _coerce(key, value, getattr(self, key)))
        return self

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


# keys of earlier versions: still read (saved configs load), mapped onto today's fields with a FutureWarning
LEGACY_KEYS = ("fine_tune_layers", "encoder_layers")


def _legacy_keys(data: dict) -> dict:
    """fine_tune_layers (encoder layers, 0 = all) -> unfreeze_blocks ("all", or 1 block: layers and blocks do not
    map one to one); encoder_layers (fnmatch patterns) is dropped: the encoder is found from the model's structure."""
    if not any(k in data for k in LEGACY_KEYS):
        return data
    data = dict(data)
    if "fine_tune_layers" in data:
        layers = _coerce("fine_tune_layers", data.pop("fine_tune_layers"), 0)
        data.setdefault("unfreeze_blocks", "all" if layers <= 0 else 1)
        warnings.warn(f"config key fine_tune_layers={layers} (encoder layers) is replaced by unfreeze_blocks "
                      f"(encoder blocks, deepest first); read as unfreeze_blocks={data['unfreeze_blocks']!r}",
                      FutureWarning, stacklevel=3)
    if "encoder_layers" in data:
        data.pop("encoder_layers")
        warnings.warn("config key encoder_layers is ignored: the encoder is found from the model's structure "
                      "(cellseg_tf.models.freezing)", FutureWarning, stacklevel=3)
    return data


def _coerce(key: str, value, default):
    """Cast `value` to the type of the field's default; a clear error when it cannot be."""
    if key == "unfreeze_blocks":  # "all" or a count
        text = str(value).strip().lower()
        if text == "all" or text.isdigit() and not isinstance(value, (bool, float)):
            return text if text == "all" else int(text)
        raise ValueError(f"config field {key}: cannot use {value!r}; give 'all' or a number of encoder blocks")
    if value is None or isinstance(default, str) and isinstance(value, str):
        return value
    if isinstance(default, str) and isinstance(value, bool):  # YAML 1.1 reads a bare on/off/yes/no as a boolean
        return "on" if value else "off"
    if default is None and key in _OPTIONAL_TYPES:
        default = _OPTIONAL_TYPES[key]()
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.strip().lower() not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                    raise ValueError(value)
                return value.strip().lower() in ("true", "yes", "1", "on")
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, str):
            return str(value)
        if isinstance(default, dict) and not isinstance(value, dict):
            raise ValueError(value)
        if isinstance(default, list):
            return [value] if isinstance(value, str) else list(value)
    except (TypeError, ValueError):
        raise ValueError(f"config field {key}: cannot use {value!r} as {type(default).__name__}") from None
    return value
