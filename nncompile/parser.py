"""Parse `.nn` source text into the syntax tree of `nncompile.ast`, with a span on every node.

Syntax errors become located `Diagnostic`s in plain words; no lark exception escapes this module. Common mistakes
get a tailored message: `SYNTAX_EXAMPLES` is a table of bad snippets, each labelled with the message builder for
its kind of mistake. The LALR state in which each snippet fails (with the offending token's type) indexes the table,
so a user's error that leaves the parser in the same state gets the same explanation (the idea of lark's
`UnexpectedInput.match_examples`, keyed on the state alone so it works at any nesting depth). The builders read the
parser's value stack to name what is open and where. After a syntax error, parsing resumes at the next model.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError
from lark.lark import PostLex

from . import ast
from .errors import CompileError, Diagnostic, Reporter, Span, shorten
from .resources import grammar_text

# Integer literals longer than this are refused while parsing (no argument or dimension is anywhere near it).
MAX_LITERAL_DIGITS = 100
RESERVED_WORDS = ("model", "block", "input", "output", "loss", "optimizer", "schedule", "true", "false", "int")
_RESERVED_TYPES = {"MODEL", "INPUT", "LOSS", "OPTIMIZER", "SCHEDULE", "BOOL", "OUTPUT", "BLOCK", "INPUT_TYPE"}
_OPENERS = {"LPAR": "RPAR", "LINE_LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_CLOSERS = {"RPAR": "LPAR", "RSQB": "LSQB", "RBRACE": "LBRACE"}
_VALUE_TYPES = {"NAME", "NUMBER", "BOOL"}
# Tokens that can only begin a new statement or model, or end one.
_STATEMENT_START = {"MODEL", "BLOCK", "INPUT", "OUTPUT", "LOSS", "OPTIMIZER", "SCHEDULE", "RBRACE"}


class _LineStartParen(PostLex):
    """Retype a '(' that starts a line as LINE_LPAR, so `ReLU` above `(a, b) -> Add` stays a bare call: the two
    lines are two statements, not `ReLU(a, b)`."""

    always_accept = ()

    def process(self, stream):
        last_line = 0
        for token in stream:
            if token.type == "LPAR" and token.line != last_line:
                token = Token.new_borrow_pos("LINE_LPAR", token.value, token)
            last_line = token.end_line
            yield token


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="basic",
        propagate_positions=True,
        maybe_placeholders=True,
        postlex=_LineStartParen(),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Syntax tree


def _as_arg(node) -> ast.Arg:
    """Positional arguments arrive as bare values; give them the same shape as keyword ones."""
    return node if isinstance(node, ast.Arg) else ast.Arg(None, node, node.span)


def missing_layer(name: Token, equal: Token) -> Diagnostic:
    return Diagnostic(
        f"missing layer after '{shorten(str(name))} ='",
        Span.of(equal),
        helps=[f"write the layer on the same line, e.g. '{shorten(str(name))} = Linear(10)'"],
    )


@v_args(meta=True)
class _ToAst(Transformer):
    """One method per grammar rule; each returns the matching `ast` node. Problems go to `diagnostics`."""

    def __init__(self):
        super().__init__()
        self.diagnostics: list[Diagnostic] = []

    def start(self, meta, definitions):
        models = [d for d in definitions if isinstance(d, ast.ModelDecl)]
        blocks = [d for d in definitions if isinstance(d, ast.BlockDecl)]
        return ast.Program(models, blocks)

    def model(self, meta, children):
        name, *statements = children
        self._check_glued_sources(statements)
        return ast.ModelDecl(str(name), Span.of(name), list(statements), Span.of(meta))

    def _check_glued_sources(self, statements) -> None:
        """`h = Linear(64)(x)` parses as two statements, `h = Linear(64)` and `(x)`: say how inputs are written."""
        for before, stmt in itertools.pairwise(statements):
            if not isinstance(stmt, ast.LayerStmt) or stmt.name is not None:
                continue
            first = stmt.elements[0]
            if not isinstance(first, ast.TupleSource):
                continue
            if (before.span.end_line, before.span.end_column) != (first.span.line, first.span.column):
                continue
            names = [n for n, _ in first.names]
            source = names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"
            target = f"{before.name} = " if isinstance(before, ast.LayerStmt) and before.name else ""
            call = before.elements[-1].call if isinstance(before, ast.LayerStmt) else None
            layer = ast.call_source(call) if isinstance(call, ast.Call) else "Layer(...)"
            self.diagnostics.append(
                Diagnostic(
                    "a layer's input is written before it, with '->'",
                    first.span,
                    helps=[f"write '{shorten(target + source + ' -> ' + layer, 80)}'"],
                    notes=["a statement without a source continues from the previous statement's value"],
                )
            )

    def block(self, meta, children):
        _keyword, name, *rest = children
        params = [c for c in rest if isinstance(c, ast.BlockParam)]
        statements = [c for c in rest if c is not None and not isinstance(c, ast.BlockParam)]
        self._check_glued_sources(statements)
        return ast.BlockDecl(str(name), Span.of(name), params, statements, Span.of(meta))

    def block_param(self, meta, children):
        name, _equal, default = children
        return ast.BlockParam(str(name), Span.of(name), default)

    def input_stmt(self, meta, children):
        name, shape, dtype = children
        return ast.InputStmt(
            None if name is None else str(name),
            None if name is None else Span.of(name),
            shape,
            Span.of(meta),
            "float" if dtype is None else str(dtype),
        )

    def list_value(self, meta, items):
        return ast.Value(tuple(item.value for item in items if item is not None), Span.of(meta))

    def shape(self, meta, dims):
        return [d for d in dims if d is not None]

    def layer_stmt(self, meta, children):
        name, equal, *rest = children
        elements = [c for c in rest if not isinstance(c, Token)]
        if name is None:
            return ast.LayerStmt(None, None, elements, Span.of(meta))
        first = elements[0]
        if first.span.line != equal.end_line:
            # `fc1 =` ending a line would otherwise silently name the next statement's layer.
            self.diagnostics.append(missing_layer(name, equal))
        return ast.LayerStmt(str(name), Span.of(name), elements, Span.of(meta))

    def step(self, meta, children):
        call, _star, count = children
        return ast.Step(call, count, Span.of(meta))

    def tuple_source(self, meta, children):
        names = [c for c in children if c.type != "LINE_LPAR"]
        return ast.TupleSource([(str(n), Span.of(n)) for n in names], Span.of(meta))

    def output_stmt(self, meta, children):
        _keyword, *names = children
        return ast.OutputStmt([(str(n), Span.of(n)) for n in names], Span.of(meta))

    def loss_stmt(self, meta, children):
        output, _arrow, scale, _star, call = children
        scale_value = None if scale is None else ast.Value(self._number(scale), Span.of(scale))
        output_span = None if output is None else Span.of(output)
        return ast.LossStmt(None if output is None else str(output), output_span, scale_value, call, Span.of(meta))

    def optimizer_stmt(self, meta, children):
        return ast.OptimizerStmt(children[0], Span.of(meta))

    def schedule_stmt(self, meta, children):
        return ast.ScheduleStmt(children[0], Span.of(meta))

    def call(self, meta, children):
        name, *args = children
        args = [_as_arg(a) for a in args if a is not None]
        span = Span.of(meta)
        parenthesized = (span.end_line, span.end_column) != (name.end_line, name.end_column)
        return ast.Call(str(name), Span.of(name), args, span, parenthesized)

    def keyword_arg(self, meta, children):
        keyword, value = children
        return ast.Arg(str(keyword), value, Span.of(meta), Span.of(keyword))

    def dim(self, meta, children):
        return ast.Value(self._number(children[0]), Span.of(children[0]))

    def number(self, meta, children):
        return ast.Value(self._number(children[0]), Span.of(children[0]))

    def boolean(self, meta, children):
        return ast.Value(str(children[0]) == "true", Span.of(children[0]))

    def identifier(self, meta, children):
        return ast.Value(ast.Name(str(children[0])), Span.of(children[0]))

    def _number(self, token: Token):
        text = str(token)
        if any(c in text for c in ".eE"):
            return float(text)
        digits = len(text.lstrip("+-"))
        if digits > MAX_LITERAL_DIGITS:
            # Python refuses int() of very long strings, and no size comes near this anyway.
            self.diagnostics.append(Diagnostic(f"number too large ({digits} digits)", Span.of(token)))
            return 0
        return int(text)


# A line that starts a model or a block: where parsing resumes after a syntax error.
_MODEL_START = re.compile(r"^[ \t]*(model|block)\b(?![ \t]*=)", re.MULTILINE)


def _blank(text: str) -> str:
    """The text with everything but line breaks turned into spaces, so positions after it are unchanged."""
    return re.sub(r"[^\n]", " ", text)


def parse(source: str, filename: str = "<string>") -> ast.Program:
    """Parse source text; raise `CompileError` with located messages on syntax errors.

    After a syntax error, parsing resumes at the next line that starts a model (the text before it blanked out,
    so positions stay true), so each model's first syntax error is reported in one run.
    """
    diagnostics: list[Diagnostic] = []
    text = source
    resumed_at = 0
    while True:
        try:
            tree = _lark().parse(text)
            break
        except UnexpectedInput as err:
            diagnostics.append(syntax_diagnostic(err, text))
            where = getattr(err, "pos_in_stream", None)
            token = getattr(err, "token", None)
            if isinstance(token, Token) and token.type != "$END" and token.start_pos is not None:
                where = token.start_pos
            following = _MODEL_START.search(source, max(where or 0, resumed_at + 1))
            if following is None or len(diagnostics) >= Reporter.limit:
                truncated = following is not None
                raise CompileError(diagnostics, filename, source, truncated=truncated) from None
            resumed_at = following.start()
            text = _blank(source[:resumed_at]) + source[resumed_at:]
    transformer = _ToAst()
    try:
        program = transformer.transform(tree)
    except VisitError as err:
        # An exception inside a transformer method arrives wrapped; show the real one (it is a bug in nncompile).
        raise err.orig_exc from None
    if diagnostics or transformer.diagnostics:
        raise CompileError(diagnostics + transformer.diagnostics, filename, source)
    return program


# ---------------------------------------------------------------------------------------------------------------------
# Syntax errors

_TOKEN_WORDS = {
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "LINE_LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "EQUAL": "'='",
    "NAME": "a name",
    "NUMBER": "a number",
    "BOOL": "true/false",
    "INPUT_TYPE": "'int'",
    "MODEL": "'model'",
    "INPUT": "'input'",
    "LOSS": "'loss'",
    "OPTIMIZER": "'optimizer'",
    "SCHEDULE": "'schedule'",
    "OUTPUT": "'output'",
    "BLOCK": "'block'",
    "ARROW": "'->'",
    "STAR": "'*'",
    "$END": "end of file",
}


def _describe_expected(expected) -> str:
    words = sorted({_TOKEN_WORDS.get(t, t) for t in expected})
    if not words:
        return "nothing more"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


@dataclass
class Failure:
    """Where and how the parser stopped: the offending token and the parser's state and stacks at that point."""

    token: Token
    state: int
    accepts: set[str]
    stack: list
    source: str

    @property
    def at_end(self) -> bool:
        return self.token.type == "$END"

    @property
    def found(self) -> str:
        """The offending token in plain words."""
        if self.at_end:
            return "end of file"
        return f"'{shorten(str(self.token))}'"

    @property
    def previous_end(self) -> tuple[int, int] | None:
        """(line, column) just after the last token the parser consumed."""
        for value in reversed(self.stack):
            if isinstance(value, Token):
                return value.end_line, value.end_column
            if isinstance(value, Tree) and not value.meta.empty:
                return value.meta.end_line, value.meta.end_column
        return None

    @property
    def span(self) -> Span:
        """The offending token; at the end of the file, the point just after the last token."""
        if self.at_end:
            return self.insertion_point
        return Span.of(self.token)

    @property
    def insertion_point(self) -> Span:
        """Where a missing token would go: right after the last consumed token."""
        end = self.previous_end
        if end is None:
            return Span.point(1, 1)
        return Span.point(*end)

    def top(self, offset: int = 1):
        """The value `offset` places from the top of the value stack (1 = the top), or None."""
        return self.stack[-offset] if len(self.stack) >= offset else None

    def top_is(self, *types: str, offset: int = 1) -> bool:
        value = self.top(offset)
        return isinstance(value, Token) and value.type in types

    def open_brackets(self) -> list[tuple[int, Token]]:
        """The brackets opened and not yet closed, outermost first, with their index in the value stack."""
        opened: list[tuple[int, Token]] = []
        for index, value in enumerate(self.stack):
            if not isinstance(value, Token):
                continue
            if value.type in _OPENERS:
                opened.append((index, value))
            elif value.type in _CLOSERS and opened:
                opened.pop()
        return opened

    def same_line_as_previous(self) -> bool:
        end = self.previous_end
        return not self.at_end and end is not None and self.token.line == end[0]


