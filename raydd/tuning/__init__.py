"""Hyper-parameter sweeps of stage 2: the pure-torch trial and its Ray Tune adapter."""
