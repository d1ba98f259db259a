"""Optimisers and learning-rate schedules behind registries: `build_optimizer(name, lr, **options)` and
`build_schedule(name, lr, steps_per_epoch, **options) -> Schedule(learning_rate, callbacks)`.

- constant: a fixed learning rate.
- exponential: staircase exponential decay, lr·rate^floor(step / decay_steps) (Das et al. 2025: ×0.9 / 9000 steps);
  `decay_epochs` may be given instead of `decay_steps`. A Keras LearningRateSchedule, so it is saved inside the
  .keras file and continues from the optimizer's iteration counter after a resume.
- cosine (default): cosine decay over the planned steps or, when the run has a time budget, over the budget —
  whichever ends first — so a time-limited run always finishes annealed (see callbacks.CosineAnnealing).
- plateau: a fixed rate divided by `1/factor` when val_dice stalls for `patience` epochs (ReduceLROnPlateau,
  Henrion et al. 2025);
  the reduced rate lives in the optimizer variables and the counters in train_state.json, so it survives a resume.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class RunPlan:
    """What the training engine knows about the run a schedule must fit: steps in this phase, time budget, seconds
    already trained (resume)."""

    total_steps: int = 0
    time_budget_s: float = 0.0
    elapsed_s: float = 0.0


@dataclass
class Schedule:
    """What a schedule builder returns: the optimizer's learning_rate (float or schedule) + callbacks it needs."""

    learning_rate: object
    callbacks: list = field(default_factory=list)


SCHEDULE_REGISTRY: dict[str, Callable[..., Schedule]] = {}
OPTIMIZER_REGISTRY: dict[str, Callable] = {}


def register_schedule(name: str):
    def deco(fn):
        SCHEDULE_REGISTRY[name] = fn
        return fn
    return deco


def register_optimizer(name: str):
    def deco(fn):
        OPTIMIZER_REGISTRY[name] = fn
        return fn
    return deco


def available_schedules() -> list[str]:
    return sorted(SCHEDULE_REGISTRY)


def available_optimizers() -> list[str]:
    return sorted(OPTIMIZER_REGISTRY)


def _check_options(name: str, options: dict, allowed: tuple) -> None:
    unknown = set(options) - set(allowed)
    if unknown:
        raise ValueError(f"schedule {name!r}: unknown option(s) {sorted(unknown)}; accepted: {sorted(allowed)}")


@register_schedule("constant")
def constant(learning_rate: float, steps_per_epoch: int, plan: RunPlan | None = None, **options) -> Schedule:
    _check_options("constant", options, ())
    return Schedule(float(learning_rate))


@register_schedule("exponential")
def exponential(learning_rate: float, steps_per_epoch: int, decay_steps: int | None = None,
                decay_epochs: float | None = None, decay_rate: float = 0.9, staircase: bool = True,
                plan: RunPlan | None = None) -> Schedule:
    """lr · decay_rate^floor(step / decay_steps); defaults follow Das et al. 2025 (0.9 every 9000 steps)."""
    import keras

    if decay_steps is not None and decay_epochs is not None:
        raise ValueError("exponential schedule: give decay_steps or decay_epochs, not both")
    if decay_epochs is not None:
        decay_steps = max(1, round(float(decay_epochs) * steps_per_epoch))
    decay_steps = 9000 if decay_steps is None else int(decay_steps)
    if decay_steps < 1 or not 0 < decay_rate <= 1:
        raise ValueError(f"exponential schedule: need decay_steps >= 1 and 0 < decay_rate <= 1, "
                         f"got {decay_steps}, {decay_rate}")
    return Schedule(keras.optimizers.schedules.ExponentialDecay(
        float(learning_rate), decay_steps=decay_steps, decay_rate=float(decay_rate), staircase=bool(staircase)))