def _generic(f: Failure) -> Diagnostic:
    return Diagnostic(f"unexpected {f.found}; expected {_describe_expected(f.accepts)}", f.span)


def _missing_closer(f: Failure) -> Diagnostic | None:
    """An unclosed '(', '[' or '{' — or, inside brackets on the same line, a missing ','."""
    opened = f.open_brackets()
    if not opened:
        return None
    index, opener = opened[-1]
    closer = _OPENERS[opener.type]
    if closer not in f.accepts:
        return None
    if f.same_line_as_previous() and closer != "RBRACE":
        if f.token.type in _VALUE_TYPES and "COMMA" in f.accepts:
            what = "arguments" if closer == "RPAR" else "dimensions"
            return Diagnostic(f"missing ',' before {f.found}", f.span, helps=[f"separate {what} with ','"])
        if f.token.type not in _STATEMENT_START | {"RPAR", "RSQB"}:
            return None  # something out of place inside the brackets, not a missing closer
    owner = f.stack[index - 1] if index else None
    owner_name = shorten(str(owner)) if isinstance(owner, Token) else "?"
    if closer == "RPAR":
        what = f"the arguments of '{owner_name}'"
    elif closer == "RSQB":
        what = "the input shape"
    else:
        what = f"model '{owner_name}'"
    close = _TOKEN_WORDS[closer]
    where = "the file ends" if f.at_end else f"next comes {f.found} at {Span.of(f.token)}"
    return Diagnostic(
        f"missing {close} to close {what}",
        f.insertion_point,
        helps=[f"add {close} here"],
        notes=[f"{_TOKEN_WORDS[opener.type]} opened at {Span.of(opener)}; {where}"],
    )


