"""Where condsim keeps its own files (embedding cache, locally built models)."""

from __future__ import annotations

import os
from pathlib import Path


def condsim_home() -> Path:
    """``$CONDSIM_HOME`` or ``~/.cache/condsim`` (not created here: no side effects)."""
    env = os.environ.get("CONDSIM_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "condsim"


def default_cache_dir() -> Path:
    """``$CONDSIM_CACHE`` or ``<condsim_home>/embeddings``."""
    env = os.environ.get("CONDSIM_CACHE")
    return Path(env).expanduser() if env else condsim_home() / "embeddings"
