"""The project's own code passes the linter and the formatter, with the settings in pyproject.toml."""

from __future__ import annotations

from conftest import ROOT, ruff

PATHS = ["nncompile", "tests", "benchmarks", "examples", "grammar", "templates"]


def test_ruff_check_and_format_pass():
    check = ruff("check", *PATHS, cwd=ROOT)
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = ruff("format", "--check", *PATHS, cwd=ROOT)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