def _stray_comma(f: Failure) -> Diagnostic | None:
    """`Linear(10,)`, `[64,]`, `Linear(,10)`, `Linear(1,,2)`."""
    if f.top_is("COMMA") and f.token.type in ("RPAR", "RSQB"):
        comma = f.top()
        what = "argument" if f.token.type == "RPAR" else "dimension"
        return Diagnostic(
            f"stray ',' before {f.found}",
            Span.of(comma),
            helps=[f"remove the ',', or add the missing {what} after it"],
        )
    if f.token.type == "COMMA" and f.top_is("COMMA", "LPAR", "LSQB"):
        before = "between two ','" if f.top_is("COMMA") else "before ','"
        return Diagnostic(f"missing value {before}", f.span, helps=["remove the extra ','"])
    return None


def _layer_after_equal(f: Failure) -> Diagnostic | None:
    """`fc1 = ` with no layer after it."""
    if f.top_is("EQUAL") and f.top_is("NAME", offset=2):
        return missing_layer(f.top(2), f.top())
    return None


def _value_after_equal(f: Failure) -> Diagnostic | None:
    """`Linear(10, bias=)`."""
    if f.top_is("EQUAL") and f.top_is("NAME", offset=2):
        keyword = shorten(str(f.top(2)))
        return Diagnostic(
            f"missing value after '{keyword}='",
            Span.of(f.top()),
            helps=["write its value after '=': a number, true/false or a name"],
        )
    return None


