"""The intermediate representation: models as graphs of layer nodes with checked, defaulted arguments.

`build` turns the syntax tree into `Model`s, reporting every naming and argument error it finds.
"""

from __future__ import annotations

import builtins
import functools
import keyword
import math
import sys
from dataclasses import dataclass, field

from . import ast
from .ast import format_value
from .errors import Reporter, Span, did_you_mean_help
from .registry import INITS, LAYERS, LOSSES, OPTIMIZERS, SCHEDULES, Bound, Entry, Layer, Param

# The name of the one input of a model declared the v1 way, `input [64]`.
DEFAULT_INPUT = "x"
MAX_INT = 2**31 - 1
# Names a model class may not take: they would shadow what the generated module itself defines.
RESERVED_CLASS_NAMES = frozenset({"np", "DTYPE"})
DEFAULT_OPTIMIZER = ("SGD", {})


@dataclass
class Node:
    """One layer: its registry entry, bound arguments, the values it reads and, after shape inference, its shapes
    and what its entry declares for them (`bound`)."""

    name: str
    kind: type[Layer]
    args: dict
    span: Span
    source: str
    inputs: list[str]
    # The block instance the layer belongs to ("residual_1", "outer.inner"), or None at model level.
    block: str | None = None
    in_shapes: list[tuple[int, ...]] | None = None
    out_shape: tuple[int, ...] | None = None
    params: list[Param] = field(default_factory=list)
    bound: Bound | None = None
    # How many arguments the call gave by position (some mistakes show in positional order).
    positional: int = 0

    @property
    def in_shape(self) -> tuple[int, ...] | None:
        """The first input's shape (the only one for single-input layers)."""
        return self.in_shapes[0] if self.in_shapes else None


@dataclass
class Input:
    """A model input: its name (`x` for the v1 form `input [64]`) and per-sample shape."""

    name: str
    shape: tuple[int, ...]
    span: Span
    # "float" or "int" (integer inputs, read by Embedding).
    dtype: str = "float"


@dataclass
class Component:
    """The loss, the optimizer or the schedule of a model: a registry entry with bound arguments."""

    kind: type[Entry]
    args: dict
    span: Span | None
    source: str


@dataclass
class LossTerm:
    """One term of the total loss: `scale · kind(output)`; `output` is an output's name."""

    output: str
    scale: float
    component: Component
    span: Span | None


@dataclass
class Model:
    name: str
    span: Span
    filename: str
    inputs: list[Input]
    nodes: list[Node]
    # Output names as the user wrote them, and the node (or input) whose value each one is.
    outputs: list[str]
    output_values: dict[str, str]
    losses: list[LossTerm]
    optimizer: Component
    # Block instances, in expansion order: instance path ("residual_1", "outer.inner") → block name.
    blocks: dict[str, str] = field(default_factory=dict)
    # Node → the statement name that stands for its value, where the two differ (`h = x -> A -> B`: B's node).
    aliases: dict[str, str] = field(default_factory=dict)
    # The learning-rate schedule (`schedule StepLR(step_size=10)`), or None.
    schedule: Component | None = None

    def label(self, value: str) -> str:
        """A value as the user knows it: `h (linear_2)` for a chain's last node, else its own name."""
        alias = self.aliases.get(value)
        return f"{alias} ({value})" if alias else value

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {i.name: i.shape for i in self.inputs}

    @property
    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: self.value_shape(self.output_values[name]) for name in self.outputs}

    def value_shape(self, value: str) -> tuple[int, ...]:
        for i in self.inputs:
            if i.name == value:
                return i.shape
        return self.node(value).out_shape

    def node(self, name: str) -> Node:
        return self._nodes_by_name[name]

    @functools.cached_property
    def _nodes_by_name(self) -> dict[str, Node]:
        # The node list is complete when a Model is made; later stages only fill in the nodes' fields.
        return {n.name: n for n in self.nodes}

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of the only input (models with several inputs use `input_shapes`)."""
        return self.inputs[0].shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The shape of the first (for most models, the only) output."""
        return self.value_shape(self.output_values[self.outputs[0]])

    @property
    def loss(self) -> Component | None:
        """The loss of a model with one loss term (None without a loss)."""
        return self.losses[0].component if len(self.losses) == 1 else None

    def consumers(self) -> dict[str, list[Node]]:
        """value name → the nodes that read it, in order (a node reading a value twice is listed twice)."""
        found: dict[str, list[Node]] = {}
        for node in self.nodes:
            for value in node.inputs:
                found.setdefault(value, []).append(node)
        return found


