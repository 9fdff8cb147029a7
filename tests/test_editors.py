"""Editor support: the Pygments lexer (nncompile/lexer.py) and the TextMate grammar (editors/nn.tmLanguage.json).

Both are checked against the compiler's own lexer (lark, on grammar/nn.lark) over the example files, the golden
files and every ```nn block of the docs: each comment, keyword, constant, number and operator gets the intended
token type or scope, and so do names in their roles (a defined model or block, a statement's name, a keyword
argument, a layer).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import ROOT

from nncompile.parser import _lark

pygments = pytest.importorskip("pygments")
from pygments.token import Comment, Error, Keyword, Name, Number, Operator

from nncompile.lexer import NNLexer

GRAMMAR = ROOT / "editors" / "nn.tmLanguage.json"
# A ```nn block of the docs, unless marked as an example of a syntax error (<!-- error -->).
FENCE = re.compile(r"(<!-- error -->\n)?^```nn\n(.*?)^```", re.DOTALL | re.MULTILINE)

EDGE_CASES = """
# v1 names that are words elsewhere, a multi-line call, integers, booleans, repeats and exponents
block Mix(width, depth=1, init=he_normal) {
    input a
    input b
    s = (a, b) -> Concat -> Linear(width,
                                   init=init)   # arguments on two lines
    s -> ReLU * depth
}
model Old {
    input [8]
    output = Linear(4, bias=false)
    block = ReLU
    loss MSE
    optimizer SGD(lr=.5e-2, momentum=0.9, nesterov=true)
}
model Tok {
    input tokens [4] int
    input extra [3]
    v = tokens -> Embedding(10, 2) -> Flatten
    m = (v, extra) -> Mix(8, depth=2)
    out = m -> Linear(2)
    output (out, m)
    loss out -> 2 * CrossEntropy
    loss m -> 1e-3 * MSE
}
"""


def doc_blocks() -> list[tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, match in enumerate(FENCE.finditer(path.read_text(encoding="utf-8"))):
            if not match.group(1):
                found.append((f"{path.name}#{i + 1}", match.group(2)))
    return found


SOURCES = (
    [(p.name, p.read_text(encoding="utf-8")) for p in sorted((ROOT / "examples").glob("*.nn"))]
    + [(f"golden/{p.name}", p.read_text(encoding="utf-8")) for p in sorted((ROOT / "tests" / "golden").glob("*.nn"))]
    + [("edge cases", EDGE_CASES)]
    + doc_blocks()
)
IDS = [name for name, _ in SOURCES]


def test_sources_cover_the_examples_and_the_docs():
    names = set(IDS)
    assert {"digits_mlp.nn", "digits_cnn1d.nn", "digits_residual.nn", "tokens.nn"} <= names
    assert sum(name.startswith("language.md#") for name in names) >= 10
    assert sum(name.startswith("README.md#") for name in names) >= 3


def roles(source: str) -> list[tuple[int, int, str, str]]:
    """(start, end, role, text) of every comment and token, as the compiler's lexer reads the source."""
    tokens = list(_lark().lex(source))
    out = [(m.start(), m.end(), "comment", m.group()) for m in re.finditer(r"#[^\n\r]*", source)]
    depth = 0
    for i, token in enumerate(tokens):
        after = tokens[i + 1].type if i + 1 < len(tokens) else None
        before = tokens[i - 1].type if i else None
        kind = token.type
        if kind in ("LPAR", "LINE_LPAR"):
            depth += 1
        elif kind == "RPAR":
            depth -= 1
        if kind in ("OUTPUT", "BLOCK") and after == "EQUAL":
            role = "definition"
        elif kind in ("MODEL", "BLOCK"):
            role = "declaration"
        elif kind in ("INPUT", "OUTPUT", "LOSS", "OPTIMIZER"):
            role = "keyword"
        elif kind in ("BOOL", "NUMBER", "ARROW", "STAR"):
            role = {"BOOL": "constant", "NUMBER": "number", "ARROW": "arrow", "STAR": "repeat"}[kind]
        elif kind == "INPUT_TYPE":
            role = "type"
        elif kind == "NAME" and before in ("MODEL", "BLOCK"):
            role = "defined"
        elif kind == "NAME" and after == "EQUAL":
            role = "parameter" if depth > 0 else "definition"
        elif kind == "NAME" and (after == "LPAR" or token.value[0].isupper()):
            role = "call"
        elif kind == "NAME":
            role = "name"
        else:
            continue
        out.append((token.start_pos, token.end_pos, role, token.value))
    return out