_STATEMENT_EXAMPLES = {
    "loss": "loss CrossEntropy",
    "optimizer": "optimizer SGD(lr=0.1)",
    "schedule": "schedule StepLR(step_size=10)",
}


def _statement_as_value(f: Failure) -> Diagnostic | None:
    """`loss = CrossEntropy`, `optimizer = SGD`, `schedule = StepLR` and `image = input [64]`: statements written as
    assignments."""
    if f.token.type == "EQUAL" and f.top_is("LOSS", "OPTIMIZER", "SCHEDULE"):
        word = str(f.top())
        example = _STATEMENT_EXAMPLES[word]
        return Diagnostic(
            f"'{word}' is a reserved word: the {word} is a statement, not a value to assign",
            Span.of(f.top()).to(Span.of(f.token)),
            helps=[
                f"to set the {word}, write '{example}' without '='",
                f"to name a layer, choose another name, e.g. '{word}_'",
            ],
        )
    if f.token.type == "INPUT" and f.top_is("EQUAL") and f.top_is("NAME", offset=2):
        name = shorten(str(f.top(2)))
        return Diagnostic(
            "an input is declared with 'input NAME [shape]', not assigned",
            Span.of(f.top(2)).to(Span.of(f.token)),
            helps=[f"write 'input {name} [64]' (with its own shape)"],
        )
    return None


