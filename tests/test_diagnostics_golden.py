"""Golden error files: tests/errors/NAME.nn documents a mistake; NAME.err is exactly what nncompile prints for it."""

from __future__ import annotations

import difflib

import pytest
from regenerate_errors import ERRORS, expected_code, expected_errors

CASES = sorted(ERRORS.glob("*.nn"))
REGENERATE = "python tests/regenerate_errors.py"


def test_there_are_error_cases():
    assert len(CASES) >= 15


@pytest.mark.parametrize("nn_file", CASES, ids=lambda p: p.stem)
def test_error_output_matches_golden(nn_file):
    golden = nn_file.with_suffix(".err")
    assert golden.exists(), f"missing {golden.name}; run: {REGENERATE}"
    code, actual = expected_errors(nn_file)
    assert code == expected_code(nn_file)
    expected = golden.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), "golden", "actual"))
        pytest.fail(f"messages differ from {golden.name}; if intended, run: {REGENERATE}\n{diff}")


@pytest.mark.parametrize("nn_file", CASES, ids=lambda p: p.stem)
def test_every_error_is_located_and_explained(nn_file):
    """Every error line names the file and (except for whole-file problems) a line and column, and shows a caret."""
    text = nn_file.with_suffix(".err").read_text(encoding="utf-8")
    kind = ": warning: " if expected_code(nn_file) == 0 else ": error: "
    errors = [line for line in text.splitlines() if kind in line]
    assert errors, text
    for line in errors:
        location = line.split(kind)[0]
        assert location.startswith(nn_file.name + ":"), line
        row, column = location.split(":")[1:]
        assert int(row) >= 1 and int(column) >= 1
    assert text.count("^") >= len(errors)
    assert "Traceback" not in text
