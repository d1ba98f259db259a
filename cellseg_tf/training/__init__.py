"""Training stage: losses and metrics, the run config, callbacks, schedules, distribution, the engine, k-fold CV."""