def _reserved_word(f: Failure) -> Diagnostic | None:
    """`input = Linear(2)`, `model input {`, `Linear(loss=1)`: a reserved word where a name must go."""
    special = _statement_as_value(f)
    if special is not None:
        return special
    if f.token.type == "EQUAL" and f.top_is(*_RESERVED_TYPES):
        word = f.top()
    elif f.token.type in _RESERVED_TYPES:
        word = f.token
    else:
        return None
    return Diagnostic(
        f"'{word}' is a reserved word and cannot be used as a name",
        Span.of(word),
        helps=[f"choose another name, e.g. '{word}_'"],
        notes=["reserved words: " + ", ".join(RESERVED_WORDS)],
    )


def _parenthesize(f: Failure) -> Diagnostic | None:
    """`Linear 10`: arguments without parentheses."""
    if f.top_is("NAME") and f.token.type in ("NUMBER", "BOOL"):
        name = shorten(str(f.top()))
        return Diagnostic(
            f"arguments of '{name}' go in parentheses",
            f.span,
            helps=[f"write '{name}({shorten(str(f.token))})'"],
        )
    return None


def _input_brackets(f: Failure) -> Diagnostic | None:
    """`input 64` or `input (64)`."""
    parenthesized = not f.at_end and re.search(r"\binput\s*\(\s*\Z", f.source[: f.token.start_pos])
    if not f.top_is("INPUT") and not parenthesized:
        return None
    example = f"input [{f.token}]" if f.token.type == "NUMBER" else "input [64]"
    span = f.span
    if parenthesized:
        span = Span.of(f.top()) if f.top_is("LPAR", "LINE_LPAR") else span
    return Diagnostic("the input shape goes in brackets", span, helps=[f"write '{example}'"])


def _dimension_numbers(f: Failure) -> Diagnostic | None:
    """`input [n]`."""
    if f.token.type in ("NAME", "BOOL") and f.top_is("LSQB", "COMMA"):
        return Diagnostic(
            f"input dimensions are numbers, not {f.found}",
            f.span,
            helps=["write the per-sample shape, e.g. 'input [28, 28]'"],
        )
    return None


def _model_name(f: Failure) -> Diagnostic | None:
    if f.top_is("MODEL"):
        return Diagnostic("missing model name after 'model'", f.span, helps=["write 'model Name { ... }'"])
    return None


def _model_brace(f: Failure) -> Diagnostic | None:
    if f.top_is("NAME") and f.top_is("MODEL", offset=2):
        name = shorten(str(f.top()))
        return Diagnostic(
            f"expected '{{' after 'model {name}', found {f.found}", f.span, helps=[f"write 'model {name} {{ ... }}'"]
        )
    return None


def _closed_models(stack) -> list[tuple[str, Span]]:
    """(name, span of its closing '}') for each complete model on the value stack, in order.

    A model is either reduced to a tree (held in the LALR helper list for `model*`) or, when the parser stopped
    right after its '}', still a run of raw tokens `model NAME { … }`.
    """
    found: list[tuple[str, Span]] = []
    name = None
    for value in stack:
        if isinstance(value, Tree):
            if value.data == "model" and not value.meta.empty:
                end = Span.point(value.meta.end_line, value.meta.end_column - 1)
                found.append((str(value.children[0]), end))
            elif str(value.data).startswith("__"):
                found += _closed_models(value.children)
        elif isinstance(value, Token):
            if value.type == "NAME" and name == "":
                name = str(value)
            elif value.type == "MODEL":
                name = ""
            elif value.type == "RBRACE" and name:
                found.append((name, Span.of(value)))
                name = None
    return found


def _outside_model(f: Failure) -> Diagnostic | None:
    """Something after the end of a model: often a '}' too many (or too early) above it."""
    if f.open_brackets():
        return None
    notes = []
    closed = _closed_models(f.stack)
    if closed:
        name, end = closed[-1]
        notes.append(f"model '{shorten(name)}' was closed by the '}}' at {end}")
    if f.token.type == "RBRACE":
        return Diagnostic("unmatched '}'", f.span, helps=["remove it"], notes=notes)
    if f.token.type == "NAME":
        word = shorten(str(f.token))
        if word.lower() == "model":
            return Diagnostic(f"'{word}' should be 'model'", f.span, helps=["keywords are lower case"])
        if re.match(r"\s*(#[^\n]*\s*)*\{", f.source[f.token.end_pos :]):
            return Diagnostic(
                f"missing 'model' before '{word}'", f.span, helps=[f"write 'model {word} {{ ... }}'"], notes=notes
            )
    return Diagnostic(
        f"{f.found} is outside any model",
        f.span,
        helps=["statements go inside a model: 'model Name { ... }'"],
        notes=notes,
    )


