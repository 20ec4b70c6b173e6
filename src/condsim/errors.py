"""Exception types: every user-facing failure names the file, row and fix."""

from __future__ import annotations


class CondsimError(Exception):
    """Base class of condsim's user-facing errors (the CLI prints them without traceback)."""


class DataError(CondsimError):
    """A dataset file is missing, malformed or inconsistent."""


class PairingError(DataError):
    """Two runs cannot be compared pairwise (no shared queries, no per-query or per-fold
    values, different folds, seeds or data); the report falls back to CI overlap."""


class ModelError(CondsimError):
    """A model cannot be created, loaded or does not support what is asked of it."""


class EmbeddingError(CondsimError):
    """A model returned embeddings of the wrong shape or with non-finite values."""


class ConfigError(CondsimError):
    """A benchmark or command option has a wrong type, range or name."""


class CacheError(CondsimError):
    """The embedding cache is damaged (e.g. an unreadable ``space.json``), opened read-only
    for a write, or asked for rows it does not hold."""


class InvalidArgumentError(ConfigError, ValueError):
    """An argument is out of range or of the wrong type (e.g. ``batch_size=0``)."""
