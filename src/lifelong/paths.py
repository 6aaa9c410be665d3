"""Where lifelong keeps caches and data: the platform's user dirs, never the repo."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """User cache (model files, converted weights). ``LIFELONG_CACHE_DIR`` overrides."""
    root = os.environ.get("LIFELONG_CACHE_DIR") or platformdirs.user_cache_dir("lifelong")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir(*, create: bool = True) -> Path:
    """User data (the default memory store and docs workspace). ``LIFELONG_HOME`` overrides.
    ``create=False`` only names it (a command that reads creates nothing)."""
    root = os.environ.get("LIFELONG_HOME") or platformdirs.user_data_dir("lifelong")
    path = Path(root)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