def _keyword_name(f: Failure, keyword: str) -> Diagnostic | None:
    if f.top_is(keyword.upper()):
        example = _STATEMENT_EXAMPLES[keyword]
        return Diagnostic(f"missing {keyword} name after '{keyword}'", f.span, helps=[f"write '{example}'"])
    return None


def _loss_scale(f: Failure) -> Diagnostic | None:
    """`loss 1` or `loss out -> 0.5 MSE`: a number after 'loss' scales a loss, with '*'."""
    if f.top_is("NUMBER") and (f.top_is("LOSS", offset=2) or f.top_is("ARROW", offset=2)):
        number = shorten(str(f.top()))
        return Diagnostic(
            f"a number after 'loss' is a scale: write '{number} * ' and the loss after it",
            f.span,
            helps=[f"e.g. 'loss {number} * MSE' or, per output, 'loss out -> {number} * MSE'"],
        )
    return None


def _loss_name(f: Failure) -> Diagnostic | None:
    return _keyword_name(f, "loss")


def _optimizer_name(f: Failure) -> Diagnostic | None:
    return _keyword_name(f, "optimizer")


def _schedule_name(f: Failure) -> Diagnostic | None:
    return _keyword_name(f, "schedule")


def _between_statements(f: Failure) -> Diagnostic | None:
    """A ',' or ';' between statements, an unmatched ')' or ']', or a '=' with no name before it."""
    if f.token.type == "COMMA":
        return Diagnostic("statements are not separated by ','", f.span, helps=["remove the ','"])
    if f.token.type in ("RPAR", "RSQB"):
        return Diagnostic(f"unmatched {f.found}", f.span, helps=["remove it"])
    if f.token.type == "EQUAL" and not f.top_is("NAME"):
        return Diagnostic("missing layer name before '='", f.span, helps=["write 'name = Linear(10)'"])
    if f.token.type == "NUMBER":
        return Diagnostic(
            f"unexpected number {shorten(str(f.token))}; expected a statement",
            f.span,
            helps=["a layer is written like 'Linear(10)'"],
        )
    return None


