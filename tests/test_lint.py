"""The code style configured in pyproject.toml holds (ruff: pyflakes, pycodestyle, numpydoc)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_ruff_check_passes():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed (it is in the testing extras)")
    out = subprocess.run([ruff, "check", "src", "tests", "benchmarks", "scripts", "examples"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
