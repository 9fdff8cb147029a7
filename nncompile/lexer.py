"""A Pygments lexer for `.nn` files, for `pygmentize -l nn model.nn` and documentation tools (Sphinx, MkDocs).

Needs the optional extra `nncompile[lexer]` (Pygments); installing nncompile registers it under the entry point
group `pygments.lexers`, so Pygments finds it by its alias `nn` or a file name ending in `.nn`.

What it highlights, as the grammar (grammar/nn.lark) reads it:
  `# ...`                                   comments, to the end of the line
  `model`, `block`                          declarations; the name after them is the defined class
  `input`, `output`, `loss`, `optimizer`    keywords (`output` and `block` before `=` name a value instead)
  `true`, `false`; `int`                    constants; the integer-input type
  numbers, `->`, `*`, `=`                   numbers and operators
  `Linear(...)`, `ReLU`, `Residual(...)`    a capitalised name is a layer, loss, optimizer or block
  `fc1 = ...`; `init=he_normal`             a statement's name; a keyword argument inside a call
"""

from __future__ import annotations

from typing import ClassVar

from pygments.lexer import RegexLexer, bygroups, include
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, Whitespace

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
# The words the grammar reserves; `(?![A-Za-z0-9_])` as in the grammar, so `inputs` or `model2` stay names.
_END = r"(?![A-Za-z0-9_])"
_NUMBER_FLOAT = r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?[0-9]+[eE][+-]?[0-9]+"
_NUMBER_INT = r"[+-]?[0-9]+"


class NNLexer(RegexLexer):
    """Lexer for nncompile's `.nn` neural-network description language."""

    name = "nncompile"
    aliases: ClassVar[list[str]] = ["nn", "nncompile"]
    filenames: ClassVar[list[str]] = ["*.nn"]
    mimetypes: ClassVar[list[str]] = ["text/x-nn"]

    tokens: ClassVar[dict] = {
        "common": [
            (r"[ \t\f\r\n]+", Whitespace),
            (r"#[^\n\r]*", Comment.Single),
            (r"(true|false)" + _END, Keyword.Constant),
            (_NUMBER_FLOAT, Number.Float),
            (_NUMBER_INT, Number.Integer),
            (r"[\[\],]", Punctuation),
        ],
        "root": [
            include("common"),
            # `output = Linear(10)` and `block = ...`: the v1 form, where the word names a layer.
            (r"(output|block)(\s*)(=)", bygroups(Name.Variable, Whitespace, Operator)),
            # `block Residual(width, init=he_normal)`: its parameters read like a call's arguments.
            (
                r"(block)(\s+)(" + _IDENT + r")(\s*)(\()",
                bygroups(Keyword.Declaration, Whitespace, Name.Class, Whitespace, Punctuation),
                "arguments",
            ),
            (r"(model|block)(\s+)(" + _IDENT + ")", bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (r"(model|block)" + _END, Keyword.Declaration),
            (r"(input|output|loss|optimizer)" + _END, Keyword),
            (r"int" + _END, Keyword.Type),
            (r"->|\*", Operator),
            # A call: its arguments follow in their own state, where `name=` is a keyword argument.
            (r"([A-Z][A-Za-z0-9_]*)(\s*)(\()", bygroups(Name.Class, Whitespace, Punctuation), "arguments"),
            (r"(" + _IDENT + r")(\s*)(\()", bygroups(Name.Function, Whitespace, Punctuation), "arguments"),
            (r"(" + _IDENT + r")(\s*)(=)", bygroups(Name.Variable, Whitespace, Operator)),
            (r"[A-Z][A-Za-z0-9_]*", Name.Class),
            (_IDENT, Name),
            (r"=", Operator),
            (r"[(){}]", Punctuation),
        ],
        "arguments": [
            include("common"),
            (r"\)", Punctuation, "#pop"),
            (r"(" + _IDENT + r")(\s*)(=)", bygroups(Name.Attribute, Whitespace, Operator)),
            (r"(int)" + _END, Keyword.Type),
            (_IDENT, Name),
        ],
    }


__all__ = ["NNLexer"]
