"""The intermediate representation: models as graphs of layer nodes with checked, defaulted arguments.

`build` turns the syntax tree into `Model`s, reporting every naming and argument error it finds.
"""

from __future__ import annotations

import builtins
import keyword
import math
import sys
from dataclasses import dataclass, field

from . import ast
from .errors import Reporter, Span, did_you_mean_help
from .registry import INITS, LAYERS, LOSSES, OPTIMIZERS, Entry, Layer, Param, format_value

MODEL_INPUT = "input"
MAX_INT = 2**31 - 1
# Names a model class may not take: they would shadow what the generated module itself defines.
RESERVED_CLASS_NAMES = frozenset({"np", "DTYPE"})
DEFAULT_OPTIMIZER = ("SGD", {})


@dataclass
class Node:
    """One layer: its registry entry, bound arguments and (after shape inference) shapes and parameters."""

    name: str
    kind: type[Layer]
    args: dict
    span: Span
    source: str
    inputs: list[str]
    in_shape: tuple[int, ...] | None = None
    out_shape: tuple[int, ...] | None = None
    params: list[Param] = field(default_factory=list)


@dataclass
class Component:
    """The loss or the optimizer of a model: a registry entry with bound arguments."""

    kind: type[Entry]
    args: dict
    span: Span | None
    source: str


@dataclass
class Model:
    name: str
    span: Span
    filename: str
    input_shape: tuple[int, ...]
    nodes: list[Node]
    loss: Component | None
    optimizer: Component

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.nodes[-1].out_shape if self.nodes else self.input_shape


def _call_source(call: ast.Call) -> str:
    """The call written back in canonical .nn syntax, for comments and messages."""
    if not call.args:
        return call.name
    parts = []
    for arg in call.args:
        text = format_value(arg.value.value)
        parts.append(f"{arg.keyword}={text}" if arg.keyword else text)
    return f"{call.name}({', '.join(parts)})"


def _unknown(what: str, plural: str, name: str, span: Span, candidates, listed, reporter: Reporter) -> None:
    """`unknown layer 'Relu'` with a suggestion from `candidates`, or else a note listing the known names."""
    helps = did_you_mean_help(name, candidates)
    notes = [] if helps else [f"known {plural}: " + ", ".join(sorted(listed))]
    reporter.error(f"unknown {what} '{name}'", span, helps=helps, notes=notes)


def lookup(table: dict, call: ast.Call, what: str, reporter: Reporter):
    entry = table.get(call.name)
    if entry is None:
        plural = f"{what}es" if what.endswith("s") else f"{what}s"
        canonical_names = {e.name for e in table.values()}
        _unknown(what, plural, call.name, call.name_span, table, canonical_names, reporter)
    return entry


def _convert(spec, value: ast.Value, owner: str, reporter: Reporter):
    """Check one argument value against its declared type; return the Python value or None after an error."""
    raw = value.value
    where = f"argument '{spec.name}' of {owner}"
    if spec.type == "int":
        if isinstance(raw, bool) or not isinstance(raw, int):
            reporter.error(f"{where} must be an integer, got {format_value(raw)}", value.span)
            return None
        if abs(raw) > MAX_INT:
            reporter.error(f"{where} is too large: {raw}", value.span, notes=[f"the limit is {MAX_INT}"])
            return None
    elif spec.type == "float":
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            reporter.error(f"{where} must be a number, got {format_value(raw)}", value.span)
            return None
        raw = float(raw)
        if not math.isfinite(raw):
            reporter.error(f"{where} must be a finite number", value.span)
            return None
    elif spec.type == "bool":
        if not isinstance(raw, bool):
            reporter.error(f"{where} must be true or false, got {format_value(raw)}", value.span)
            return None
    elif spec.type == "name":
        if not isinstance(raw, ast.Name):
            reporter.error(f"{where} must be a name such as he_normal, got {format_value(raw)}", value.span)
            return None
        raw = raw.text
        if spec.name == "init" and raw not in INITS:
            _unknown("initializer", "initializers", raw, value.span, INITS, INITS, reporter)
            return None
    if spec.check is not None:
        problem = spec.check(raw)
        if problem:
            reporter.error(f"{where} {problem}, got {format_value(raw)}", value.span)
            return None
    return raw


