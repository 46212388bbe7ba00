"""./test.sh forbids skips (SIMX_NO_SKIPS=1): a test that skips because set-up missed something fails the run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def test_a_skip_fails_the_run_under_test_sh(tmp_path):
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_one.py").write_text(
        "import pytest\n"
        "def test_needs_chromium():\n    pytest.skip('chromium not installed')\n"
        "def test_plain():\n    pass\n")
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:xdist", str(tmp_path)]
    strict = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "SIMX_NO_SKIPS": "1"}, timeout=120)
    assert strict.returncode == 1 and "1 failed, 1 passed" in strict.stdout
    assert "forbids skips" in strict.stdout and "chromium not installed" in strict.stdout
    lenient = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path,
                             env={k: v for k, v in os.environ.items() if k != "SIMX_NO_SKIPS"}, timeout=120)
    assert lenient.returncode == 0 and "1 passed, 1 skipped" in lenient.stdout
