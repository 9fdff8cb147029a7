"""The `nncompile` command: argument handling, file I/O and error printing, nothing else.

Every failure prints a located message and exits 1 (2 for wrong usage); output files are written atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from .compiler import DTYPES, compile_source
from .errors import CompileError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nncompile",
        description="Compile a .nn model file into a standalone NumPy module.",
    )
    parser.add_argument("input", help="the .nn file to compile")
    parser.add_argument("-o", "--output", help="write the module here (default: print it to stdout)")
    parser.add_argument("--check", action="store_true", help="only check the file; write nothing")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="floating-point type of the module")
    return parser


class _Failure(Exception):
    """A problem with files or arguments: one line for the user."""


def read_source(path: str) -> str:
    if not os.path.exists(path):
        raise _Failure(f"{path}: error: no such file")
    if os.path.isdir(path):
        raise _Failure(f"{path}: error: is a directory, not a .nn file")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise _Failure(f"{path}: error: cannot read: {err.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _Failure(f"{path}: error: not valid UTF-8 (byte {err.start})") from None


def write_atomically(path: str, text: str) -> None:
    """Write to a temporary file beside `path`, then rename, so a failure never leaves half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise _Failure(f"{path}: error: output path is a directory")
    if not os.path.isdir(directory):
        raise _Failure(f"{path}: error: cannot write: directory {directory} does not exist")
    try:
        fd, temp = tempfile.mkstemp(prefix=".nncompile-", suffix=".py", dir=directory)
    except OSError as err:
        raise _Failure(f"{path}: error: cannot write: {err.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as err:
        if os.path.exists(temp):
            os.unlink(temp)
        raise _Failure(f"{path}: error: cannot write: {err.strerror}") from None


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.output and os.path.exists(args.output) and os.path.samefile(args.output, args.input):
            raise _Failure(f"{args.output}: error: refusing to overwrite the input file with the output")
        source = read_source(args.input)
        code = compile_source(source, dtype=args.dtype, filename=args.input)
        if args.check:
            return 0
        if args.output:
            write_atomically(args.output, code)
        else:
            sys.stdout.write(code)
    except CompileError as err:
        print(err.render(), file=sys.stderr)
        return 1
    except _Failure as err:
        print(err, file=sys.stderr)
        return 1
    return 0


def main() -> None:
    sys.exit(run())
