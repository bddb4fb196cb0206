"""Networks of the paper, built by name from a registry of keyword-only factories.

Video models take float input (N, C, T, H, W); image models (N, C, H, W). None of them knows about
files, datasets or devices: callers move them.
"""

from raydd.models.registry import build_model, model_names

__all__ = ["build_model", "model_names"]