# The table of bad examples. Each snippet must fail to parse; the (LALR state, token type) where it fails
# selects its builder for any input that fails the same way. The first entry wins when two share a key.
_M = "model M { input [4] "
SYNTAX_EXAMPLES: list[tuple[Callable[[Failure], Diagnostic | None], list[str]]] = [
    (
        _reserved_word,
        [
            "model input {",
            "model loss {",
            _M + "input = Linear(2) }",
            _M + "loss = Linear(2) }",
            _M + "optimizer = SGD }",
            _M + "schedule = StepLR }",
            _M + "true = Linear(2) }",
            _M + "Linear(input=2) }",
            _M + "Linear(2, loss=2) }",
            _M + "fc = input }",
        ],
    ),
    (
        _statement_as_value,
        [
            _M + "loss = CrossEntropy }",
            _M + "optimizer = SGD }",
            _M + "schedule = StepLR }",
            "model M { image = input [4] }",
        ],
    ),
    (
        _stray_comma,
        [
            _M + "Linear(10,) }",
            _M + "Linear(out=10,) }",
            _M + "Linear(he_normal,) }",
            _M + "Linear(true,) }",
            "model M { input [64,] }",
            _M + "Linear(1,,2) }",
            _M + "Linear(,1) }",
            "model M { input [1,,2] }",
            "model M { input [,1] }",
        ],
    ),
    (
        _layer_after_equal,
        [_M + "fc1 = }", _M + "fc1 = 1 }", _M + "fc1 = ", _M + "fc1 = = }", _M + "fc1 = model"],
    ),
    (
        _value_after_equal,
        [_M + "Linear(bias=) }", _M + "Linear(bias=, 2) }", _M + "Linear(bias= }", _M + "Linear(bias=("],
    ),
    (
        _missing_closer,
        [
            _M + "Linear(2 }",
            _M + "Linear(2\n ReLU }",
            _M + "Linear(2\n loss MSE }",
            _M + "Linear(2\n input [3] }",
            _M + "Linear(2\n optimizer SGD }",
            _M + "Linear(2\n schedule StepLR }",
            _M + "Linear(2\n model",
            _M + "Linear(2",
            _M + "Linear(2 3) }",
            _M + "Linear(2 true) }",
            _M + "Linear(out=2 }",
            _M + "Linear(out=2\n ReLU }",
            _M + "Linear(out=2 3) }",
            _M + "Linear(init=he_normal }",
            _M + "Linear(init=he_normal 3) }",
            _M + "Linear(bias=true }",
            _M + "Linear(bias=true 3) }",
            _M + "Linear(he_normal }",
            _M + "Linear(he_normal\n ReLU }",
            _M + "Linear(he_normal 3) }",
            _M + "Linear(true }",
            _M + "Linear(true 3) }",
            _M + "Linear( }",
            _M + "Linear(\n loss MSE }",
            _M + "Linear(",
            "model M { input [4 }",
            "model M { input [4\n Linear(2) }",
            "model M { input [4\n loss MSE }",
            "model M { input [4\n optimizer SGD }",
            "model M { input [4\n input [2] }",
            "model M { input [4",
            "model M { input [4 5] }",
            "model M { input [ }",
            "model M { input [\n Linear(2) }",
            "model M { input [",
            "model M {",
            "model M { model",
            _M,
            _M + "model",
            _M + "Linear",
            _M + "Linear model",
            _M + "Linear(2)",
            _M + "Linear(2) model",
            _M + "Linear()",
            _M + "fc = Linear",
            _M + "fc = Linear(2)",
            _M + "Linear loss MSE",
            _M + "Linear loss MSE(2)",
            _M + "Linear loss MSE model",
            _M + "Linear optimizer SGD",
            _M + "Linear optimizer SGD(lr=1)",
            _M + "Linear optimizer SGD model",
            _M + "Linear schedule StepLR",
            _M + "Linear schedule StepLR(step_size=1)",
            "model M { input [4] model",
        ],
    ),
    (
        _parenthesize,
        [_M + "Linear 10 }", _M + "ReLU 1 }", _M + "Linear true }", _M + "fc = Linear 10 }", _M + "loss MSE 1 }"],
    ),
    (_input_brackets, ["model M { input 64 }", "model M { input (64) }", "model M { input"]),
    (_dimension_numbers, ["model M { input [n] }", "model M { input [true] }", "model M { input [1, n] }"]),
    (_model_name, ["model { }", "model 1 { }", "model", "model ("]),
    (_model_brace, ["model M input [1] }", "model M ( }", "model M", "model M }", "model M [", "model M N {"]),
    (
        _outside_model,
        [
            "input [4]",
            "Linear(2)",
            "fc = Linear(2)",
            "loss MSE",
            "optimizer SGD",
            "schedule StepLR",
            "}",
            "1",
            "(",
            "Net {",
            "Model Net {",
            _M + "Linear(2) } ReLU }",
            _M + "Linear(2) } }",
            _M + "Linear(2) } loss MSE",
        ],
    ),
    (_loss_name, [_M + "Linear(2) loss }", _M + "Linear(2) loss", _M + "loss ("]),
    (_loss_scale, [_M + "Linear(2) loss 1 }", _M + "Linear(2) loss 0.5 MSE }", _M + "h = Linear(2) loss h -> 2 }"]),
    (
        _optimizer_name,
        [_M + "Linear(2) optimizer }", _M + "Linear(2) optimizer 1 }", _M + "optimizer", _M + "optimizer ("],
    ),
    (
        _schedule_name,
        [_M + "Linear(2) schedule }", _M + "Linear(2) schedule 1 }", _M + "schedule", _M + "schedule ("],
    ),
    (
        _between_statements,
        [
            _M + "Linear(2), ReLU }",
            _M + "ReLU, ReLU }",
            _M + "Linear(2)) }",
            _M + "ReLU) }",
            "model M { input [4]] }",
            "model M { input [4], Linear(2) }",
            _M + "= Linear(2) }",
            _M + "Linear(2) = }",
            _M + "1 }",
        ],
    ),
]


def _failure_key(err: UnexpectedToken) -> tuple[int, str]:
    return err.state.position, err.token.type


@lru_cache(maxsize=1)
def _example_index() -> tuple[dict, dict]:
    """(state, token type) → builder, and state → its builders in table order, from SYNTAX_EXAMPLES' failures."""
    exact: dict[tuple[int, str], Callable] = {}
    by_state: dict[int, list[Callable]] = {}
    for builder, snippets in SYNTAX_EXAMPLES:
        for snippet in snippets:
            try:
                _lark().parse(snippet)
            except UnexpectedToken as err:
                exact.setdefault(_failure_key(err), builder)
                builders = by_state.setdefault(err.state.position, [])
                if builder not in builders:
                    builders.append(builder)
            except UnexpectedInput:
                pass
    return exact, by_state


