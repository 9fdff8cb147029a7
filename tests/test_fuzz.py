"""Robustness: mutated and random .nn files never crash the compiler, hang it, or leave a partial output file.

For every input the command either succeeds (writing a module that is valid Python) or exits 1 with a located
`FILE:LINE:COL: error:` (or whole-file `FILE: error:`) message; never a traceback, never another exit code. Runs
the CLI in-process for speed (derandomized, a deadline per example, a hard time limit per run), plus a few
subprocess runs of the real command.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nncompile import cli

SEEDS = sorted((ROOT / "tests" / "golden").glob("*.nn")) + sorted((ROOT / "examples").glob("*.nn"))
SEED_TEXTS = [p.read_text(encoding="utf-8") for p in SEEDS] + [
    "model Tiny {\n    input [4]\n    fc = Linear(2, bias=false)\n    loss MSE\n    optimizer SGD(lr=0.1)\n}\n"
]
# Names, numbers, punctuation, comments, whitespace, then any single character.
TOKEN = re.compile(r"\s+|#[^\n]*|[A-Za-z_][A-Za-z0-9_]*|[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|.", re.DOTALL)
VOCABULARY = [
    *"()[]{},=",
    "model",
    "input",
    "loss",
    "optimizer",
    "true",
    "false",
    "Linear",
    "ReLU",
    "Conv1D",
    "MaxPool1D",
    "Flatten",
    "CrossEntropy",
    "SGD",
    "he_normal",
    "fc1",
    "out",
    "k",
    "stride",
    "alpha",
    "0",
    "1",
    "-1",
    "2.5",
    "1e999",
    "1e-999",
    "99999999999999999999",
    "9" * 5000,
    "\n",
    " ",
    "\t",
    "\r\n",
    "# comment",
    "é",
    "\x00",
    ";",
    "@",
    "'",
    "\u2028",
    "\x0c",
]
MAX_SECONDS_PER_RUN = 20


def tokens(text: str) -> list[str]:
    return [m.group(0) for m in TOKEN.finditer(text)]


@st.composite
def mutated_sources(draw) -> bytes:
    """A valid file with a few token-level edits, sometimes with raw bytes spliced in."""
    parts = tokens(draw(st.sampled_from(SEED_TEXTS)))
    for _ in range(draw(st.integers(1, 4))):
        if not parts:
            break
        i = draw(st.integers(0, len(parts) - 1))
        operation = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "replace", "truncate"]))
        if operation == "delete":
            del parts[i]
        elif operation == "duplicate":
            parts.insert(i, parts[i])
        elif operation == "swap":
            j = draw(st.integers(0, len(parts) - 1))
            parts[i], parts[j] = parts[j], parts[i]
        elif operation == "insert":
            parts.insert(i, draw(st.sampled_from(VOCABULARY)))
        elif operation == "replace":
            parts[i] = draw(st.sampled_from(VOCABULARY))
        else:
            parts = parts[:i]
    data = "".join(parts).encode("utf-8")
    if draw(st.booleans()) and draw(st.integers(0, 5)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=6)) + data[at:]
    return data


token_soup = st.lists(st.sampled_from(VOCABULARY), max_size=60).map(lambda ts: " ".join(ts).encode("utf-8"))
random_bytes = st.binary(max_size=200)


@st.composite
def extreme_sources(draw) -> bytes:
    """Deep nesting, very long files and lines, huge numbers."""
    n = draw(st.integers(1, 3000))
    kind = draw(st.sampled_from(["parens", "brackets", "braces", "long_file", "long_line", "huge_numbers", "models"]))
    if kind == "parens":
        text = "model A {\n input [4]\n Linear(" + "(" * n + "1" + ")" * n + ")\n}\n"
    elif kind == "brackets":
        text = "model A {\n input " + "[" * n + "4" + "]" * n + "\n Linear(2)\n}\n"
    elif kind == "braces":
        text = "model A " + "{" * n + " input [4] Linear(2) " + "}" * n + "\n"
    elif kind == "long_file":
        body = "".join(f"  fc{i} = Linear(3)\n  ReLU\n" for i in range(n // 3))
        text = "model Long {\n  input [3]\n" + body + draw(st.sampled_from(["}\n", "", "  Relu\n}\n"]))
    elif kind == "long_line":
        text = "model Wide { input [2] " + "ReLU " * n + draw(st.sampled_from(["}", "Relu }", "Linear(2"]))
    elif kind == "huge_numbers":
        digits = "9" * draw(st.integers(10, 6000))
        text = f"model A {{\n input [{digits}]\n Linear({digits}, in={digits})\n optimizer SGD(lr={digits}.5)\n}}\n"
    else:
        text = "".join(f"model M{i} {{ input [2] Linear(2) }}\n" for i in range(min(n, 100)))
    return text.encode("utf-8")


def run_in_process(args) -> tuple[int, str, str]:
    """Run the command here with a hard time limit, so a hang fails the test instead of blocking it."""

    def too_slow(signum, frame):
        raise TimeoutError(f"nncompile took more than {MAX_SECONDS_PER_RUN} s")

    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, MAX_SECONDS_PER_RUN)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.run([str(a) for a in args])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return code, out.getvalue(), err.getvalue()


def assert_clean_outcome(data: bytes, directory: Path, code: int, stderr: str) -> None:
    source, output = directory / "case.nn", directory / "case.py"
    assert code in (0, 1), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    leftovers = {p.name for p in directory.iterdir()} - {"case.nn", "case.py"}
    assert not leftovers, f"temporary files left behind: {leftovers}"
    if code == 0:
        # Only warnings may be printed for a file that compiles.
        assert ": error: " not in stderr and (not stderr or ": warning: " in stderr.splitlines()[0]), stderr
        compile(output.read_text(encoding="utf-8"), "case.py", "exec")  # the module is valid Python
        return
    assert not output.exists(), "a failed compile must not write the output"
    lines = data.decode("utf-8", errors="replace").split("\n")
    errors = [line for line in stderr.splitlines() if ": error: " in line]
    assert errors and stderr.startswith(errors[0])
    for line in errors:
        match = re.match(rf"{re.escape(str(source))}(?::(\d+):(\d+))?: error: \S", line)
        assert match, line
        if match.group(1):
            row, column = int(match.group(1)), int(match.group(2))
            assert 1 <= row <= len(lines), line
            assert 1 <= column <= len(lines[row - 1].removesuffix("\r")) + 1, line


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    cli.run([str(SEEDS[0]), "--check"])  # warm up: grammar, parse tables, templates
    return tmp_path_factory.mktemp("fuzz")


def check(data: bytes, directory: Path) -> None:
    source, output = directory / "case.nn", directory / "case.py"
    source.write_bytes(data)
    if output.exists():
        output.unlink()
    code, _, stderr = run_in_process([source, "-o", output])
    assert_clean_outcome(data, directory, code, stderr)


FUZZ = settings(
    max_examples=250,
    derandomize=True,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@FUZZ
@given(data=mutated_sources())
def test_mutated_files(workdir, data):
    check(data, workdir)


@FUZZ
@given(data=st.one_of(token_soup, random_bytes))
def test_token_soup_and_random_bytes(workdir, data):
    check(data, workdir)


@settings(FUZZ, max_examples=40)
@given(data=extreme_sources())
def test_extreme_files(workdir, data):
    check(data, workdir)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe\x00model",
        b"model A {\n input [4]\n Linear(99999999999999999999)\n}\n",
        b"model A {\n input [4]\n Linear(" + b"(" * 20000 + b"\n}\n",
        b"model A {\n input [4]\n Linear(" + b"9" * 10000 + b")\n}\n",
        b"model A { input [4] " + b"ReLU " * 20000 + b"Relu }",
    ],
    ids=["bytes", "huge_number", "deep_nesting", "ten_thousand_digits", "long_line"],
)
def test_real_command_on_hostile_files(tmp_path, data):
    source, output = tmp_path / "case.nn", tmp_path / "case.py"
    source.write_bytes(data)
    result = subprocess.run(
        [sys.executable, "-m", "nncompile", str(source), "-o", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    assert_clean_outcome(data, tmp_path, result.returncode, result.stderr)
    assert result.returncode == 1
