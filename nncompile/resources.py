"""Locate the grammar and template files shipped inside the package.

`grammar/` and `templates/` sit at the repo top level and are mapped into the package by pyproject.toml.
"""

from __future__ import annotations

from importlib import resources


def grammar_text() -> str:
    return resources.files("nncompile.grammar").joinpath("nn.lark").read_text(encoding="utf-8")


def templates_root():
    return resources.files("nncompile.templates")
