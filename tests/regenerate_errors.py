"""Rewrite every tests/errors/NAME.err from NAME.nn; run `python tests/regenerate_errors.py`, then read the diff.

warnings_*.nn files compile (exit 0) and their .err holds the warnings.

Each .err holds exactly what `nncompile NAME.nn --check` prints to stderr when run inside tests/errors.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from nncompile import cli

ERRORS = Path(__file__).resolve().parent / "errors"


def expected_errors(nn_file: Path) -> tuple[int, str]:
    """(exit code, stderr) of `nncompile NAME.nn --check`, run in the file's directory so paths stay relative."""
    stderr = io.StringIO()
    previous = os.getcwd()
    os.chdir(nn_file.parent)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = cli.run([nn_file.name, "--check"])
    finally:
        os.chdir(previous)
    return code, stderr.getvalue()


def expected_code(nn_file: Path) -> int:
    """Files named warnings_*.nn hold legal code that draws warnings (exit 0); the others hold errors (exit 1)."""
    return 0 if nn_file.stem.startswith("warnings") else 1


def main() -> None:
    for nn_file in sorted(ERRORS.glob("*.nn")):
        code, text = expected_errors(nn_file)
        if code != expected_code(nn_file):
            raise SystemExit(f"{nn_file.name}: expected exit code {expected_code(nn_file)}, got {code}")
        target = nn_file.with_suffix(".err")
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target.relative_to(ERRORS.parent.parent)}")


if __name__ == "__main__":
    main()
