"""The project's own code passes the linter and the formatter, with the settings in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import ROOT

PATHS = ["nncompile", "tests", "benchmarks", "examples", "grammar", "templates"]


def _ruff() -> list[str]:
    exe = shutil.which("ruff")
    return [exe] if exe else [sys.executable, "-m", "ruff"]


def test_ruff_check_and_format_pass():
    check = subprocess.run([*_ruff(), "check", *PATHS], cwd=ROOT, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = subprocess.run([*_ruff(), "format", "--check", *PATHS], cwd=ROOT, capture_output=True, text=True, check=False)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
