"""The training engine: config -> data -> model -> fit with checkpoints -> RUN/{best,last}.keras, history, curves.

`train(config)` is the Python API; `cellseg-tf train` maps flags onto a TrainConfig and calls it. A run directory
holds everything needed to rebuild (config.yaml) or continue (last.keras + train_state.json, `train(config,
resume=True)` / `cellseg-tf train --resume RUN`) the run. Optional phases: N epochs with the encoder frozen, then
fine-tuning of the deepest `unfreeze_blocks` encoder blocks at a lower learning rate (cellseg_tf.models.freezing).
`TrainConfig.target` ("auto": an instance target when the masks are label images, else binary; data.targets)
sets the model's output head (models.heads.TargetHead) and the loss (losses.loss_for_target).
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import TrainConfig
from ..data.dataset import Pair, PatchSampler, load_training_pairs, train_dataset, val_dataset
from ..data.io import open_manifest
from ..data.manifest import Sample, select
from ..common.files import atomic_path
from ..common.visualize import plot_curves


@dataclass
class TrainResult:
    run_dir: Path
    best_model: Path
    last_model: Path
    history: dict
    train_seconds: float
    best_val_dice: float
    stop_reason: str = "epochs"   # epochs | early_stopping | time_budget | stopped
    target: str = "binary"        # the target trained (TrainConfig.target with "auto" resolved; data.targets)


def split_train_val(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Manifest rows -> (train, val). Uses split=val rows if any, else a seeded `val_fraction` of train images."""
    train, val = select(samples, "train"), select(samples, "val")
    if not train:
        raise ValueError("the manifest has no split=train rows")
    if val:
        return train, val
    if len(train) == 1:
        return train, train  # a single image: validate on it (the only honest option left)
    n_val = max(1, int(round(val_fraction * len(train))))
    order = np.random.default_rng(seed).permutation(len(train))
    val_idx = set(order[:n_val].tolist())
    return ([s for i, s in enumerate(train) if i not in val_idx], [s for i, s in enumerate(train) if i in val_idx])


def default_steps_per_epoch(pairs: list[Pair], patch_size: int, batch_size: int) -> int:
    """About two passes over the training pixels per epoch, at least 8 steps."""
    pixels = sum(p.mask.size for p in pairs)
    return max(8, math.ceil(2 * pixels / (patch_size ** 2 * batch_size)))


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (x86 flags avx512_bf16 or amx_bf16 in /proc/cpuinfo),
    so that oneDNN runs bfloat16 convolutions natively; without them bfloat16 is emulated and slower than float32."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = set(fh.read().split())
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def resolve_precision(mode: str) -> str:
    """TrainConfig.mixed_precision -> a Keras dtype policy name: "float32", "mixed_float16" or "mixed_bfloat16".

    on -> mixed_float16; bfloat16 -> mixed_bfloat16 (on a CPU without native bfloat16 instructions it is emulated
    and slower, and a warning says so); off -> float32; auto -> mixed_float16 when the Keras backend sees a GPU
    (`models.loading.accelerator_available`), mixed_bfloat16 on a CPU with native bfloat16 instructions
    (avx512_bf16/amx_bf16: ~1.6x the patches per minute, and validation Dice >= float32 on every real set in
    benchmarks/bench_real.py, docs/TRAINING.md "Speed"), else float32.
    """
    fixed = {"on": "mixed_float16", "bfloat16": "mixed_bfloat16", "off": "float32"}
    from ..models.loading import accelerator_available

    if mode == "bfloat16" and not cpu_has_native_bfloat16() and not accelerator_available():
        warnings.warn("mixed_precision=bfloat16 on a CPU without native bfloat16 instructions is emulated and "
                      "slower than float32", UserWarning, stacklevel=2)
    if mode in fixed:
        return fixed[mode]
    if accelerator_available():
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_native_bfloat16() else "float32"


def resolve_mixed_precision(mode: str) -> bool:
    """Whether `mode` trains under a mixed (float16 or bfloat16) policy (`resolve_precision`)."""
    return resolve_precision(mode) != "float32"


@contextlib.contextmanager
def precision_policy(policy: str | bool):
    """Set the Keras global dtype policy for the block and restore the previous one after (no leakage).
    `policy`: a policy name ("float32", "mixed_float16", "mixed_bfloat16"); True/False mean mixed_float16/float32."""
    import keras

    if isinstance(policy, bool):
        policy = "mixed_float16" if policy else "float32"
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


# ----------------------------------------------------------------------------------------------------------------
# Encoder freeze / fine-tune phases (the encoder and its blocks: cellseg_tf.models.freezing)


