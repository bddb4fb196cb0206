"""Honest evaluation: train fresh networks on a training set, score them on the real test split."""
