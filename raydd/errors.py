"""The one error type users see.

Every mistake a user can make (bad flag, unknown dataset, unreadable store, malformed video above the
allowed fraction, ...) raises :class:`RayddError` with a single sentence that names the thing that was
wrong and what to do about it. Entry modules print it as one line and exit non-zero; library code never
calls ``exit()``.
"""


class RayddError(Exception):
    """A user-facing error: one line, naming the offending input and the fix."""


class ConfigError(RayddError, ValueError):
    """An invalid command-line or config value; the message names the flag."""
