"""Whatever a file is named, its name reaches the generated module only as inert text: never as code.

The base name appears in the module docstring and in the `(FILE:LINE)` comments; quotes, backslashes, line breaks,
control and bidi characters must neither change the module's code nor stop it from importing.
"""

from __future__ import annotations

import ast
import os
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nncompile
from nncompile import cli

MODEL = "model Net {\n    input [4]\n    fc = Linear(3)\n    ReLU\n    loss MSE\n}\n"

NASTY = [
    'x""";__import__("os").system("touch pwned");"""',
    "x''';__import__('os').system('touch pwned');'''",
    "line\nbreak; __import__('os').system('touch pwned')",
    "carriage\rreturn",
    "bs\\N",
    "bs\\x",
    "bs\\",
    "tab\tand\x0bvt\x0cff\x1besc\x00"[:-1],
    "bidi\u202eevil\u2066x\u2069",
    "sep\u2028line\u2029para\x85nel",
    "emoji \U0001f600 ünïcödé",
    "#hash",
]


def _code_without_docstring(code: str) -> str:
    """The module's AST with every string constant blanked: what the module does, independent of the text in its
    docstrings, comments and messages (which name the file)."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = ""
    return ast.dump(tree)


@pytest.fixture(scope="module")
def reference():
    return _code_without_docstring(nncompile.compile_source(MODEL, filename="case.nn"))


def _check_name(stem: str, directory, reference: str) -> None:
    source = directory / f"{stem}.nn"
    source.write_text(MODEL, encoding="utf-8")
    output = directory / "out.py"
    if output.exists():
        output.unlink()
    before = set(os.listdir(directory))
    code = cli.run([str(source), "-o", str(output)])
    assert code == 0
    text = output.read_text(encoding="utf-8")
    # Same code as for a plain name: the name changed only the docstring and comments.
    assert _code_without_docstring(text) == reference
    # No line of the module holds a raw control or line-breaking character from the name.
    for line in text.split("\n"):
        assert not any(ord(c) < 32 and c != "\t" for c in line), repr(line)
        assert not any(c in line for c in "\u2028\u2029\x85\u202e\u2066\u2069"), repr(line)
    # Importing runs nothing but the module itself.
    namespace: dict = {}
    previous = os.getcwd()
    os.chdir(directory)
    try:
        exec(compile(text, "out.py", "exec"), namespace)  # noqa: S102  (the generated module under test)
        module = nncompile.load(source)
    finally:
        os.chdir(previous)
    assert "Net" in namespace and hasattr(module, "Net")
    assert set(os.listdir(directory)) == before | {"out.py"}, "the module created files"
    assert not (directory / "pwned").exists()


@pytest.mark.parametrize("stem", NASTY, ids=range(len(NASTY)))
def test_hostile_file_names_stay_text(tmp_path, stem, reference):
    _check_name(stem, tmp_path, reference)


# Characters a file name can hold (anything but '/' and NUL), weighted towards the dangerous ones.
_NAME_CHARS = st.one_of(
    st.sampled_from(list("\"'\\\n\r\t#;()") + ["\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\u2028", "\u202e", "\u2066"]),
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
)


@settings(
    max_examples=60,
    derandomize=True,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)
@given(stem=st.text(_NAME_CHARS, min_size=1, max_size=30).filter(lambda s: s not in (".", "..")))
def test_fuzzed_file_names_stay_text(tmp_path_factory, stem, reference):
    directory = tmp_path_factory.mktemp("names")
    try:
        (directory / f"{stem}.nn").write_text("", encoding="utf-8")
    except (OSError, UnicodeEncodeError):
        return  # a name this file system cannot hold is not a case
    _check_name(stem, directory, reference)