def _failure(err: UnexpectedToken, source: str) -> Failure:
    parser = err.interactive_parser
    stack = list(parser.parser_state.value_stack) if parser is not None else []
    # accepts() replays each terminal on a copy of the parser: exact, unlike the LALR table's `expected`.
    accepts = set(err.accepts) if parser is not None else set(err.expected)
    return Failure(err.token, err.state.position, accepts, stack, source)


_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NUMBER_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")


def _word_char(c: str) -> bool:
    """Characters someone might write inside a name or a number (letters and digits of any script too)."""
    return c.isalnum() or c in "_.+-"


def _bad_word(source: str, pos: int, line: int, column: int) -> Diagnostic | None:
    """`fc-1`, `1fc`, `fcé`, `1.5.2`: characters glued into something that is neither a name nor a number."""
    if not 0 <= pos < len(source) or not _word_char(source[pos]):
        return None
    start = pos
    while start > 0 and _word_char(source[start - 1]):
        start -= 1
    end = pos
    while end < len(source) and _word_char(source[end]):
        end += 1
    word = source[start:end]
    if _NAME_RE.match(word) or _NUMBER_RE.match(word) or not any(c.isalnum() for c in word):
        return None
    column -= pos - start
    return Diagnostic(
        f"'{shorten(word)}' is not a valid name or number",
        Span(line, column, line, column + (end - start)),
        helps=["names use ASCII letters, digits and '_', and do not start with a digit"],
    )


_CHARACTER_HELP = {
    ";": "statements need no separator; remove the ';'",
    '"': "there are no strings; write names bare, e.g. init=he_normal",
    "'": "there are no strings; write names bare, e.g. init=he_normal",
    ":": "name a layer with '=', e.g. 'fc1 = Linear(10)'",
    "/": "comments start with '#'",
}


# `model M` or `block B(...)` right before the offending character.
_HEADER_BEFORE = re.compile(r"((?:model|block)\s+[A-Za-z_][A-Za-z0-9_]*\s*(?:\([^()]*\))?)\s*\Z")


def _character_diagnostic(err: UnexpectedCharacters, source: str) -> Diagnostic:
    char = source[err.pos_in_stream] if err.pos_in_stream < len(source) else "?"
    glued = _bad_word(source, err.pos_in_stream, err.line, err.column) if char.isalnum() else None
    if glued is not None:
        return glued
    shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}"
    if not char.isascii() and char.isprintable():
        shown += f" (U+{ord(char):04X})"
    helps = [_CHARACTER_HELP[char]] if char in _CHARACTER_HELP else []
    header = _HEADER_BEFORE.search(source, 0, err.pos_in_stream) if char == ":" else None
    if header is not None:
        # `model M:` in the style of Python: the body of a model or block goes in braces.
        return Diagnostic(
            f"expected '{{' after '{shorten(header.group(1).strip())}', found ':'",
            Span.point(err.line, err.column),
            helps=[f"write '{shorten(header.group(1).strip())} {{ ... }}': a body goes in braces"],
        )
    return Diagnostic(f"unexpected character {shown}", Span.point(err.line, err.column), helps=helps)


def syntax_diagnostic(err: UnexpectedInput, source: str) -> Diagnostic:
    """Explain a lark parse failure in plain words, at the right place."""
    if isinstance(err, UnexpectedCharacters):
        return _character_diagnostic(err, source)
    if not isinstance(err, UnexpectedToken) or err.state is None:
        line, column = getattr(err, "line", "?"), getattr(err, "column", "?")
        span = Span.point(line, column) if isinstance(line, int) and isinstance(column, int) else None
        return Diagnostic("unexpected end of file", span)
    failure = _failure(err, source)
    if not failure.at_end:
        glued = _bad_word(source, failure.token.start_pos, failure.token.line, failure.token.column)
        if glued is not None:
            return glued
    if failure.token.type in _RESERVED_TYPES and re.match(r"\s*=", source[failure.token.end_pos :]):
        return _reserved_word(failure)
    if failure.token.type == "EQUAL" and failure.top_is(*_RESERVED_TYPES):
        return _reserved_word(failure)
    exact, by_state = _example_index()
    builders = [exact.get((failure.state, failure.token.type))]
    if failure.at_end:
        builders.append(_missing_closer)
    builders += by_state.get(failure.state, [])
    for builder in builders:
        if builder is not None:
            diagnostic = builder(failure)
            if diagnostic is not None:
                return diagnostic
    return _generic(failure)
