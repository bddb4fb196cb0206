"""raydd: distributed video dataset distillation (static-dynamic disentanglement) on Ray."""

from raydd.errors import ConfigError, RayddError

__version__ = "0.1.0"
__all__ = ["ConfigError", "RayddError", "__version__"]
