"""Test isolation: condsim's home (built models, embedding cache) lives in a temp folder."""

from __future__ import annotations

import os
import tempfile

import pytest

_HOME = tempfile.mkdtemp(prefix="condsim-test-home-")
os.environ.setdefault("CONDSIM_HOME", _HOME)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_clip():
    from condsim import create_model

    return create_model("test/tiny-clip", device="cpu")
