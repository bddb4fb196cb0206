"""Hyper-parameter sweeps of stage 2, the engine behind ``python -m raydd.tune``.

:mod:`.sweep_config` (its configuration), :mod:`.sweep` (stage 1 once, then the trials), :mod:`.trial` (one
trial, pure torch), :mod:`.ray_tune` (the Ray Tune adapter), :mod:`.trial_runs` (the trials' MLflow runs,
written by the driver).
"""
