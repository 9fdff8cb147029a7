"""The syntax tree of a `.nn` file, as the parser builds it: plain data with a source span on every node.

Nothing here is checked beyond the grammar; meaning is given by `nncompile.ir`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Span


@dataclass
class Value:
    """A literal argument: an int, a float, a bool, or a bare identifier (kept as `Name`)."""

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


@dataclass
class InputStmt:
    dims: list[Value]
    span: Span


@dataclass
class LayerStmt:
    name: str | None
    name_span: Span | None
    call: Call
    span: Span


@dataclass
class LossStmt:
    call: Call
    span: Span


@dataclass
class OptimizerStmt:
    call: Call
    span: Span


@dataclass
class ModelDecl:
    name: str
    name_span: Span
    statements: list = field(default_factory=list)
    span: Span | None = None


@dataclass
class Program:
    models: list[ModelDecl]
