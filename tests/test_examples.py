"""The examples in examples/ run as documented (on synthetic data)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_custom_model_example_runs_both_interfaces(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "custom_model.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "CONDSIM_HOME": str(tmp_path / "home")},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LRVS-F model card metrics" in proc.stdout and "CIRR" in proc.stdout
    assert (tmp_path / "example_histogram.yaml").is_file()  # the harness's model card
    assert (tmp_path / "cirr" / "results.json").is_file()