def bind_args(entry: type[Entry], call: ast.Call, reporter: Reporter) -> dict | None:
    """Match a call's arguments to the entry's schema, fill defaults, and report every problem found."""
    specs = {a.name: a for a in entry.args}
    before = len(reporter.diagnostics)
    first_keyword = next((a for a in call.args if a.keyword is not None), None)
    misplaced = [a for a in call.args[call.args.index(first_keyword) :] if a.keyword is None] if first_keyword else []
    for arg in misplaced:
        reporter.error(
            "positional argument follows a keyword argument",
            arg.span,
            helps=["put positional arguments first, or name this one"],
            notes=[f"signature: {entry.signature()}"],
        )
    if misplaced:
        return None  # which parameter each value was meant for is unclear; binding would only add noise
    positional = [a for a in call.args if a.keyword is None]
    forms = [f for f in entry.forms() if len(f) == len(positional)]
    given: dict[str, ast.Arg] = {}
    if positional and not forms:
        most = max(len(f) for f in entry.forms())
        reporter.error(
            f"{entry.name} takes at most {most} positional argument{'s' if most != 1 else ''}, got {len(positional)}",
            positional[most].span if most < len(positional) else call.span,
            notes=[f"signature: {entry.signature()}"],
        )
        return None
    if forms:
        given.update(zip(forms[0], positional))
    for arg in call.args:
        if arg.keyword is None:
            continue
        if arg.keyword not in specs:
            helps = did_you_mean_help(arg.keyword, specs)
            reporter.error(
                f"{entry.name} has no argument '{arg.keyword}'",
                arg.keyword_span,
                helps=helps,
                notes=[f"signature: {entry.signature()}"],
            )
        elif arg.keyword in given:
            first = given[arg.keyword]
            how = "already given by position" if first.keyword is None else "first given"
            reporter.error(
                f"argument '{arg.keyword}' of {entry.name} is given twice",
                arg.span,
                notes=[f"{how} at {first.span}"],
            )
        else:
            given[arg.keyword] = arg
    values = {}
    for spec in entry.args:
        if spec.name in given:
            values[spec.name] = _convert(spec, given[spec.name].value, entry.name, reporter)
        elif spec.required:
            reporter.error(
                f"{entry.name} needs argument '{spec.name}'", call.span, notes=[f"signature: {entry.signature()}"]
            )
        else:
            values[spec.name] = spec.default
    if len(reporter.diagnostics) > before:
        return None
    for name, problem in entry.check_args(values):
        span = given[name].value.span if name in given else call.span
        reporter.error(f"argument '{name}' of {entry.name} {problem}", span)
    return None if len(reporter.diagnostics) > before else values


def _check_identifier(name: str, span: Span, what: str, reporter: Reporter) -> bool:
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        reporter.error(f"{what} '{name}' is a Python keyword", span, helps=[f"rename it, e.g. '{name}_'"])
        return False
    return True


def _check_class_name(name: str, span: Span, reporter: Reporter) -> None:
    """A model becomes a class at the top level of the generated module, so it must not shadow what lives there."""
    if not _check_identifier(name, span, "model name", reporter):
        return
    if name in RESERVED_CLASS_NAMES or name.startswith("_"):
        reporter.error(
            f"model name '{name}' is reserved by the generated module",
            span,
            helps=["choose another name, e.g. 'Net'"],
            notes=["the generated module defines 'np', 'DTYPE' and helpers whose names start with '_'"],
        )
    elif name in dir(builtins):
        reporter.error(
            f"model name '{name}' would shadow the Python builtin '{name}'",
            span,
            helps=[f"choose another name, e.g. '{name.capitalize()}Net'"],
        )
    elif name in sys.stdlib_module_names:
        reporter.error(
            f"model name '{name}' would shadow the standard-library module '{name}'",
            span,
            helps=[f"choose another name, e.g. '{name.capitalize()}Net'"],
        )


def _auto_name(kind: type[Layer], taken: set[str], counters: dict[str, int]) -> str:
    """`<type in lower case>_<n>`, counting unnamed layers of that type from 1 and skipping taken names."""
    stem = kind.name.lower()
    while True:
        counters[stem] = counters.get(stem, 0) + 1
        candidate = f"{stem}_{counters[stem]}"
        if candidate not in taken:
            return candidate