@register_schedule("plateau")
def plateau(learning_rate: float, steps_per_epoch: int, factor: float = 0.5, patience: int = 3,
            min_lr: float = 1e-6, cooldown: int = 0, monitor: str = "val_dice", mode: str = "max",
            plan: RunPlan | None = None) -> Schedule:
    """Fixed rate, multiplied by `factor` after `patience` epochs without a better `monitor` (ReduceLROnPlateau)."""
    from .callbacks import ResumableReduceLROnPlateau

    if not 0 < factor < 1:
        raise ValueError(f"plateau schedule: factor must be in (0, 1), got {factor}")
    cb = ResumableReduceLROnPlateau(monitor=monitor, mode=mode, factor=float(factor), patience=int(patience),
                                    min_lr=float(min_lr), cooldown=int(cooldown))
    return Schedule(float(learning_rate), [cb])


@register_schedule("cosine")
def cosine(learning_rate: float, steps_per_epoch: int, alpha: float = 0.02, warmup_steps: int = 0,
           hold: float = 0.0, plan: RunPlan | None = None) -> Schedule:
    """lr·(alpha + (1-alpha)·½(1 + cos(π·d))), d = max(0, progress - hold) / (1 - hold),
    progress = max(step/total_steps, seconds/time_budget): the rate stays at lr for the first `hold` of the run."""
    from .callbacks import CosineAnnealing

    if not 0 <= alpha <= 1:
        raise ValueError(f"cosine schedule: alpha must be in [0, 1], got {alpha}")
    if not 0 <= hold < 1:
        raise ValueError(f"cosine schedule: hold must be in [0, 1), got {hold}")
    plan = plan or RunPlan()
    total = plan.total_steps or steps_per_epoch
    cb = CosineAnnealing(float(learning_rate), total, plan.time_budget_s, float(alpha), int(warmup_steps),
                         plan.elapsed_s, float(hold))
    return Schedule(float(learning_rate), [cb])


def build_schedule(name: str, learning_rate: float, steps_per_epoch: int = 1, plan: RunPlan | None = None,
                   **options) -> Schedule:
    """The registered schedule `name` for a phase of the run described by `plan`."""
    if name not in SCHEDULE_REGISTRY:
        raise KeyError(f"unknown schedule {name!r}; available: {', '.join(available_schedules())}")
    return SCHEDULE_REGISTRY[name](learning_rate, steps_per_epoch, plan=plan, **options)


def learning_rate_at(learning_rate, step: int) -> float:
    """Value of a float or LearningRateSchedule at optimizer step `step` (0-based)."""
    import keras

    if callable(learning_rate):
        return float(keras.ops.convert_to_numpy(learning_rate(step)))
    return float(learning_rate)


@register_optimizer("adam")
def _adam(learning_rate, **options):
    import keras

    return keras.optimizers.Adam(learning_rate, **options)


@register_optimizer("adamw")
def _adamw(learning_rate, **options):
    import keras

    return keras.optimizers.AdamW(learning_rate, **options)


@register_optimizer("sgd")
def _sgd(learning_rate, momentum: float = 0.9, **options):
    import keras

    return keras.optimizers.SGD(learning_rate, momentum=momentum, **options)


def averaged_options(options: dict, ema_momentum: float) -> dict:
    """Optimizer `options` plus its moving average of the weights (Keras use_ema) when `ema_momentum` > 0."""
    options = dict(options)
    if ema_momentum > 0:
        if options.get("use_ema") is False:
            raise ValueError("ema_momentum > 0 needs the optimizer's use_ema; optimizer_options sets it False")
        options.update(use_ema=True, ema_momentum=float(ema_momentum))
    return options


def build_optimizer(name: str, learning_rate, **options):
    """A Keras optimizer from the registry (Adam by default, Henrion et al. 2025; Das et al. 2025)."""
    if name not in OPTIMIZER_REGISTRY:
        raise KeyError(f"unknown optimizer {name!r}; available: {', '.join(available_optimizers())}")
    try:
        return OPTIMIZER_REGISTRY[name](learning_rate, **options)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"optimizer {name!r}: bad option ({exc})") from None