def _unknown(what: str, plural: str, name: str, span: Span, candidates, listed, reporter: Reporter) -> None:
    """`unknown layer 'Relu'` with a suggestion from `candidates`, or else a note listing the known names."""
    helps = did_you_mean_help(name, candidates)
    notes = [] if helps else [f"known {plural}: " + ", ".join(sorted(listed))]
    reporter.error(f"unknown {what} '{name}'", span, helps=helps, notes=notes)


def lookup(table: dict, call: ast.Call, what: str, reporter: Reporter, extra=()):
    """The entry a call names; an `unknown layer` error (suggesting from the table and `extra`) otherwise."""
    entry = table.get(call.name)
    if entry is None:
        plural = {"loss": "losses", "layer or block": "layers and blocks"}.get(what, what + "s")
        canonical_names = {e.name for e in table.values()} | set(extra)
        _unknown(what, plural, call.name, call.name_span, [*table, *extra], canonical_names, reporter)
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
    elif spec.type == "name" or (spec.type == "padding" and isinstance(raw, ast.Name)):
        if not isinstance(raw, ast.Name):
            reporter.error(f"{where} must be a name such as he_normal, got {format_value(raw)}", value.span)
            return None
        raw = raw.text
        if spec.name == "init" and raw not in INITS:
            _unknown("initializer", "initializers", raw, value.span, INITS, INITS, reporter)
            return None
        if spec.choices and raw not in spec.choices:
            reporter.error(
                f"{where} must be one of {', '.join(spec.choices)}, got {raw}",
                value.span,
                helps=did_you_mean_help(raw, spec.choices),
            )
            return None
        return raw
    elif spec.type in ("pair", "ints", "padding"):
        raw = _whole_numbers(spec, raw, where, value, reporter)
        if raw is None:
            return None
    if spec.check is not None:
        for number in raw if isinstance(raw, tuple) else (raw,):
            problem = spec.check(number)
            if problem:
                reporter.error(f"{where} {problem}, got {format_value(raw)}", value.span)
                return None
    return raw


