"""nncompile: compile `.nn` neural-network descriptions into standalone, readable NumPy modules.

`compile_source` returns the generated code; `load` compiles and imports it in one go; `export_onnx` writes a
model with its parameters as ONNX (needs the optional onnx package); `plot_history` draws the training curves of a
fit() history (with the optional extra `nncompile[plot]`).
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._threads import import_numpy_with_signals_for_the_main_thread

import_numpy_with_signals_for_the_main_thread()

from .compiler import DTYPES, NNCompileWarning, compile_file, compile_models, compile_source, load
from .errors import CompileError, Diagnostic, Span
from .onnx_export import export_onnx
from .plot import plot_history

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
