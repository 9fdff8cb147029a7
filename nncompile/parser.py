"""Parse `.nn` source text into the syntax tree of `nncompile.ast`, with a span on every node.

Syntax errors become located `Diagnostic`s; no lark exception escapes this module.
"""

from __future__ import annotations

from functools import lru_cache

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import ast
from .errors import CompileError, Diagnostic, Span
from .resources import grammar_text


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _number(token: Token):
    text = str(token)
    if any(c in text for c in ".eE"):
        return float(text)
    return int(text)


def _as_arg(node) -> ast.Arg:
    """Positional arguments arrive as bare values; give them the same shape as keyword ones."""
    return node if isinstance(node, ast.Arg) else ast.Arg(None, node, node.span)


@v_args(meta=True)
class _ToAst(Transformer):
    """One method per grammar rule; each returns the matching `ast` node."""

    def start(self, meta, models):
        return ast.Program(list(models))

    def model(self, meta, children):
        name, *statements = children
        return ast.ModelDecl(str(name), Span.of(name), list(statements), Span.of(meta))

    def input_stmt(self, meta, dims):
        return ast.InputStmt([d for d in dims if d is not None], Span.of(meta))

    def layer_stmt(self, meta, children):
        name, call = children
        if name is None:
            return ast.LayerStmt(None, None, call, Span.of(meta))
        return ast.LayerStmt(str(name), Span.of(name), call, Span.of(meta))

    def loss_stmt(self, meta, children):
        return ast.LossStmt(children[0], Span.of(meta))

    def optimizer_stmt(self, meta, children):
        return ast.OptimizerStmt(children[0], Span.of(meta))

    def call(self, meta, children):
        name, *args = children
        args = [_as_arg(a) for a in args if a is not None]
        return ast.Call(str(name), Span.of(name), args, Span.of(meta))

    def keyword_arg(self, meta, children):
        keyword, value = children
        return ast.Arg(str(keyword), value, Span.of(meta), Span.of(keyword))

    def dim(self, meta, children):
        return ast.Value(_number(children[0]), Span.of(children[0]))

    def number(self, meta, children):
        return ast.Value(_number(children[0]), Span.of(children[0]))

    def boolean(self, meta, children):
        return ast.Value(str(children[0]) == "true", Span.of(children[0]))

    def identifier(self, meta, children):
        return ast.Value(ast.Name(str(children[0])), Span.of(children[0]))


_TOKEN_WORDS = {
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "EQUAL": "'='",
    "NAME": "a name",
    "NUMBER": "a number",
    "BOOL": "true/false",
    "MODEL": "'model'",
    "INPUT": "'input'",
    "LOSS": "'loss'",
    "OPTIMIZER": "'optimizer'",
    "$END": "end of file",
}


def _describe_expected(expected) -> str:
    words = sorted({_TOKEN_WORDS.get(t, t) for t in expected})
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _syntax_diagnostic(err: UnexpectedInput, source: str) -> Diagnostic:
    if isinstance(err, UnexpectedCharacters):
        char = source[err.pos_in_stream] if err.pos_in_stream < len(source) else "?"
        span = Span(err.line, err.column, err.line, err.column + 1)
        return Diagnostic(f"unexpected character {char!r}", span)
    if isinstance(err, UnexpectedEOF):
        lines = source.splitlines() or [""]
        line = len(lines)
        span = Span(line, len(lines[-1]) + 1, line, len(lines[-1]) + 2)
        return Diagnostic(f"unexpected end of file; expected {_describe_expected(err.expected)}", span)
    assert isinstance(err, UnexpectedToken)
    token = err.token
    if token.type == "$END":
        lines = source.splitlines() or [""]
        span = Span(len(lines), len(lines[-1]) + 1, len(lines), len(lines[-1]) + 2)
        found = "end of file"
    else:
        span = Span.of(token)
        found = f"{str(token)!r}"
    return Diagnostic(f"unexpected {found}; expected {_describe_expected(err.expected)}", span)


def parse(source: str, filename: str = "<string>") -> ast.Program:
    """Parse source text; raise `CompileError` with a located message on a syntax error."""
    try:
        tree = _lark().parse(source)
    except UnexpectedInput as err:
        raise CompileError([_syntax_diagnostic(err, source)], filename, source) from None
    return _ToAst().transform(tree)