def _whole_numbers(spec, raw, where: str, value: ast.Value, reporter: Reporter) -> tuple | None:
    """An int or a list of ints as a tuple: `length` of them for a pair (one int stands for all), any number
    (at least one) for 'ints'."""
    if spec.type != "ints" and isinstance(raw, int) and not isinstance(raw, bool):
        raw = (raw,) * spec.length
    wanted = f"a list of {spec.length} integers" if spec.type != "ints" else "a list of integers, e.g. [8, 8, 1]"
    if spec.type != "ints":
        # A one-axis argument (Conv1D's padding) is written as an integer; a list of one is accepted too.
        wanted = "an integer" if spec.length == 1 else f"an integer or {wanted}"
    if spec.type == "padding":
        wanted += " or " + " or ".join(spec.choices)
    if (
        not isinstance(raw, tuple)
        or not raw
        or any(isinstance(v, bool) or not isinstance(v, int) for v in raw)
        or (spec.type != "ints" and len(raw) != spec.length)
    ):
        reporter.error(f"{where} must be {wanted}, got {format_value(raw)}", value.span)
        return None
    if any(abs(v) > MAX_INT for v in raw):
        reporter.error(f"{where} is too large: {format_value(raw)}", value.span, notes=[f"the limit is {MAX_INT}"])
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
        helps = []
        numbers = [a.value.value for a in positional]
        if entry.args and entry.args[0].type == "ints" and all(type(v) is int for v in numbers):
            # Reshape(8, 8, 1) for Reshape([8, 8, 1])
            helps.append(f"a list goes in brackets: {entry.name}([{', '.join(map(str, numbers))}])")
        reporter.error(
            f"{entry.name} takes at most {most} positional argument{'s' if most != 1 else ''}, got {len(positional)}",
            positional[most].span if most < len(positional) else call.span,
            helps=helps,
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


# A value whose definition failed: later uses of it report nothing more.
_POISONED = ""
# `* N` repeats a step at most this many times.
MAX_REPEAT = 10_000


@dataclass
class _Scope:
    """The names of one model body or block instance while its statements become nodes."""

    prefix: str  # "" in a model, "residual_1." inside that block instance
    block: str | None  # the instance path, None in a model
    params: dict[str, ast.Value]  # a block's bound arguments
    # Every statement and input name of the body with its position, known before the body is walked, so a use
    # before the definition can say so and automatic names avoid them.
    declared: dict[str, Span]
    values: dict[str, str] = field(default_factory=dict)  # name → the node or input it stands for
    defined_at: dict[str, Span] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    last: str | None = None  # the value of the previous statement
    # (statement, its value, its name) of each layer statement, for the never-used warnings.
    results: list = field(default_factory=list)


def _declared_names(statements) -> dict[str, Span]:
    names: dict[str, Span] = {}
    for stmt in statements:
        if isinstance(stmt, (ast.LayerStmt, ast.InputStmt)) and stmt.name is not None:
            names.setdefault(stmt.name, stmt.name_span)
    return names


class _GraphBuilder:
    """Turns the statements of one model, with every block call expanded, into a flat list of nodes.

    Nodes are appended in statement order, left to right along each chain, so the list is a topological order.
    """

    def __init__(self, blocks: dict[str, ast.BlockDecl], reporter: Reporter):
        self.blocks = blocks
        self.reporter = reporter
        self.nodes: list[Node] = []
        self.expanding: list[str] = []  # the block calls being expanded, innermost last, to catch recursion
        self.used: set[str] = set()  # node and input names read by a node or an output
        self.input_names: set[str] = set()
        self.instances: dict[str, str] = {}  # instance path → block name
        self.aliases: dict[str, str] = {}  # node name → the statement name that stands for its value

    # ---- names ----------------------------------------------------------------------------------------------

    def auto_name(self, stem: str, scope: _Scope) -> str:
        """`<type in lower case>_<n>`, counting unnamed layers (or block instances) of that type from 1 and
        skipping names the body gives explicitly."""
        stem = stem.lower()
        while True:
            scope.counters[stem] = scope.counters.get(stem, 0) + 1
            candidate = f"{stem}_{scope.counters[stem]}"
            if candidate not in scope.declared:
                return candidate

    def define(self, name: str, span: Span, value: str, scope: _Scope) -> None:
        if not _check_identifier(name, span, "name", self.reporter):
            value = _POISONED
        if name in scope.defined_at:
            self.reporter.error(
                f"'{name}' is defined twice",
                span,
                notes=[f"first defined at {scope.defined_at[name]}"],
                helps=["a name is given once in a model (or block): choose another name for this one"],
            )
            return
        scope.values[name] = value
        scope.defined_at[name] = span
        if value and value != scope.prefix + name and value not in self.input_names:
            self.aliases.setdefault(value, scope.prefix + name)

    def resolve(self, name: str, span: Span, scope: _Scope) -> str | None:
        """The node or input a value name stands for; None (after an error) when it cannot be used here."""
        if name in scope.values:
            value = scope.values[name]
            if value == _POISONED:
                return None
            self.used.add(value)
            return value
        if name in scope.declared:
            self.reporter.error(
                f"'{name}' is used before its definition",
                span,
                notes=[f"'{name}' is defined at {scope.declared[name]}"],
                helps=["a value can only be used below the statement that defines it"],
            )
            return None
        helps = did_you_mean_help(name, scope.values)
        where = "this block" if scope.block else "this model"
        notes = [] if helps else [self._known_values(scope, where)]
        if any(node.name == scope.prefix + name for node in self.nodes):
            helps = [f"'{name}' is an automatic layer name, which cannot be read; name the statement, e.g. 'h = ...'"]
        self.reporter.error(f"undefined name '{name}'", span, helps=helps, notes=notes)
        return None

    @staticmethod
    def _known_values(scope: _Scope, where: str) -> str:
        names = [n for n, v in scope.values.items() if v != _POISONED]
        if not names:
            return f"no value is defined before this point in {where}"
        return f"defined so far in {where}: " + ", ".join(names)

    # ---- statements -----------------------------------------------------------------------------------------

    def body(self, statements, scope: _Scope) -> None:
        for stmt in statements:
            if isinstance(stmt, ast.LayerStmt):
                self.layer_statement(stmt, scope)

    def layer_statement(self, stmt: ast.LayerStmt, scope: _Scope) -> None:
        elements = list(stmt.elements)
        for element in elements[1:]:
            if isinstance(element, ast.TupleSource):
                self.reporter.error(
                    "a tuple of values can only start a chain",
                    element.span,
                    helps=["start a new statement with it, e.g. '(a, b) -> Concat'"],
                )
                return self._poison(stmt, scope)
        first = elements[0]
        if isinstance(first, ast.TupleSource):
            sources = [self.resolve(name, span, scope) for name, span in first.names]
            steps = elements[1:]
        elif isinstance(first, ast.Step) and first.bare_name and self._names_value(first.call.name, elements, scope):
            sources = [self.resolve(first.call.name, first.call.name_span, scope)]
            steps = elements[1:]
        else:
            sources = [self.continuation(stmt, scope)]
            steps = elements
        if not steps:
            written = first.span
            self.reporter.error(
                "this statement has no layer",
                written,
                helps=["add a layer after the value(s), e.g. '(a, b) -> Add' or 'x -> ReLU'"],
                notes=["a value has one name: 'h = x' alone would only give x a second name"],
            )
            return self._poison(stmt, scope)
        if any(s is None for s in sources):
            # Still check the steps, so their own mistakes are reported too.
            sources = None
        single = len(steps) == 1 and steps[0].count is None
        duplicate = stmt.name is not None and stmt.name in scope.defined_at
        if duplicate:
            self.define(stmt.name, stmt.name_span, _POISONED, scope)  # reports it
        current = sources
        for step in steps:
            count = self.repeat_count(step, scope)
            if count is None:
                current = None
                continue
            for _ in range(count):
                explicit = stmt.name if single and not duplicate else None
                value = self.apply(step, current, explicit, stmt.span if single else step.span, scope)
                current = None if value is None else [value]
                if value is None:
                    break
        value = current[0] if current else _POISONED
        if stmt.name is not None and not duplicate:
            # The statement's name stands for its value (a single step also gave its layer that name).
            self.define(stmt.name, stmt.name_span, value, scope)
        scope.last = value
        scope.results.append((stmt, value))

    def _poison(self, stmt: ast.LayerStmt, scope: _Scope) -> None:
        if stmt.name is not None:
            self.define(stmt.name, stmt.name_span, _POISONED, scope)
        scope.last = _POISONED

    def _names_value(self, name: str, elements: list, scope: _Scope) -> bool:
        """Whether a bare name starting a chain is its source value rather than a layer."""
        if name in scope.values or name in scope.declared:
            return True
        # An unknown bare name followed by '->' reads as a (misspelt or undefined) value, not a layer.
        return len(elements) > 1 and name not in LAYERS and name not in self.blocks

    def continuation(self, stmt: ast.LayerStmt, scope: _Scope) -> str | None:
        """The value a statement without a source reads: the previous statement's."""
        if scope.last == _POISONED:
            return None
        if scope.last is None:
            # Before the first layer statement only the inputs are defined.
            inputs = list(scope.values)
            if len(inputs) == 1:
                self.used.add(scope.values[inputs[0]])
                return scope.values[inputs[0]]
            where = "block" if scope.block else "model"
            if not inputs:
                return None  # the missing input is reported on its own
            self.reporter.error(
                f"this statement has no source, and the {where} has {len(inputs)} inputs",
                stmt.elements[0].span,
                helps=[f"say which input it reads, e.g. '{inputs[0]} -> {_step_text(stmt.elements[0])}'"],
            )
            return None
        self.used.add(scope.last)
        return scope.last

    def repeat_count(self, step: ast.Step, scope: _Scope) -> int | None:
        if step.count is None:
            return 1
        value = step.count
        raw = value.value
        if isinstance(raw, ast.Name):
            if raw.text not in scope.params:
                self.reporter.error(
                    f"'{raw.text}' is not a block parameter; '* N' takes a whole number",
                    value.span,
                    helps=did_you_mean_help(raw.text, scope.params),
                )
                return None
            raw = scope.params[raw.text].value
        if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_REPEAT:
            self.reporter.error(
                f"a step repeats a whole number of times from 1 to {MAX_REPEAT}, got {format_value(raw)}",
                value.span,
            )
            return None
        return raw

    def apply(self, step: ast.Step, inputs: list[str] | None, name: str | None, span: Span, scope: _Scope):
        """Add the node (or expand the block) of one step reading `inputs`; return its value, or None."""
        call = _substitute(step.call, scope.params)
        if call.name in self.blocks:
            return self.instantiate(self.blocks[call.name], call, inputs, name, scope)
        kind = lookup(LAYERS, call, "layer or block" if self.blocks else "layer", self.reporter, extra=self.blocks)
        if kind is None:
            return None
        args = bind_args(kind, call, self.reporter)
        if args is None or inputs is None:
            return None
        low, high = kind.arity
        if not low <= len(inputs) <= (high or len(inputs)):
            if low > 1:
                helps = [f"give it its inputs as a tuple, e.g. '(a, b) -> {kind.name}'"]
            else:
                helps = ["join the values first, e.g. with Add or Concat: '(a, b) -> Concat -> ...'"]
            self.reporter.error(
                f"{kind.name} takes {kind.arity_text()}, got {len(inputs)}", call.name_span, helps=helps
            )
            return None
        local = name or self.auto_name(kind.name, scope)
        node = Node(scope.prefix + local, kind, args, span, ast.call_source(call), list(inputs), scope.block)
        node.positional = sum(1 for a in call.args if a.keyword is None)
        self.nodes.append(node)
        return node.name

    def instantiate(self, decl: ast.BlockDecl, call: ast.Call, inputs, name: str | None, scope: _Scope):
        """Expand a block call: its layers join the graph under the instance's name; returns its output value."""
        if decl.name in self.expanding:
            cycle = " → ".join([*self.expanding[self.expanding.index(decl.name) :], decl.name])
            self.reporter.error(
                f"block '{decl.name}' uses itself ({cycle})",
                call.name_span,
                helps=["a block cannot call itself, directly or through other blocks; repeat a step with '* N'"],
            )
            return None
        params = _bind_block_args(decl, call, self.reporter)
        block_inputs = [s for s in decl.statements if isinstance(s, ast.InputStmt)]
        if params is None or inputs is None:
            return None
        if len(inputs) != len(block_inputs):
            names = ", ".join(s.name or "?" for s in block_inputs)
            self.reporter.error(
                f"block {decl.name} takes {len(block_inputs)} input{'s' if len(block_inputs) != 1 else ''}"
                f" ({names}), got {len(inputs)}",
                call.name_span,
                notes=[f"block {decl.name} is defined at {decl.name_span}"],
            )
            return None
        local = name or self.auto_name(decl.name, scope)
        path = f"{scope.block}.{local}" if scope.block else local
        inner = _Scope(scope.prefix + local + ".", path, params, _declared_names(decl.statements))
        self.instances[path] = decl.name
        self.expanding.append(decl.name)
        try:
            return self._block_body(decl, inner, inputs)
        finally:
            self.expanding.pop()

    def _block_body(self, decl: ast.BlockDecl, scope: _Scope, inputs: list[str]) -> str | None:
        block_inputs = iter(inputs)
        output: ast.OutputStmt | None = None
        for stmt in decl.statements:
            if isinstance(stmt, ast.InputStmt):
                if stmt.name is None:
                    self.reporter.error("a block input needs a name, e.g. 'input x'", stmt.span)
                    next(block_inputs)
                    continue
                if stmt.dims is not None:
                    self.reporter.error(
                        "a block input has no shape: it takes the shape of what the block is given",
                        stmt.span,
                        helps=[f"write 'input {stmt.name}'"],
                    )
                self.define(stmt.name, stmt.name_span, next(block_inputs), scope)
            elif isinstance(stmt, ast.LayerStmt):
                self.layer_statement(stmt, scope)
            elif isinstance(stmt, ast.OutputStmt):
                if output is not None:
                    self.reporter.error("a block has one output statement", stmt.span)
                elif len(stmt.names) != 1:
                    self.reporter.error(
                        f"a block has one output, got {len(stmt.names)}",
                        stmt.span,
                        helps=["join the values first (Concat, Add) or use separate blocks"],
                    )
                output = stmt
            else:
                what = {ast.LossStmt: "loss", ast.OptimizerStmt: "optimizer"}.get(type(stmt), "schedule")
                self.reporter.error(f"a block has no {what}; it belongs to the model that uses the block", stmt.span)
        if not scope.results:
            self.reporter.error(f"block '{decl.name}' has no layers", decl.name_span)
            return None
        if output is not None and len(output.names) == 1:
            name, span = output.names[0]
            value = self.resolve(name, span, scope)
            outputs = {value}
        else:
            value = scope.last
            outputs = {value}
        self.warn_unused(scope, outputs, [s for s in decl.statements if isinstance(s, ast.InputStmt)])
        return None if value in (None, _POISONED) else value

    def warn_unused(self, scope: _Scope, outputs: set, input_stmts) -> None:
        """Values computed but never read, and inputs never read: legal, and almost surely a mistake."""
        for stmt, value in scope.results:
            if value in (None, _POISONED) or value in self.used or value in outputs:
                continue
            what = f"value '{stmt.name}'" if stmt.name else "the value of this statement"
            self.reporter.warning(
                f"{what} is computed but never used",
                stmt.name_span or stmt.span,
                helps=["use it, list it in 'output (...)', or remove the statement"],
            )
        for stmt in input_stmts:
            value = scope.values.get(stmt.name or DEFAULT_INPUT)
            if value and value not in self.used and value not in outputs:
                self.reporter.warning(f"input '{stmt.name or DEFAULT_INPUT}' is never used", stmt.span)


def _step_text(element) -> str:
    return element.call.name if isinstance(element, ast.Step) else "Layer(...)"


def _substitute(call: ast.Call, params: dict[str, ast.Value]) -> ast.Call:
    """The call with every argument that names a block parameter replaced by that parameter's value."""
    if not params:
        return call
    args = []
    for arg in call.args:
        raw = arg.value.value
        if isinstance(raw, ast.Name) and raw.text in params:
            bound = params[raw.text]
            arg = ast.Arg(arg.keyword, ast.Value(bound.value, bound.span), arg.span, arg.keyword_span)
        args.append(arg)
    return ast.Call(call.name, call.name_span, args, call.span, call.parenthesized)


def _bind_block_args(decl: ast.BlockDecl, call: ast.Call, reporter: Reporter) -> dict[str, ast.Value] | None:
    """Match a block call's arguments to the block's parameters; defaults fill the rest."""
    before = len(reporter.diagnostics)
    signature = (
        f"{decl.name}("
        + ", ".join(p.name if p.default is None else f"{p.name}={format_value(p.default.value)}" for p in decl.params)
        + ")"
    )
    names = [p.name for p in decl.params]
    given: dict[str, ast.Arg] = {}
    positional = [a for a in call.args if a.keyword is None]
    if any(a.keyword is not None for a in call.args[: len(positional)]) or len(positional) > len(names):
        if len(positional) > len(names):
            reporter.error(
                f"block {decl.name} takes at most {len(names)} argument{'s' if len(names) != 1 else ''}, "
                f"got {len(positional)}",
                positional[len(names)].span,
                notes=[f"signature: {signature}"],
            )
        else:
            reporter.error("positional argument follows a keyword argument", call.span)
        return None
    given.update(zip(names, positional))
    for arg in call.args[len(positional) :]:
        if arg.keyword is None:
            reporter.error("positional argument follows a keyword argument", arg.span)
        elif arg.keyword not in names:
            reporter.error(
                f"block {decl.name} has no parameter '{arg.keyword}'",
                arg.keyword_span,
                helps=did_you_mean_help(arg.keyword, names),
                notes=[f"signature: {signature}"],
            )
        elif arg.keyword in given:
            reporter.error(f"argument '{arg.keyword}' of block {decl.name} is given twice", arg.span)
        else:
            given[arg.keyword] = arg
    values = {}
    for param in decl.params:
        if param.name in given:
            values[param.name] = given[param.name].value
        elif param.default is not None:
            values[param.name] = param.default
        else:
            reporter.error(
                f"block {decl.name} needs argument '{param.name}'", call.span, notes=[f"signature: {signature}"]
            )
    return None if len(reporter.diagnostics) > before else values


def _check_inputs(decl: ast.ModelDecl, inputs: list[ast.InputStmt], reporter: Reporter) -> list[Input]:
    """The model's inputs, named and shaped; every problem with the input statements is reported."""
    if not inputs:
        reporter.error(
            f"model '{decl.name}' has no input statement",
            decl.name_span,
            helps=["declare the per-sample shape first, e.g. 'input [64]' or 'input pixels [64]'"],
        )
        return []
    unnamed = [s for s in inputs if s.name is None]
    if len(inputs) > 1 and unnamed:
        stmt = unnamed[1] if len(unnamed) > 1 else unnamed[0]
        other = inputs[0] if stmt is not inputs[0] else inputs[1]
        reporter.error(
            "each input of a model with several inputs needs a name, e.g. 'input pixels [64]'",
            stmt.span,
            notes=[f"{'the first' if other is inputs[0] else 'another'} input is at {other.span}"],
        )
    first_layer = next((s for s in decl.statements if isinstance(s, ast.LayerStmt)), None)
    result = []
    for stmt in inputs:
        if first_layer is not None and (stmt.span.line, stmt.span.column) > (
            first_layer.span.line,
            first_layer.span.column,
        ):
            reporter.error(
                "'input' must come before the layers",
                stmt.span,
                notes=[f"the first layer is at {first_layer.span}"],
            )
        if stmt.dims is None:
            reporter.error(
                f"input '{stmt.name or DEFAULT_INPUT}' needs a per-sample shape",
                stmt.span,
                helps=[f"write e.g. 'input {stmt.name + ' ' if stmt.name else ''}[64]'"],
            )
            continue
        dims = []
        for dim in stmt.dims:
            raw = dim.value
            if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
                reporter.error(f"input dimensions must be positive integers, got {format_value(raw)}", dim.span)
            elif raw > MAX_INT:
                reporter.error(f"input dimension is too large: {raw}", dim.span)
            else:
                dims.append(raw)
        if not stmt.dims:
            reporter.error("input needs at least one dimension, e.g. 'input [64]'", stmt.span)
        result.append(Input(stmt.name or DEFAULT_INPUT, tuple(dims), stmt.span, stmt.dtype))
    return result


def _build_model(decl: ast.ModelDecl, blocks: dict[str, ast.BlockDecl], filename: str, reporter: Reporter):
    before = len(reporter.diagnostics)
    _check_class_name(decl.name, decl.name_span, reporter)
    if not decl.statements:
        reporter.error(
            f"model '{decl.name}' is empty",
            decl.name_span,
            helps=["a model needs an input shape and at least one layer, e.g. 'input [64]' then 'Linear(10)'"],
        )
        return None
    input_stmts = [s for s in decl.statements if isinstance(s, ast.InputStmt)]
    layers = [s for s in decl.statements if isinstance(s, ast.LayerStmt)]
    output_stmts = [s for s in decl.statements if isinstance(s, ast.OutputStmt)]
    losses = [s for s in decl.statements if isinstance(s, ast.LossStmt)]
    optimizers = [s for s in decl.statements if isinstance(s, ast.OptimizerStmt)]
    schedules = [s for s in decl.statements if isinstance(s, ast.ScheduleStmt)]

    inputs = _check_inputs(decl, input_stmts, reporter)
    if not layers:
        reporter.error(f"model '{decl.name}' has no layers", decl.name_span)
    for extra in optimizers[1:]:
        reporter.error("a model has at most one optimizer statement", extra.span)
    for extra in schedules[1:]:
        reporter.error(
            "a model has at most one schedule statement",
            extra.span,
            notes=[f"the first is at {schedules[0].span}"],
            helps=["keep one schedule statement"],
        )
    if schedules and optimizers and _after(optimizers[0].span, schedules[0].span):
        reporter.error(
            "the schedule must come after the optimizer",
            schedules[0].span,
            notes=[f"the optimizer is at {optimizers[0].span}"],
            helps=["move the schedule below the optimizer statement: it changes that optimizer's lr"],
        )
    for extra in output_stmts[1:]:
        reporter.error(
            "a model has at most one output statement",
            extra.span,
            notes=[f"the first is at {output_stmts[0].span}"],
            helps=["list every output in one statement: 'output (a, b)'"],
        )
    for group, what in ((losses, "loss"), (optimizers, "optimizer"), (schedules, "schedule")):
        for stmt in group[:1]:
            later_layers = [s for s in layers if _after(s.span, stmt.span)]
            if later_layers:
                later = later_layers[0]
                reporter.error(
                    f"the {what} must come after every layer",
                    stmt.span,
                    notes=[f"layer '{later.name or _step_text(later.elements[0])}' comes after it, at {later.span}"],
                    helps=[f"move the {what} below the last layer"],
                )

    builder = _GraphBuilder(blocks, reporter)
    builder.input_names = {i.name for i in inputs}
    scope = _Scope("", None, {}, _declared_names(decl.statements))
    for stmt, model_input in zip([s for s in input_stmts if s.dims is not None], inputs):
        if model_input.name not in scope.defined_at or stmt.name is not None:  # unnamed twice: reported above
            builder.define(model_input.name, stmt.name_span or stmt.span, model_input.name, scope)
    output_names: list[str] = []
    output_values: dict[str, str] = {}
    outputs_failed = False
    for stmt in decl.statements:
        if isinstance(stmt, ast.LayerStmt):
            builder.layer_statement(stmt, scope)
        elif isinstance(stmt, ast.OutputStmt) and stmt is output_stmts[0]:
            for name, span in stmt.names:
                if name in output_values:
                    reporter.error(f"'{name}' is listed twice as an output", span)
                    continue
                value = builder.resolve(name, span, scope)
                outputs_failed = outputs_failed or value is None
                if value is not None and value in builder.input_names:
                    reporter.error(f"output '{name}' is an input of the model; an output is computed by a layer", span)
                elif value is not None:
                    output_names.append(name)
                    output_values[name] = value
    if not output_stmts and scope.results:
        stmt, value = scope.results[-1]
        if value not in (None, _POISONED):
            name = stmt.name or value
            output_names.append(name)
            output_values[name] = value
    builder.warn_unused(scope, set(output_values.values()), input_stmts)

    # After a failed output statement, a loss on one of the names it meant to list is no new mistake.
    listed = {name for stmt in output_stmts[:1] for name, _ in stmt.names} if outputs_failed else set()
    terms = _loss_terms(
        [s for s in losses if s.output not in listed], output_names, output_values, scope, builder, reporter
    )

    if optimizers:
        call = optimizers[0].call
        kind = lookup(OPTIMIZERS, call, "optimizer", reporter)
        args = bind_args(kind, call, reporter) if kind else None
        optimizer = Component(kind, args, optimizers[0].span, ast.call_source(call)) if args is not None else None
    else:
        name, given = DEFAULT_OPTIMIZER
        kind = OPTIMIZERS[name]
        args = {a.name: given.get(a.name, a.default) for a in kind.args}
        optimizer = Component(kind, args, None, _default_source(kind, args))
    schedule = None
    if schedules:
        call = schedules[0].call
        kind = lookup(SCHEDULES, call, "schedule", reporter)
        args = bind_args(kind, call, reporter) if kind else None
        schedule = Component(kind, args, schedules[0].span, ast.call_source(call)) if args is not None else None

    if len(reporter.diagnostics) > before or not output_names:
        return None
    return Model(
        decl.name,
        decl.span,
        filename,
        inputs,
        builder.nodes,
        output_names,
        output_values,
        terms,
        optimizer,
        builder.instances,
        builder.aliases,
        schedule,
    )


def _after(first: Span, second: Span) -> bool:
    """Whether `first` starts after `second`."""
    return (first.line, first.column) > (second.line, second.column)


def _default_source(kind: type[Entry], args: dict) -> str:
    """The default optimizer written out with the arguments that say something: options not taken (None) and
    switches left off (false) are left out."""
    shown = [
        f"{name}={format_value(value)}" for name, value in args.items() if value is not None and value is not False
    ]
    return f"{kind.name}({', '.join(shown)})" if shown else kind.name


def _loss_terms(losses, output_names, output_values, scope, builder, reporter) -> list[LossTerm]:
    terms: list[LossTerm] = []
    seen: dict[str, Span] = {}
    for stmt in losses:
        if stmt.output is None:
            if len(output_names) > 1:
                reporter.error(
                    f"this model has {len(output_names)} outputs; say which one the loss is on",
                    stmt.span,
                    helps=[
                        f"write one 'loss OUTPUT -> Loss' per output, e.g. 'loss {output_names[0]} -> {stmt.call.name}'"
                    ],
                )
                continue
            if not output_names:
                # The output failed to build; still check the loss itself.
                kind = lookup(LOSSES, stmt.call, "loss", reporter)
                if kind:
                    bind_args(kind, stmt.call, reporter)
                continue
            output = output_names[0]
        else:
            output = stmt.output
            if output not in output_values:
                if output in scope.values or output in scope.declared:
                    reporter.error(
                        f"a loss on '{output}', which is not an output of the model",
                        stmt.output_span,
                        helps=[f"list it in the output statement: 'output ({', '.join([*output_names, output])})'"],
                        notes=["outputs: " + ", ".join(output_names)] if output_names else [],
                    )
                else:
                    builder.resolve(output, stmt.output_span, scope)
                continue
        if output in seen:
            if len(output_names) == 1 and stmt.output is None:
                reporter.error("a model has at most one loss statement", stmt.span)
            else:
                reporter.error(
                    f"output '{output}' already has a loss", stmt.span, notes=[f"the first is at {seen[output]}"]
                )
            continue
        seen[output] = stmt.span
        scale = 1.0
        if stmt.scale is not None:
            raw = stmt.scale.value
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) or raw <= 0:
                reporter.error(f"a loss scale must be a positive number, got {format_value(raw)}", stmt.scale.span)
                continue
            scale = float(raw)
        kind = lookup(LOSSES, stmt.call, "loss", reporter)
        args = bind_args(kind, stmt.call, reporter) if kind else None
        if args is not None:
            terms.append(
                LossTerm(output, scale, Component(kind, args, stmt.span, ast.call_source(stmt.call)), stmt.span)
            )
    return terms


