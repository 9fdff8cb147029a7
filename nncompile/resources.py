"""Locate the grammar and template files shipped inside the package.

`grammar/` and `templates/` sit at the repo top level and are mapped into the package by pyproject.toml.
"""

from __future__ import annotations

from importlib import resources


def grammar_text() -> str:
    return resources.files("nncompile.grammar").joinpath("nn.lark").read_text(encoding="utf-8")


def templates_root():
    return resources.files("nncompile.templates")


# The line of nncompile/runtime.py after which its text is copied into every generated module.
RUNTIME_MARKER = "# ---- generated modules copy everything below this line ----"


def runtime_source() -> str:
    """The shared runtime as generated modules carry it: nncompile/runtime.py below its marker line."""
    text = resources.files("nncompile").joinpath("runtime.py").read_text(encoding="utf-8")
    _head, marker, body = text.partition(RUNTIME_MARKER)
    if not marker:
        raise RuntimeError("nncompile/runtime.py lost its marker line")
    return body
