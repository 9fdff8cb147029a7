"""Render lowered models into one Python module through the jinja2 templates in `templates/`.

Rendering only: every name, shape and decision arrives ready-made from `nncompile.lower`.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache

import jinja2

from . import __version__
from .lower import ModelView, py_literal, safe_text, shape_text
from .resources import runtime_source, templates_root


class _PackageLoader(jinja2.BaseLoader):
    """Loads templates through importlib.resources, so they work from a wheel as from a checkout."""

    def get_source(self, environment, template):
        path = templates_root()
        for part in template.split("/"):
            path = path.joinpath(part)
        if not path.is_file():
            raise jinja2.TemplateNotFound(template)
        return path.read_text(encoding="utf-8"), None, lambda: True


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=_PackageLoader(),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.globals.update(py_literal=py_literal, shape_text=shape_text, tuple_block=tuple_block)
    env.filters["shape_text"] = shape_text
    return env


def tuple_block(items: list[str], indent: int) -> str:
    """A tuple of code items as the formatter lays it out: one item per line with trailing commas, except that
    an empty or one-item tuple (whose comma is not optional) stays on one line."""
    if len(items) <= 1:
        return f"({items[0]},)" if items else "()"
    inner = " " * (indent + 4)
    return "(\n" + "".join(f"{inner}{item},\n" for item in items) + " " * indent + ")"


def render(models: list[ModelView], filename: str, dtype: str) -> str:
    names = ", ".join(m.name for m in models)
    source_name = safe_text(os.path.basename(filename))
    text = (
        environment()
        .get_template("module.py.j2")
        .render(
            models=models,
            exported=sorted(m.name for m in models),
            version=__version__,
            source_name=source_name,
            dtype=dtype,
            runtime=runtime_source().strip(),
            module_title=f"{names}: neural network{'s' if len(models) > 1 else ''} compiled from {source_name}.",
        )
    )
    return _tidy(text)


LINE_LENGTH = 120
_NAMES = re.compile(r" *\w+(, \w+)+")
_CLOSING = {")": "(", "]": "["}


def _final_bracket(line: str) -> int | None:
    """Index of the bracket that opens the one closing the line, skipping string literals; None if unbalanced."""
    depth = 0
    quote = None
    for index in range(len(line) - 1, -1, -1):
        char = line[index]
        if quote:
            if char == quote:
                quote = None
            continue
        if char in "\"'":
            quote = char
        elif char in ")]":
            depth += 1
        elif char in "([":
            depth -= 1
            if depth == 0:
                return index
    return None


def _top_level_parts(text: str) -> list[str]:
    """`text` split at the commas outside brackets and strings."""
    parts, depth, quote, start = [], 0, None, 0
    for index, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index].strip())
            start = index + 1
    if text[start:].strip():
        parts.append(text[start:].strip())
    return parts


def wrap_line(line: str) -> list[str]:
    """A too-long statement split the way the formatter splits it: at the brackets that close the line, their
    contents on one indented line if they fit, else one item per line with a trailing comma."""
    if len(line) <= LINE_LENGTH or line.lstrip().startswith("#"):
        return [line]
    targets, equals, value = line.partition(" = ")
    if equals and "," in targets and _NAMES.fullmatch(targets):
        # Unpacking into many names: the names in brackets, one per line.
        indent = " " * (len(line) - len(line.lstrip()))
        names = [indent + "    " + name.strip() + "," for name in targets.split(",")]
        return [indent + "(", *names, f"{indent}) = {value}"]
    if not line.endswith((")", "]")):
        return [line]
    opener = _final_bracket(line)
    if opener is None or opener + 1 > LINE_LENGTH:
        return [line]
    indent = " " * (len(line) - len(line.lstrip()))
    head, body, closer = line[: opener + 1], line[opener + 1 : -1], line[-1]
    inner = indent + "    "
    if len(inner) + len(body.strip()) <= LINE_LENGTH and not body.rstrip().endswith(","):
        return [head, inner + body.strip(), indent + closer]
    lines = [head]
    for part in _top_level_parts(body):
        lines += wrap_line(inner + part + ",")
    return [*lines, indent + closer]


def _tidy(text: str) -> str:
    """Strip trailing spaces, collapse runs of blank lines left by template control flow, and split statements
    that long names made too long."""
    lines = []
    in_docstring = False
    for line in text.splitlines():
        line = line.rstrip()
        if line.count('"""') == 1:
            in_docstring = not in_docstring
            lines.append(line)
        else:
            lines += [line] if in_docstring else wrap_line(line)
    out: list[str] = []
    for line in lines:
        if not line and len(out) >= 2 and not out[-1] and not out[-2]:
            continue
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"