def _check_blocks(program: ast.Program, reporter: Reporter) -> dict[str, ast.BlockDecl]:
    blocks: dict[str, ast.BlockDecl] = {}
    for decl in program.blocks:
        if decl.name in blocks:
            reporter.error(
                f"two blocks are named '{decl.name}'",
                decl.name_span,
                notes=[f"the first is at {blocks[decl.name].name_span}"],
            )
            continue
        if decl.name in LAYERS:
            reporter.error(
                f"block '{decl.name}' has the name of a layer", decl.name_span, helps=["choose another name"]
            )
            continue
        seen: set[str] = set()
        for param in decl.params:
            if param.name in seen:
                reporter.error(f"block parameter '{param.name}' is given twice", param.span)
            seen.add(param.name)
        defaults = [p for p in decl.params if p.default is not None]
        if defaults:
            later = [p for p in decl.params[decl.params.index(defaults[0]) :] if p.default is None]
            for param in later:
                reporter.error(f"parameter '{param.name}' without a default follows one with a default", param.span)
        if not any(isinstance(s, ast.InputStmt) for s in decl.statements):
            reporter.error(f"block '{decl.name}' has no input", decl.name_span, helps=["declare one, e.g. 'input x'"])
        blocks[decl.name] = decl
    return blocks


def build(program: ast.Program, reporter: Reporter) -> list[Model]:
    """Check every model of a program; raise CompileError (via the reporter) if any problem was found."""
    if not program.models:
        reporter.error("no model in this file", None, helps=["a file holds one or more 'model Name { ... }' blocks"])
    blocks = _check_blocks(program, reporter)
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
        model = _build_model(decl, blocks, reporter.filename, reporter)
        if model is not None:
            models.append(model)
    reporter.raise_if_any()
    return models
