"""nncompile: compile `.nn` neural-network descriptions into standalone, readable NumPy modules.

`compile_source` returns the generated code; `load` compiles and imports it in one go; `export_onnx` writes a
model with its parameters as ONNX (needs the optional onnx package); `plot_history` draws the training curves of a
fit() history (with the optional extra `nncompile[plot]`).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .compiler import DTYPES, NNCompileWarning, compile_file, compile_models, compile_source, load
from .errors import CompileError, Diagnostic, Span
from .plot import plot_history


def __getattr__(name):
    # export_onnx imports NumPy: loaded only when asked for, so that compiling (and the CLI) needs no NumPy.
    if name == "export_onnx":
        from .onnx_export import export_onnx

        return export_onnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DTYPES",
    "CompileError",
    "Diagnostic",
    "NNCompileWarning",
    "Span",
    "__version__",
    "compile_file",
    "compile_models",
    "compile_source",
    "export_onnx",
    "load",
    "plot_history",
]