@dataclass(frozen=True)
class Phase:
    name: str          # "train" | "frozen" | "fine_tune"
    start: int         # first epoch (0-based)
    end: int           # epochs after this phase
    lr_factor: float = 1.0


def base_learning_rate(config: TrainConfig) -> float:
    """The run's starting learning rate: `config.learning_rate`, or the model's default when it is None."""
    from ..models import default_learning_rate

    return float(config.learning_rate) if config.learning_rate is not None else default_learning_rate(config.model)


def plan_phases(config: TrainConfig) -> list[Phase]:
    """One `train` phase, or `frozen` for freeze_encoder_epochs epochs then `fine_tune` at a lower learning rate."""
    n = config.freeze_encoder_epochs
    epochs = config.planned_epochs()
    if n <= 0:
        return [Phase("train", 0, epochs)]
    if n >= epochs:
        return [Phase("frozen", 0, epochs)]
    return [Phase("frozen", 0, n), Phase("fine_tune", n, epochs, config.fine_tune_lr_factor)]


# ----------------------------------------------------------------------------------------------------------------
# history.csv


def read_history(path: str | os.PathLike) -> dict:
    """history.csv -> {column: [float per epoch]} (the `epoch` column dropped)."""
    path = Path(path)
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    keys = [k for k in (rows[0].keys() if rows else []) if k != "epoch"]

    def num(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return float("nan")

    return {k: [num(r.get(k)) for r in rows] for k in keys}


def _truncate_history(path: Path, epochs_done: int) -> None:
    """Keep the header and the rows of epochs < epochs_done (rows of an epoch whose checkpoint was lost go)."""
    if not path.is_file():
        return
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    col = header.index("epoch") if "epoch" in header else None
    kept = [r for r in body if col is None or (r and int(float(r[col])) < epochs_done)]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        csv.writer(fh).writerows([header] + kept)


# ----------------------------------------------------------------------------------------------------------------
# train


def train(config: TrainConfig, samples: list[Sample] | None = None, *, resume: bool = False,
          callbacks: list | None = None) -> TrainResult:
    """Train per `config`; writes RUN/config.yaml, best.keras (best val Dice), last.keras, history.csv, curves.png,
    train_state.json (and epochs/, tensorboard/ when asked).

    resume=True continues RUN=config.out from its last completed epoch: model, optimizer state (iterations, learning
    rate), schedule, callback counters, data stream position and history.csv carry on. `callbacks`: extra Keras
    callbacks, run after the engine's own (so they see this epoch's checkpoint already written).
    """
    import keras

    from .callbacks import (AveragedWeights, BestCheckpoint, EpochCheckpoint, LearningRateLogger,
                            ResumableEarlyStopping, RunState, TimeBudget, read_state, write_state)
    from .distribute import select_strategy, strategy_name
    from .losses import loss_for_target
    from .metrics import default_metrics
    from ..models import build_model, canonical_name, target_kind
    from .. import __version__
    from ..models.heads import output_head
    from ..models.metadata import describe
    from ..models.freezing import check_spec, encoder_blocks, set_encoder_trainable
    from .schedules import RunPlan, averaged_options, build_optimizer, build_schedule

    config.validate()
    if config.tensorboard:
        try:
            import tensorboard  # noqa: F401  (tf.summary needs it; tensorflow-cpu does not install it)
        except ImportError:
            raise ValueError("tensorboard: true needs the tensorboard package (pip install tensorboard)") from None
    run = Path(config.out)
    history_path, best_path, last_path = run / "history.csv", run / "best.keras", run / "last.keras"
    state = None
    if resume:
        state = read_state(run)
        if state is None or not last_path.is_file():
            raise FileNotFoundError(f"{run}: nothing to resume (needs last.keras and train_state.json of a run)")
        if state.get("finished") and (state.get("stop_reason") != "epochs" or state["epochs_done"] >= config.planned_epochs()):
            return _result(run, state)  # already complete: nothing to continue
    else:  # a fresh run in an old run's folder replaces it: no stale best/last/epoch model may survive
        run.mkdir(parents=True, exist_ok=True)
        for stale in (history_path, run / "train_state.json", best_path, last_path,
                      *sorted((run / "epochs").glob("epoch_*.keras"))):
            stale.unlink(missing_ok=True)
    config.save(run / "config.yaml")

    if samples is None:
        samples = open_manifest(config.manifest)
    train_rows, val_rows = split_train_val(samples, config.val_fraction, config.seed)
    requested = state.get("target", "binary") if state else config.target  # a resumed run keeps its target
    train_pairs, val_pairs, target = load_training_pairs(train_rows, val_rows, requested, config.channels,
                                                         config.norm_low, config.norm_high, config.mask_threshold)
    steps = int(state["steps_per_epoch"]) if state else (
        config.steps_per_epoch or default_steps_per_epoch(train_pairs, config.patch_size, config.batch_size))
    epoch = int(state["epochs_done"]) if state else 0
    elapsed = float(state.get("elapsed_s", 0.0)) if state else 0.0
    saved_cb = (state or {}).get("callbacks", {})
    if state:
        _truncate_history(history_path, epoch)
    keras.utils.set_random_seed(config.seed + epoch)  # a resumed run does not replay epoch 0's dropout masks
    val_ds = val_dataset(val_pairs, config.patch_size, config.batch_size, target=target)

    policy = resolve_precision(config.mixed_precision)
    strategy = select_strategy(config.strategy)
    best_cb = BestCheckpoint(best_path, monitor="val_dice", mode="max")
    best_cb.set_resume_state(saved_cb.get("best"))
    resumables: dict = {"best": best_cb}
    fixed = [LearningRateLogger(), best_cb]
    if config.ema_momentum > 0:  # first: the callbacks after it validate and save the averaged weights
        averaged = AveragedWeights()
        averaged.set_resume_state(saved_cb.get("averaged_weights"))
        resumables["averaged_weights"] = averaged
        fixed.insert(0, averaged)
    if config.checkpoint_every_epoch:
        fixed.append(EpochCheckpoint(run / "epochs"))
    early = None
    if config.patience() > 0:
        early = ResumableEarlyStopping(monitor="val_dice", mode="max", patience=config.patience())
        early.set_resume_state(saved_cb.get("early_stopping"))
        resumables["early_stopping"] = early
    sampler = PatchSampler(train_pairs, config.patch_size, config.augmentation, config.seed,
                           foreground_weights=config.sampling_weights or None, target=target)
    if config.hard_mining:
        from ..data.sampling import hard_mining_callback

        options = dict(config.hard_mining_options)
        every = options.pop("every", 1)
        miner = _call_with_options("hard_mining_options", sampler.hard_miner, options)
        mining = hard_mining_callback(miner, batch_size=config.batch_size, every=every)
        mining.set_resume_state(saved_cb.get("hard_mining"))
        resumables["hard_mining"] = mining
        fixed.append(mining)
    csv_logger = keras.callbacks.CSVLogger(str(history_path), append=True)
    tensorboard = keras.callbacks.TensorBoard(str(run / "tensorboard")) if config.tensorboard else None

    model, loaded_phase, stop_reason = None, None, "epochs"
    if state:
        with precision_policy(policy), strategy.scope():
            model = keras.models.load_model(last_path)
        if target_kind(model) != target:
            raise ValueError(f"{last_path}: the model predicts target {target_kind(model)!r} but the data now give "
                             f"{target!r}; resume with the same masks and target")
        loaded_phase = state.get("phase")
    base_lr = base_learning_rate(config)
    phases = plan_phases(config)
    names = [ph.name for ph in phases]
    for index, phase in enumerate(phases):
        if phase.end <= epoch:
            continue
        if loaded_phase in names and index < names.index(loaded_phase):
            continue  # resumed in a later phase that began early (the frozen phase stopped early)
        lr = base_lr * phase.lr_factor
        resumed_here = loaded_phase == phase.name
        # the epoch this phase really began at: its planned start, or earlier when the frozen phase stopped early
        phase_start = int(state.get("phase_start", phase.start)) if resumed_here else epoch
        plan = RunPlan(total_steps=(phase.end - phase_start) * steps, time_budget_s=config.time_budget_s,
                       elapsed_s=elapsed)
        schedule = build_schedule(config.schedule, lr, steps, plan=plan, **config.schedule_options)
        with precision_policy(policy), strategy.scope():
            if model is None:
                if {"out_channels", "target"} & set(config.model_options):
                    raise ValueError("set the output target with TrainConfig.target, not model_options")
                model = build_model(config.model, input_shape=(config.patch_size, config.patch_size, config.channels),
                                    target=target, **config.model_options)
            if output_head(model) is not None:  # every checkpoint carries what prediction needs (models.metadata)
                describe(model, model=canonical_name(config.model), channels=config.channels,
                         norm_low=config.norm_low, norm_high=config.norm_high, mask_threshold=config.mask_threshold,
                         patch_size=config.patch_size, version=__version__)
            if resumed_here:  # resumed inside this phase: keep the restored optimizer and flags
                if not callable(schedule.learning_rate) and state.get("learning_rate") is not None:
                    model.optimizer.learning_rate = float(state["learning_rate"])
                for i, cb in enumerate(schedule.callbacks):
                    if hasattr(cb, "set_resume_state"):
                        cb.set_resume_state(saved_cb.get(f"schedule_{i}"))
            else:
                if phase.name == "frozen":  # a bad unfreeze_blocks fails now, not after the frozen epochs
                    check_spec(config.unfreeze_blocks, len(encoder_blocks(model)[0]), f"{model.name}: unfreeze_blocks")
                    set_encoder_trainable(model, 0)
                elif phase.name == "fine_tune":
                    set_encoder_trainable(model, config.unfreeze_blocks, what="unfreeze_blocks")
                model.compile(optimizer=build_optimizer(config.optimizer, schedule.learning_rate,
                                                        **averaged_options(config.optimizer_options,
                                                                           config.ema_momentum)),
                              loss=loss_for_target(target, config.loss, config.loss_options, config.aux_weight),
                              metrics=default_metrics())
            loaded_phase = None
            phase_resumables = dict(resumables)
            phase_resumables.update({f"schedule_{i}": cb for i, cb in enumerate(schedule.callbacks)
                                     if hasattr(cb, "get_state")})
            budget = TimeBudget(config.time_budget_s, already_s=elapsed) if config.time_budget_s > 0 else None
            run_state = RunState(run, phase_resumables, already_s=elapsed,
                                 info={"epochs_done": epoch, "steps_per_epoch": steps, "phase": phase.name,
                                       "phase_start": phase_start, "strategy": strategy_name(strategy),
                                       "mixed_precision": policy != "float32", "precision": policy,
                                       "target": target})
            cbs = fixed + ([early] if early else []) + schedule.callbacks + [csv_logger]
            cbs += [c for c in (tensorboard, budget) if c is not None] + [run_state] + list(callbacks or [])
            train_ds = train_dataset(train_pairs, config.patch_size, config.batch_size, config.augmentation,
                                     config.seed, start=epoch * steps * config.batch_size, sampler=sampler)
            model.fit(train_ds, steps_per_epoch=steps, epochs=phase.end, initial_epoch=epoch,
                      validation_data=val_ds, callbacks=cbs, verbose=config.verbose,
                      shuffle=False)
        elapsed, epoch = run_state.elapsed(), run_state.epochs_done
        for cb in resumables.values():  # carry counters into the next phase (on_train_begin resets them)
            cb.set_resume_state(cb.get_state())
        if early is not None and early.stopped_epoch > 0 and index + 1 < len(phases) and phase.name == "frozen" \
                and not (budget is not None and budget.triggered):
            # the frozen encoder has given what it can: go on to fine-tuning now, with fresh patience
            early.set_resume_state({**early.get_state(), "wait": 0, "stopped_epoch": 0})
            continue
        if early is not None and early.stopped_epoch > 0:
            stop_reason = "early_stopping"
        elif budget is not None and budget.triggered:
            stop_reason = "time_budget"
        elif epoch < phase.end:
            stop_reason = "stopped"
        if stop_reason != "epochs":
            break

    final = read_state(run) or {"epochs_done": epoch, "steps_per_epoch": steps}
    final.update({"finished": True, "stop_reason": stop_reason, "elapsed_s": elapsed, "target": target})
    write_state(run, {k: v for k, v in final.items() if k != "version"})
    if not best_path.is_file() and last_path.is_file():  # val_dice was never finite: keep the last model as best
        shutil.copyfile(last_path, best_path)
    return _result(run, final, title=f"{config.model} / {config.loss}")


def _call_with_options(label: str, fn, options: dict):
    try:
        return fn(**options)
    except TypeError as exc:
        raise ValueError(f"{label}: bad option ({exc})") from None


def _result(run: Path, state: dict, title: str = "") -> TrainResult:
    history = read_history(run / "history.csv")
    if history:
        plot_curves(history, run / "curves.png", title=title)
    val = [v for v in history.get("val_dice", []) if not math.isnan(v)]
    return TrainResult(run, run / "best.keras", run / "last.keras", history, float(state.get("elapsed_s", 0.0)),
                       max(val) if val else float("nan"), state.get("stop_reason", "epochs"),
                       state.get("target", "binary"))


def resume_run(run_dir: str | os.PathLike, samples: list[Sample] | None = None, callbacks: list | None = None,
               **overrides) -> TrainResult:
    """Continue RUN from RUN/config.yaml (fields in `overrides`, e.g. epochs=60, replace the saved ones)."""
    run = Path(run_dir)
    config = TrainConfig.load(run / "config.yaml")
    config = TrainConfig.from_dict({**config.to_dict(), **overrides, "out": str(run)})
    return train(config, samples, resume=True, callbacks=callbacks)
