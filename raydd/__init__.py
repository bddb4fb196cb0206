"""raydd: distributed video dataset distillation (static-dynamic disentanglement) on Ray."""

from typing import Any

from raydd.console import plain_ray_output
from raydd.errors import ConfigError, RayddError
from raydd.provenance import VERSION as __version__

plain_ray_output()  # before any raydd module imports Ray, which reads RAY_DEDUP_LOGS when imported

__all__ = ["ConfigError", "RayddError", "__version__", "load_distilled"]


def __getattr__(name: str) -> Any:
    """``raydd.load_distilled(uri)`` without importing torch on ``import raydd``."""
    if name == "load_distilled":
        from raydd.distilled_set import load_distilled

        return load_distilled
    raise AttributeError(f"module 'raydd' has no attribute {name!r}")
