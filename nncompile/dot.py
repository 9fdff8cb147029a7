"""Graphviz DOT for shape-inferred models: one box per layer, inputs and outputs marked, block instances as clusters.

`to_dot(models, filename)` is a pure function on `nncompile.ir.Model`s (as `compile_models` returns them), deterministic
for a given file; `render(text, path)` runs Graphviz's `dot` program to turn it into an SVG, PNG or PDF picture.

Every text that reaches the DOT source (layer, value and block names, the file name, layer calls) is escaped, so no
name a user chooses can end a string, an HTML label or a comment early: in HTML labels `&`, `<`, `>` and `"` become
entities, in quoted strings `\\` and `"` are backslash-escaped, and everywhere a character that is not printable or
could end a line becomes `<U+XXXX>`.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import unicodedata

from .introspect import model_parameter_count, parameter_count
from .ir import Model, Node
from .shapes import show

# The picture formats --diagram writes, by file suffix: the `dot -T` format of each.
FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf"}
INSTALL_HINT = "install Graphviz, e.g. `apt-get install graphviz` or `brew install graphviz`"

_INPUT = 'shape=invhouse, style=filled, fillcolor="#dbeafe", color="#1d4ed8"'
_OUTPUT = 'shape=house, style=filled, fillcolor="#dcfce7", color="#15803d"'
_CLUSTER = 'style="rounded,filled", fillcolor="#f8fafc", color="#94a3b8", fontname="Helvetica", fontsize=10'


class GraphvizMissing(RuntimeError):
    """The `dot` program is not installed (or not on PATH)."""


def _printable(text: str) -> str:
    """`text` with every character that is not printable, could end a line or reorders text as `<U+XXXX>`."""
    out = []
    for char in str(text):
        if unicodedata.category(char)[0] in "CZ" and char != " ":
            out.append(f"<U+{ord(char):04X}>")
        else:
            out.append(char)
    return "".join(out)


def html_text(text) -> str:
    """Text for inside an HTML-like label: printable, and `&<>"'` as entities."""
    return html.escape(_printable(text), quote=True)


def quoted(text) -> str:
    """A DOT quoted string (an ID or an attribute value) holding exactly `text` (printable)."""
    return '"' + _printable(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _count(n: int) -> str:
    return f"{n:,} param" + ("" if n == 1 else "s")


class _Writer:
    """The DOT text of one model, with IDs prefixed by `prefix` (the model name when the file has several)."""

    def __init__(self, model: Model, filename: str, prefix: str):
        self.model = model
        self.filename = filename
        self.prefix = prefix
        self.lines: list[str] = []

    def id(self, kind: str, name: str) -> str:
        return quoted(f"{self.prefix}{kind}{name}")

    def value_id(self, value: str) -> str:
        """The node standing for a value: a model input or a layer."""
        if value in self.model.input_shapes:
            return self.id("input:", value)
        return self.id("", value)

    def emit(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def layer_label(self, node: Node) -> str:
        scope = f"{node.block}." if node.block else ""
        name = node.name.removeprefix(scope)
        alias = self.model.aliases.get(node.name)
        title = f"<b>{html_text(name)}</b>"
        if alias and (not scope or alias.startswith(scope)) and "." not in alias.removeprefix(scope):
            title += f" <i>({html_text(alias.removeprefix(scope))})</i>"
        details = f"{html_text(show(node.out_shape))} · {html_text(_count(parameter_count(node)))}"
        return f"<{title}<br/>{html_text(node.kind.name)}<br/>{details}>"

    def tooltip(self, node: Node) -> str:
        where = os.path.basename(self.filename)
        if node.span is not None:
            where += f":{node.span.line}"
        return quoted(f"{node.name} = {node.source}  ({where})")

    def layer(self, indent: int, node: Node) -> None:
        self.emit(indent, f"{self.id('', node.name)} [label={self.layer_label(node)}, tooltip={self.tooltip(node)}];")

    def blocks(self, indent: int, path: str | None, children: dict, members: dict) -> None:
        """The layers of instance `path` (None: the model level), each nested instance as a cluster inside it."""
        for node in members.get(path, ()):
            self.layer(indent, node)
        for child in children.get(path, ()):
            self.emit(indent, f"subgraph {self.id('cluster:', child)} {{")
            label = f"<<b>{html_text(child.rsplit('.', 1)[-1])}</b>: {html_text(self.model.blocks[child])}>"
            self.emit(indent + 1, f"graph [label={label}, {_CLUSTER}];")
            self.blocks(indent + 1, child, children, members)
            self.emit(indent, "}")

    def write(self, indent: int) -> list[str]:
        model = self.model
        for item in model.inputs:
            kind = " int" if item.dtype == "int" else ""
            label = f"<<b>{html_text(item.name)}</b><br/>input {html_text(show(item.shape))}{kind}>"
            self.emit(indent, f"{self.id('input:', item.name)} [label={label}, {_INPUT}];")
        # Block instances as nested clusters: each instance's parent is the longest instance path prefixing it.
        children: dict[str | None, list[str]] = {}
        for path in model.blocks:
            parent = next((p for p in _prefixes(path) if p in model.blocks), None)
            children.setdefault(parent, []).append(path)
        members: dict[str | None, list[Node]] = {}
        for node in model.nodes:
            members.setdefault(node.block, []).append(node)
        self.blocks(indent, None, children, members)
        losses = {}
        for term in model.losses:
            scale = "" if term.scale == 1 else f"{term.scale:g} * "
            losses.setdefault(term.output, []).append(f"{scale}{term.component.source}")
        for name in model.outputs:
            shape = show(model.value_shape(model.output_values[name]))
            lines = [f"<b>{html_text(name)}</b>", f"output {html_text(shape)}"]
            lines += [f"loss {html_text(loss)}" for loss in losses.get(name, ())]
            self.emit(indent, f"{self.id('output:', name)} [label=<{'<br/>'.join(lines)}>, {_OUTPUT}];")
        for node in model.nodes:
            for value in node.inputs:
                self.emit(indent, f"{self.value_id(value)} -> {self.id('', node.name)};")
        for name in model.outputs:
            self.emit(indent, f"{self.value_id(model.output_values[name])} -> {self.id('output:', name)};")
        return self.lines


def _prefixes(path: str) -> list[str]:
    """The enclosing instance paths of `path`, innermost first: a.b.c → [a.b, a]."""
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def _title(model: Model, filename: str) -> str:
    params = model_parameter_count(model)
    return f"<<b>{html_text(model.name)}</b> ({html_text(os.path.basename(filename))}) · {html_text(_count(params))}>"


def to_dot(models: list[Model], filename: str = "<string>") -> str:
    """The DOT source of a file's models: one graph; with several models, each in a cluster of its own."""
    name = models[0].name if len(models) == 1 else os.path.basename(filename)
    lines = [
        f"// {_printable(', '.join(m.name for m in models))}: compiled by nncompile from "
        + _printable(os.path.basename(filename)),
        f"digraph {quoted(name)} {{",
        '    graph [rankdir=TB, fontname="Helvetica", fontsize=12, labelloc=t, nodesep=0.3, ranksep=0.35];',
        '    node [shape=box, style="rounded,filled", fillcolor="#ffffff", color="#334155", fontname="Helvetica",'
        + " fontsize=10];",
        '    edge [color="#475569", arrowsize=0.7];',
    ]
    if len(models) == 1:
        lines.append(f"    label={_title(models[0], filename)};")
        lines += _Writer(models[0], filename, "").write(1)
    else:
        for model in models:
            lines.append(f"    subgraph {quoted('cluster:' + model.name)} {{")
            lines.append(f'        graph [label={_title(model, filename)}, style=rounded, color="#64748b"];')
            lines += _Writer(model, filename, f"{model.name}/").write(2)
            lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(text: str, fmt: str) -> bytes:
    """The picture of DOT source `text` in format `fmt` (svg, png or pdf), made by Graphviz's `dot` program.

    Raises GraphvizMissing when `dot` is not installed, RuntimeError when it fails.
    """
    program = shutil.which("dot")
    if program is None:
        raise GraphvizMissing(f"Graphviz's `dot` program is not installed (not found on PATH); {INSTALL_HINT}")
    try:
        result = subprocess.run(
            [program, f"-T{fmt}"], input=text.encode("utf-8"), capture_output=True, check=False, timeout=300
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError("dot did not finish within 300 seconds") from None
    except OSError as err:
        raise RuntimeError(f"dot could not be run: {err.strerror or err}") from None
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise RuntimeError(f"dot failed (exit {result.returncode}): {message[0] if message else 'no message'}")
    return result.stdout


__all__ = ["FORMATS", "GraphvizMissing", "html_text", "quoted", "render", "to_dot"]
