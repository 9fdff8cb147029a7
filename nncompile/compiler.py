"""The pipeline in one place: parse → build IR → infer shapes → lower → render, plus import of the result.

This is the library API behind the CLI.
"""

from __future__ import annotations

import linecache
import os
import types

from . import codegen, ir, parser, shapes
from .errors import CompileError, Reporter
from .lower import lower
from .registry import load_all

DTYPES = ("float32", "float64")


def compile_models(source: str, filename: str = "<string>") -> list[ir.Model]:
    """Parse and check source text; return shape-inferred models or raise CompileError."""
    load_all()
    program = parser.parse(source, filename)
    reporter = Reporter(filename, source)
    models = ir.build(program, reporter)
    for model in models:
        shapes.infer(model, reporter)
    reporter.raise_if_any()
    return models


def compile_source(source: str, dtype: str = "float32", filename: str = "<string>") -> str:
    """Compile .nn source text to the text of a Python module."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    models = compile_models(source, filename)
    return codegen.render([lower(m, dtype) for m in models], filename, dtype)


def compile_file(path: str, dtype: str = "float32") -> str:
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    return compile_source(source, dtype, filename=path)


def load(path_or_source: str, dtype: str = "float32") -> types.ModuleType:
    """Compile a .nn file (a path) or .nn source text and return the generated module, without writing a file."""
    is_path = "{" not in path_or_source and os.path.exists(path_or_source)
    if is_path:
        filename = path_or_source
        code = compile_file(path_or_source, dtype)
        module_name = os.path.splitext(os.path.basename(path_or_source))[0]
    else:
        filename = "<string>"
        code = compile_source(path_or_source, dtype)
        module_name = "nncompiled"
    module = types.ModuleType(module_name)
    module.__file__ = f"<nncompile {filename}>"
    # Let tracebacks and inspect show the generated source, which exists only in memory.
    linecache.cache[module.__file__] = (len(code), None, code.splitlines(True), module.__file__)
    exec(compile(code, module.__file__, "exec"), module.__dict__)  # noqa: S102  (running our own generated code is the point)
    module.__nncompile_source__ = code
    return module


__all__ = ["DTYPES", "CompileError", "compile_file", "compile_models", "compile_source", "load"]