# ---- Pygments ------------------------------------------------------------------------------------------------


def pygments_types(source: str) -> list:
    types = [None] * len(source)
    for index, kind, value in NNLexer().get_tokens_unprocessed(source):
        types[index : index + len(value)] = [kind] * len(value)
    return types


PYGMENTS_ROLES = {
    "comment": lambda t: t is Comment.Single,
    "declaration": lambda t: t is Keyword.Declaration,
    "keyword": lambda t: t is Keyword,
    "constant": lambda t: t is Keyword.Constant,
    "type": lambda t: t is Keyword.Type,
    "number": lambda t: t in Number,
    "arrow": lambda t: t is Operator,
    "repeat": lambda t: t is Operator,
    "defined": lambda t: t is Name.Class,
    "definition": lambda t: t is Name.Variable,
    "parameter": lambda t: t is Name.Attribute,
    "call": lambda t: t in (Name.Class, Name.Function),
    "name": lambda t: t is Name,
}


@pytest.mark.parametrize(("name", "source"), SOURCES, ids=IDS)
def test_pygments_lexer_gives_each_token_its_role(name, source):
    types = pygments_types(source)
    assert Error not in types, [source[i - 10 : i + 10] for i, t in enumerate(types) if t is Error][:3]
    for start, end, role, text in roles(source):
        got = set(types[start:end])
        assert len(got) == 1 and PYGMENTS_ROLES[role](got.pop()), (role, text, start, set(types[start:end]))


def test_pygments_lexer_is_found_by_alias_and_file_name():
    assert "nn" in NNLexer.aliases and "*.nn" in NNLexer.filenames
    from pygments import highlight
    from pygments.formatters import HtmlFormatter

    html = highlight((ROOT / "examples" / "digits_mlp.nn").read_text(), NNLexer(), HtmlFormatter())
    assert '<span class="kd">model</span>' in html and '<span class="c1"># ' in html


def test_entry_point_is_registered_in_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pygments.lexers"] == {"nn": "nncompile.lexer:NNLexer"}
    assert any(r.startswith("pygments") for r in project["optional-dependencies"]["lexer"])
    module, _, attribute = project["entry-points"]["pygments.lexers"]["nn"].partition(":")
    assert getattr(__import__(module, fromlist=[attribute]), attribute) is NNLexer


# ---- TextMate ------------------------------------------------------------------------------------------------


