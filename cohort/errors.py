"""Exception types of `cohort`, one module for all of them.

Every message names the thing that failed (a URL, an option, a series) and says what would
work instead. Per-series error *codes* (for rows of the output tables) join this module with
the ingestion stage.
"""


class CohortError(Exception):
    """Base class of every error `cohort` raises on purpose."""


class ConfigError(CohortError, ValueError):
    """An option or configuration value is out of range or inconsistent."""


class StorageError(CohortError, OSError):
    """A URL cannot be read or written."""