def _build_model(decl: ast.ModelDecl, filename: str, reporter: Reporter) -> Model | None:
    before = len(reporter.diagnostics)
    _check_class_name(decl.name, decl.name_span, reporter)
    if not decl.statements:
        reporter.error(
            f"model '{decl.name}' is empty",
            decl.name_span,
            helps=["a model needs an input shape and at least one layer, e.g. 'input [64]' then 'Linear(10)'"],
        )
        return None
    inputs = [s for s in decl.statements if isinstance(s, ast.InputStmt)]
    layers = [s for s in decl.statements if isinstance(s, ast.LayerStmt)]
    losses = [s for s in decl.statements if isinstance(s, ast.LossStmt)]
    optimizers = [s for s in decl.statements if isinstance(s, ast.OptimizerStmt)]

    input_shape: tuple[int, ...] = ()
    if not inputs:
        reporter.error(
            f"model '{decl.name}' has no input statement",
            decl.name_span,
            helps=["declare the per-sample shape first, e.g. 'input [64]'"],
        )
    else:
        for extra in inputs[1:]:
            reporter.error(
                "a model has exactly one input statement",
                extra.span,
                notes=[f"the first input is at {inputs[0].span}"],
                helps=["remove this one; a layer's input is the previous layer's output"],
            )
        if decl.statements[0] is not inputs[0]:
            reporter.error(
                "'input' must be the first statement of a model",
                inputs[0].span,
                notes=[f"the model starts at {decl.statements[0].span}"],
            )
        dims = []
        for dim in inputs[0].dims:
            raw = dim.value
            if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
                reporter.error(f"input dimensions must be positive integers, got {format_value(raw)}", dim.span)
            elif raw > MAX_INT:
                reporter.error(f"input dimension is too large: {raw}", dim.span)
            else:
                dims.append(raw)
        if not inputs[0].dims:
            reporter.error("input needs at least one dimension, e.g. 'input [64]'", inputs[0].span)
        input_shape = tuple(dims)

    if not layers:
        reporter.error(f"model '{decl.name}' has no layers", decl.name_span)

    for group, what in ((losses, "loss"), (optimizers, "optimizer")):
        for extra in group[1:]:
            reporter.error(f"a model has at most one {what} statement", extra.span)
    for group, what in ((losses, "loss"), (optimizers, "optimizer")):
        for stmt in group[:1]:
            later_layers = [s for s in layers if (s.span.line, s.span.column) > (stmt.span.line, stmt.span.column)]
            if later_layers:
                later = later_layers[0]
                reporter.error(
                    f"the {what} must come after every layer",
                    stmt.span,
                    notes=[f"layer '{later.name or later.call.name}' comes after it, at {later.span}"],
                    helps=[f"move the {what} below the last layer"],
                )

    explicit = {}
    for stmt in layers:
        if stmt.name is None:
            continue
        _check_identifier(stmt.name, stmt.name_span, "layer name", reporter)
        if stmt.name in explicit:
            reporter.error(
                f"duplicate layer name '{stmt.name}'",
                stmt.name_span,
                notes=[f"first defined at {explicit[stmt.name]}"],
                helps=["layer names must be unique within a model"],
            )
        else:
            explicit[stmt.name] = stmt.name_span

    nodes: list[Node] = []
    counters: dict[str, int] = {}
    previous = MODEL_INPUT
    for stmt in layers:
        kind = lookup(LAYERS, stmt.call, "layer", reporter)
        if kind is None:
            continue
        args = bind_args(kind, stmt.call, reporter)
        if args is None:
            continue
        name = stmt.name or _auto_name(kind, set(explicit), counters)
        source = _call_source(stmt.call)
        nodes.append(Node(name, kind, args, stmt.span, source, [previous]))
        previous = name

    loss = None
    if losses:
        call = losses[0].call
        kind = lookup(LOSSES, call, "loss", reporter)
        args = bind_args(kind, call, reporter) if kind else None
        if args is not None:
            loss = Component(kind, args, losses[0].span, _call_source(call))

    if optimizers:
        call = optimizers[0].call
        kind = lookup(OPTIMIZERS, call, "optimizer", reporter)
        args = bind_args(kind, call, reporter) if kind else None
        optimizer = Component(kind, args, optimizers[0].span, _call_source(call)) if args is not None else None
    else:
        name, given = DEFAULT_OPTIMIZER
        kind = OPTIMIZERS[name]
        args = {a.name: given.get(a.name, a.default) for a in kind.args}
        optimizer = Component(kind, args, None, kind.signature())

    if len(reporter.diagnostics) > before:
        return None
    return Model(decl.name, decl.span, filename, input_shape, nodes, loss, optimizer)


def build(program: ast.Program, reporter: Reporter) -> list[Model]:
    """Check every model of a program; raise CompileError (via the reporter) if any problem was found."""
    if not program.models:
        reporter.error("no model in this file", None, helps=["a file holds one or more 'model Name { ... }' blocks"])
    models = []
    first_seen: dict[str, Span] = {}
    for decl in program.models:
        if decl.name in first_seen:
            reporter.error(
                f"two models are named '{decl.name}'",
                decl.name_span,
                notes=[f"the first is at {first_seen[decl.name]}"],
                helps=["each model becomes a class of the generated module; give each a unique name"],
            )
        first_seen.setdefault(decl.name, decl.name_span)
        model = _build_model(decl, reporter.filename, reporter)
        if model is not None:
            models.append(model)
    reporter.raise_if_any()
    return models