class TextMate:
    """Just enough of a TextMate tokenizer for this grammar: match rules with captures, begin/end rules (across
    lines) with their captures and nested patterns, and includes; the earliest match wins, the first listed on a
    tie, an enclosing rule's end before its patterns. Gives every character its stack of scopes."""

    def __init__(self, grammar: dict):
        self.grammar = grammar
        self.regex: dict[str, re.Pattern] = {}

    def compiled(self, pattern: str) -> re.Pattern:
        if pattern not in self.regex:
            self.regex[pattern] = re.compile(pattern)
        return self.regex[pattern]

    def flatten(self, patterns: list) -> list[dict]:
        out = []
        for rule in patterns:
            if "include" in rule:
                name = rule["include"]
                target = self.grammar if name == "$self" else self.grammar["repository"][name.removeprefix("#")]
                out += self.flatten([target])
            elif "match" in rule or "begin" in rule:
                out.append(rule)
            else:
                out += self.flatten(rule["patterns"])
        return out

    @staticmethod
    def scope(name: str, match: re.Match) -> str:
        return re.sub(r"\$(\d+)", lambda m: match.group(int(m.group(1))) or "", name)

    def paint(self, scopes, base, match, name, captures):
        for i in range(match.start(), match.end()):
            scopes[i] = [*base, *([self.scope(name, match)] if name else [])]
        for group, capture in (captures or {}).items():
            group = int(group)
            if match.group(group) is not None and "name" in capture:
                for i in range(match.start(group), match.end(group)):
                    scopes[i] = [*scopes[i], self.scope(capture["name"], match)]

    def tokenize(self, text: str) -> list[list[str]]:
        scopes: list[list[str]] = [[] for _ in text]
        stack = [(self.flatten(self.grammar["patterns"]), None, ["source.nn"], None)]
        pos = 0
        for line in text.splitlines(keepends=True):
            end_of_line = pos + len(line)
            while pos < end_of_line:
                patterns, end, base, rule = stack[-1]
                best = None
                if end is not None:
                    found = self.compiled(end).search(text, pos, end_of_line)
                    if found:
                        best = (found.start(), -1, found, None)
                for order, candidate in enumerate(patterns):
                    found = self.compiled(candidate.get("match") or candidate["begin"]).search(text, pos, end_of_line)
                    if found and (best is None or found.start() < best[0]):
                        best = (found.start(), order, found, candidate)
                if best is None:
                    for i in range(pos, end_of_line):
                        scopes[i] = list(base)
                    pos = end_of_line
                    break
                start, _, found, candidate = best
                for i in range(pos, start):
                    scopes[i] = list(base)
                if candidate is None:  # the enclosing rule ends
                    self.paint(scopes, base, found, None, rule.get("endCaptures"))
                    stack.pop()
                elif "match" in candidate:
                    self.paint(scopes, base, found, candidate.get("name"), candidate.get("captures"))
                else:
                    self.paint(scopes, base, found, candidate.get("name"), candidate.get("beginCaptures"))
                    inner = [*base, *([candidate["name"]] if "name" in candidate else [])]
                    stack.append((self.flatten(candidate.get("patterns", [])), candidate["end"], inner, candidate))
                assert found.end() > pos, "a pattern matched the empty string"
                pos = found.end()
        return scopes


def grammar() -> dict:
    return json.loads(GRAMMAR.read_text(encoding="utf-8"))


def all_regexes(value) -> list[str]:
    if isinstance(value, dict):
        own = [value[k] for k in ("match", "begin", "end") if k in value]
        return own + [r for v in value.values() for r in all_regexes(v)]
    if isinstance(value, list):
        return [r for v in value for r in all_regexes(v)]
    return []


def test_grammar_is_valid_json_with_compiling_regexes():
    data = grammar()
    assert data["scopeName"] == "source.nn" and "nn" in data["fileTypes"]
    regexes = all_regexes(data)
    assert len(regexes) >= 15
    for regex in regexes:
        re.compile(regex)  # Oniguruma's syntax, restricted here to what Python's re reads the same way
    includes = re.findall(r'"include": "#([^"]+)"', GRAMMAR.read_text())
    assert set(includes) <= set(data["repository"]), set(includes) - set(data["repository"])


TEXTMATE_ROLES = {
    "comment": "comment.line.number-sign.nn",
    "declaration": "storage.type.{}.nn",
    "keyword": "keyword.other.{}.nn",
    "constant": "constant.language.boolean.nn",
    "type": "storage.type.int.nn",
    "number": "constant.numeric.nn",
    "arrow": "keyword.operator.arrow.nn",
    "repeat": "keyword.operator.repeat.nn",
    "defined": "entity.name.type.nn",
    "definition": "variable.other.definition.nn",
    "parameter": "variable.parameter.keyword.nn",
    "call": "entity.name.function.call.nn",
    "name": "variable.other.nn",
}


@pytest.mark.parametrize(("name", "source"), SOURCES, ids=IDS)
def test_textmate_grammar_gives_each_token_its_scope(name, source):
    scopes = TextMate(grammar()).tokenize(source)
    for start, end, role, text in roles(source):
        expected = TEXTMATE_ROLES[role].format(text)
        for i in range(start, end):
            assert expected in scopes[i], (role, text, start, scopes[i])
            if role != "comment":
                assert not any(s.startswith("comment") for s in scopes[i]), (text, scopes[i])


def test_textmate_tokenizer_sees_multi_line_calls():
    scopes = TextMate(grammar()).tokenize(EDGE_CASES)
    at = EDGE_CASES.index("init=init)") + len("init=")
    assert "variable.other.nn" in scopes[at]
    closing = EDGE_CASES.index(")", at)
    assert "punctuation.section.arguments.end.nn" in scopes[closing]
    assert Path(GRAMMAR).name == "nn.tmLanguage.json"
