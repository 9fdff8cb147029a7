"""The pipeline in one place: parse → build IR → infer shapes → lower → render, plus import of the result.

This is the library API behind the CLI.
"""

from __future__ import annotations

import linecache
import os
import select
import stat
import types
import warnings
from collections.abc import Callable

from . import codegen, ir, parser, shapes
from ._threads import import_numpy_with_signals_for_the_main_thread
from .errors import CompileError, Diagnostic, Reporter, Span
from .lower import lower
from .registry import load_all

DTYPES = ("float32", "float64")


class NNCompileWarning(UserWarning):
    """Legal .nn code that is almost surely a mistake (a value computed but never used, ...)."""


def _warn(text: str) -> None:
    warnings.warn(text, NNCompileWarning, stacklevel=4)


def normalize_newlines(source: str) -> str:
    """Every line break as '\n': a lone '\r' (old Mac files) ends a line too, so it ends a comment."""
    return source.replace("\r\n", "\n").replace("\r", "\n")


def compile_models(
    source: str, filename: str = "<string>", on_warning: Callable[[str], None] | None = None
) -> list[ir.Model]:
    """Parse and check source text; return shape-inferred models or raise CompileError.

    Warnings (rendered like errors, `FILE:LINE:COL: warning: ...`) go to `on_warning`; by default they are
    issued as Python warnings of category NNCompileWarning.
    """
    load_all()
    source = normalize_newlines(source)
    program = parser.parse(source, filename)
    reporter = Reporter(filename, source)
    models = ir.build(program, reporter)
    for model in models:
        before = len(reporter.diagnostics)
        shapes.infer(model, reporter)
        if len(reporter.diagnostics) == before:
            shapes.lint(model, reporter)
    reporter.raise_if_any()
    if reporter.warnings:
        (on_warning or _warn)(reporter.render_warnings())
    return models


def compile_source(
    source: str, dtype: str = "float32", filename: str = "<string>", on_warning: Callable[[str], None] | None = None
) -> str:
    """Compile .nn source text to the text of a Python module."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    models = compile_models(source, filename, on_warning)
    return codegen.render([lower(m, dtype) for m in models], filename, dtype)


def read_source(path: str) -> str:
    """The text of a .nn file; a CompileError for a missing, unreadable or non-UTF-8 file."""
    if not os.path.exists(path):
        raise CompileError([Diagnostic("no such file")], path)
    if os.path.isdir(path):
        raise CompileError([Diagnostic("is a directory, not a .nn file")], path)
    try:
        with open(path, "rb") as handle:
            data = handle.read() if stat.S_ISREG(os.fstat(handle.fileno()).st_mode) else _read_waiting(handle)
    except OSError as err:
        raise CompileError([Diagnostic(f"cannot read: {err.strerror or err}")], path) from None
    try:
        return data.decode("utf-8-sig")  # a leading byte-order mark is dropped
    except UnicodeDecodeError as err:
        raise _not_utf8(path, data, err) from None


def _read_waiting(handle) -> bytes:
    """All of a FIFO's or device's bytes. A signal that arrives just before a blocking read() is handled only when
    read() returns, which for a silent FIFO is never; waiting in select() with a timeout gives Python's handler
    (Ctrl-C) its turn at least every 0.1 s."""
    chunks = []
    while True:
        ready, _, _ = select.select([handle], [], [], 0.1)
        if ready:
            chunk = os.read(handle.fileno(), 1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _not_utf8(path: str, data: bytes, err: UnicodeDecodeError) -> CompileError:
    """Locate the first byte that is not UTF-8 and show its line, undecodable bytes shown as '�'."""
    line_start = data.rfind(b"\n", 0, err.start) + 1
    line = data.count(b"\n", 0, err.start) + 1
    column = len(data[line_start : err.start].decode("utf-8", errors="replace")) + 1
    diagnostic = Diagnostic(
        f"not valid UTF-8: byte 0x{data[err.start]:02x} at offset {err.start}",
        Span.point(line, column),
        helps=["save the file as UTF-8"],
    )
    return CompileError([diagnostic], path, data.decode("utf-8", errors="replace"))


def compile_file(path: str, dtype: str = "float32") -> str:
    """Compile a .nn file to the text of a Python module; file problems are CompileErrors too."""
    return compile_source(read_source(path), dtype, filename=path)


def is_path(path_or_source, caller: str = "nncompile.load") -> bool:
    """How load() and export_onnx() tell a .nn file from .nn source text: a path object, or a one-line string
    without '{', is a path. Anything but a str or a path object is a TypeError (bytes too: decode them first)."""
    if isinstance(path_or_source, os.PathLike):
        return True
    if not isinstance(path_or_source, str):
        raise TypeError(
            f"{caller}: expected the path of a .nn file (str or os.PathLike) or .nn source text (str), "
            f"got {type(path_or_source).__name__}"
        )
    return "{" not in path_or_source and "\n" not in path_or_source


def load(path_or_source, dtype: str = "float32") -> types.ModuleType:
    """Compile a .nn file (a path) or .nn source text and return the generated module, without writing a file.

    A one-line string without '{' is taken as a path; anything else as source text.
    """
    if is_path(path_or_source):
        path = os.fsdecode(path_or_source)
        return run_module(compile_file(path, dtype), path, os.path.splitext(os.path.basename(path))[0])
    return run_module(compile_source(path_or_source, dtype), "<string>", "nncompiled")


def run_module(code: str, filename: str, module_name: str) -> types.ModuleType:
    """Generated code run as a module in memory (not written to a file); tracebacks and inspect show its source."""
    # The module imports NumPy: if this is its first import, the threads its BLAS starts must not take signals.
    import_numpy_with_signals_for_the_main_thread()
    module = types.ModuleType(module_name)
    module.__file__ = f"<nncompile {filename}>"
    # Let tracebacks and inspect show the generated source, which exists only in memory.
    linecache.cache[module.__file__] = (len(code), None, code.splitlines(True), module.__file__)
    exec(compile(code, module.__file__, "exec"), module.__dict__)  # noqa: S102  (running our own generated code is the point)
    module.__nncompile_source__ = code
    return module


__all__ = [
    "DTYPES",
    "CompileError",
    "NNCompileWarning",
    "compile_file",
    "compile_models",
    "compile_source",
    "is_path",
    "load",
    "run_module",
]
