"""The syntax tree of a `.nn` file, as the parser builds it: plain data with a source span on every node.

Nothing here is checked beyond the grammar; meaning is given by `nncompile.ir`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Span


@dataclass
class Value:
    """A literal argument: an int, a float, a bool, a bare identifier (kept as `Name`) or a list of these (a
    tuple)."""

    value: object
    span: Span


@dataclass(frozen=True)
class Name:
    """A bare identifier used as a value, such as `he_normal`."""

    text: str

    def __str__(self) -> str:
        return self.text


@dataclass
class Arg:
    """`value` or `name=value` inside a call."""

    keyword: str | None
    value: Value
    span: Span
    keyword_span: Span | None = None


@dataclass
class Call:
    """`Type` or `Type(args)`."""

    name: str
    name_span: Span
    args: list[Arg]
    span: Span
    parenthesized: bool = False


@dataclass
class InputStmt:
    """`input [64]`, `input pixels [64]` or, in a block, `input x`; `dims` is None when no shape is written."""

    name: str | None
    name_span: Span | None
    dims: list[Value] | None
    span: Span
    # "float" (the default) or "int" (`input tokens [16] int`).
    dtype: str = "float"


@dataclass
class Step:
    """A layer or block call in a chain, `* count` times in sequence (count None: once)."""

    call: Call
    count: Value | None
    span: Span

    @property
    def bare_name(self) -> bool:
        """Written as a bare name (no parentheses, no `* N`): it may name a value instead of a layer."""
        return self.count is None and not self.call.args and not self.call.parenthesized


@dataclass
class TupleSource:
    """`(a, b, ...)` at the start of a chain: the values fed to a step that takes several inputs."""

    names: list[tuple[str, Span]]
    span: Span


@dataclass
class LayerStmt:
    """`[name =] element (-> element)*`; the first element may turn out to be the source value."""

    name: str | None
    name_span: Span | None
    elements: list
    span: Span


@dataclass
class OutputStmt:
    names: list[tuple[str, Span]]
    span: Span


@dataclass
class LossStmt:
    """`loss Call` or `loss output -> [scale *] Call`."""

    output: str | None
    output_span: Span | None
    scale: Value | None
    call: Call
    span: Span


@dataclass
class OptimizerStmt:
    call: Call
    span: Span


@dataclass
class ScheduleStmt:
    """`schedule Call`: the learning-rate schedule."""

    call: Call
    span: Span


@dataclass
class BlockParam:
    name: str
    span: Span
    default: Value | None


@dataclass
class ModelDecl:
    name: str
    name_span: Span
    statements: list = field(default_factory=list)
    span: Span | None = None


@dataclass
class BlockDecl:
    """`block Name(params) { ... }`: a subgraph expanded wherever it is called."""

    name: str
    name_span: Span
    params: list[BlockParam]
    statements: list
    span: Span


@dataclass
class Program:
    models: list[ModelDecl]
    blocks: list[BlockDecl] = field(default_factory=list)


def format_value(value) -> str:
    """Write an argument value as it would appear in a .nn file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def call_source(call: Call) -> str:
    """A call written back in canonical .nn syntax, `Linear(64, bias=false)`, for comments and messages."""
    if not call.args:
        return call.name
    parts = []
    for arg in call.args:
        text = format_value(arg.value.value)
        parts.append(f"{arg.keyword}={text}" if arg.keyword else text)
    return f"{call.name}({', '.join(parts)})"
