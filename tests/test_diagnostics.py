"""Diagnostics: every bad input gets a located, plain-words message (text AND exact span), never a traceback.

Cases are grouped as in issue 5: syntax, unknown names, argument values, shapes, model-level rules. Layers from the
catalogue (Conv1D, pools, LeakyReLU, Adam) are used when registered and skipped otherwise.
"""

from __future__ import annotations

import ast as python_ast
import keyword

import pytest

import nncompile
from nncompile import parser
from nncompile.errors import CompileError, Diagnostic, Reporter, Span, did_you_mean, edit_distance, render_diagnostic
from nncompile.registry import INITS, LAYERS, LOSSES, OPTIMIZERS, load_all

load_all()


def m(*body: str, input: str = "[4]", name: str = "A") -> str:
    """A model whose line 1 is `model NAME {`, line 2 `  input SHAPE`, lines 3… the body (indented 2), then `}`."""
    lines = [f"model {name} {{", f"  input {input}"] + [f"  {line}" for line in body] + ["}"]
    return "\n".join(lines) + "\n"


def errors(source: str) -> list[Diagnostic]:
    with pytest.raises(CompileError) as info:
        nncompile.compile_source(source, filename="bad.nn")
    return info.value.diagnostics


def first(source: str) -> Diagnostic:
    return errors(source)[0]


def where(diag: Diagnostic) -> tuple[int, int, int]:
    """(line, column, end column) of the span: what the caret underline covers."""
    return diag.span.line, diag.span.column, diag.span.end_column


def needs(*names: str):
    """Skip unless every named layer/loss/optimizer is registered (the catalogue lands in parallel)."""
    known = set(LAYERS) | set(LOSSES) | set(OPTIMIZERS)
    missing = [n for n in names if n not in known]
    return pytest.mark.skipif(bool(missing), reason=f"not registered yet: {', '.join(missing)}")


def check(source, span, message, helps=None, notes=None):
    diag = first(source)
    assert diag.message == message
    assert where(diag) == span
    if helps is not None:
        assert diag.helps == helps
    if notes is not None:
        assert diag.notes == notes
    return diag


# ---------------------------------------------------------------------------------------------------------------------
# Syntax


SYNTAX = {
    "missing_rpar": (
        m("Linear(2", "ReLU"),
        (3, 11, 12),
        "missing ')' to close the arguments of 'Linear'",
        ["add ')' here"],
        ["'(' opened at 3:9; next comes 'ReLU' at 4:3"],
    ),
    "missing_rpar_at_end": (
        "model A {\n  input [4]\n  Linear(2",
        (3, 11, 12),
        "missing ')' to close the arguments of 'Linear'",
        None,
        ["'(' opened at 3:9; the file ends"],
    ),
    "missing_rbrace_at_end": (
        "model A {\n  input [4]\n  Linear(2)\n",
        (3, 12, 13),
        "missing '}' to close model 'A'",
        ["add '}' here"],
        ["'{' opened at 1:9; the file ends"],
    ),
    "missing_rbrace_before_next_model": (
        "model A {\n  input [4]\n  Linear(2)\n" + m("Linear(2)", name="B"),
        (3, 12, 13),
        "missing '}' to close model 'A'",
        None,
        ["'{' opened at 1:9; next comes 'model' at 4:1"],
    ),
    "equal_without_layer_then_newline": (
        m("fc1 = ", "ReLU"),
        (3, 7, 8),
        "missing layer after 'fc1 ='",
        ["write the layer on the same line, e.g. 'fc1 = Linear(10)'"],
        None,
    ),
    "equal_without_layer_before_brace": (m("fc1 ="), (3, 7, 8), "missing layer after 'fc1 ='", None, None),
    "equal_at_end_of_file": ("model A {\n  input [4]\n  fc1 =", (3, 7, 8), "missing layer after 'fc1 ='", None, None),
    "stray_comma_in_call": (
        m("Linear(10,)"),
        (3, 12, 13),
        "stray ',' before ')'",
        ["remove the ',', or add the missing argument after it"],
        None,
    ),
    "stray_comma_in_shape": (
        m("Linear(10)", input="[64,]"),
        (2, 12, 13),
        "stray ',' before ']'",
        ["remove the ',', or add the missing dimension after it"],
        None,
    ),
    "double_comma": (m("Linear(10,,2)"), (3, 13, 14), "missing value between two ','", None, None),
    "leading_comma": (m("Linear(,10)"), (3, 10, 11), "missing value before ','", None, None),
    "unclosed_bracket": (
        m("Linear(10)", input="[64"),
        (2, 12, 13),
        "missing ']' to close the input shape",
        None,
        ["'[' opened at 2:9; next comes 'Linear' at 3:3"],
    ),
    "missing_comma_between_arguments": (
        m("Linear(10 bias=false)"),
        (3, 13, 17),
        "missing ',' before 'bias'",
        ["separate arguments with ','"],
        None,
    ),
    "missing_comma_between_dimensions": (
        m("Flatten", input="[28 28]"),
        (2, 13, 15),
        "missing ',' before '28'",
        None,
        None,
    ),
    "missing_value_after_keyword": (
        m("Linear(10, bias=)"),
        (3, 18, 19),
        "missing value after 'bias='",
        ["write its value after '=': a number, true/false or a name"],
        None,
    ),
    "nested_parentheses": (
        m("Linear((10))"),
        (3, 10, 11),
        "unexpected '('; expected ')', '[', a name, a number or true/false",
        [],
        [],
    ),
    "arguments_without_parentheses": (
        m("Linear 10"),
        (3, 10, 12),
        "arguments of 'Linear' go in parentheses",
        ["write 'Linear(10)'"],
        None,
    ),
    "input_without_brackets": (
        m("Linear(2)", input="64"),
        (2, 9, 11),
        "the input shape goes in brackets",
        ["write 'input [64]'"],
        None,
    ),
    "input_dimension_not_a_number": (
        m("Linear(2)", input="[n]"),
        (2, 10, 11),
        "input dimensions are numbers, not 'n'",
        None,
        None,
    ),
    "reserved_word_as_layer_name": (
        m("input = Linear(2)"),
        (3, 3, 8),
        "'input' is a reserved word and cannot be used as a name",
        ["choose another name, e.g. 'input_'"],
        ["reserved words: model, block, input, output, loss, optimizer, schedule, true, false, int"],
    ),
    "reserved_word_model_as_layer_name": (
        m("model = Linear(2)"),
        (3, 3, 8),
        "'model' is a reserved word and cannot be used as a name",
        None,
        None,
    ),
    "reserved_word_as_model_name": (
        "model loss {\n  input [4]\n  Linear(2)\n}\n",
        (1, 7, 11),
        "'loss' is a reserved word and cannot be used as a name",
        None,
        None,
    ),
    "model_without_name": (
        "model {\n  input [4]\n}\n",
        (1, 7, 8),
        "missing model name after 'model'",
        ["write 'model Name { ... }'"],
        None,
    ),
    "model_without_brace": (
        "model A\n  input [4]\n}\n",
        (2, 3, 8),
        "expected '{' after 'model A', found 'input'",
        ["write 'model A { ... }'"],
        None,
    ),
    "unmatched_closing_brace": (
        m("Linear(2)") + "}\n",
        (5, 1, 2),
        "unmatched '}'",
        ["remove it"],
        ["model 'A' was closed by the '}' at 4:1"],
    ),
    "statement_after_early_brace": (
        "model A {\n  input [4]\n}\n  Linear(2)\n}\n",
        (4, 3, 9),
        "'Linear' is outside any model",
        ["statements go inside a model: 'model Name { ... }'"],
        ["model 'A' was closed by the '}' at 3:1"],
    ),
    "statement_outside_any_model": (
        "Linear(2)\n",
        (1, 1, 7),
        "'Linear' is outside any model",
        None,
        [],
    ),
    "model_keyword_missing": (
        "Net {\n  input [4]\n}\n",
        (1, 1, 4),
        "missing 'model' before 'Net'",
        ["write 'model Net { ... }'"],
        [],
    ),
    "model_keyword_capitalized": (
        "Model Net {\n  input [4]\n}\n",
        (1, 1, 6),
        "'Model' should be 'model'",
        ["keywords are lower case"],
        [],
    ),
    "loss_without_name": (m("Linear(2)", "loss"), (5, 1, 2), "missing loss name after 'loss'", None, None),
    "optimizer_without_name": (
        m("Linear(2)", "optimizer 0.1"),
        (4, 13, 16),
        "missing optimizer name after 'optimizer'",
        ["write 'optimizer SGD(lr=0.1)'"],
        None,
    ),
    "comma_between_statements": (
        m("Linear(2), ReLU"),
        (3, 12, 13),
        "statements are not separated by ','",
        ["remove the ','"],
        None,
    ),
    "unmatched_rpar": (m("Linear(2))"), (3, 12, 13), "unmatched ')'", None, None),
    "equal_without_name": (m("= Linear(2)"), (3, 3, 4), "missing layer name before '='", None, None),
    "unexpected_character": (m("Linear(2) @"), (3, 13, 14), "unexpected character '@'", [], None),
    "semicolon": (
        m("Linear(2);"),
        (3, 12, 13),
        "unexpected character ';'",
        ["statements need no separator; remove the ';'"],
        None,
    ),
    "quoted_name": (
        m("Linear(2, init='he_normal')"),
        (3, 18, 19),
        'unexpected character "\'"',
        ["there are no strings; write names bare, e.g. init=he_normal"],
        None,
    ),
    "colon_instead_of_equal": (
        m("fc1: Linear(2)"),
        (3, 6, 7),
        "unexpected character ':'",
        ["name a layer with '=', e.g. 'fc1 = Linear(10)'"],
        None,
    ),
    "non_ascii_character_alone": (m("Linear(2) →"), (3, 13, 14), "unexpected character '→' (U+2192)", None, None),
    "control_character": (m("Linear(2)\x00"), (3, 12, 13), "unexpected character U+0000", None, None),
    "name_with_minus": (
        m("fc-1 = Linear(2)"),
        (3, 3, 7),
        "'fc-1' is not a valid name or number",
        ["names use ASCII letters, digits and '_', and do not start with a digit"],
        None,
    ),
    "name_starting_with_digit": (m("1fc = Linear(2)"), (3, 3, 6), "'1fc' is not a valid name or number", None, None),
    "name_with_non_ascii_letter": (m("fcé = Linear(2)"), (3, 3, 6), "'fcé' is not a valid name or number", None, None),
    "malformed_number": (m("Linear(1.5.2)"), (3, 10, 15), "'1.5.2' is not a valid name or number", None, None),
    "number_with_too_many_digits": (
        m("Linear(" + "9" * 200 + ")"),
        (3, 10, 210),
        "number too large (200 digits)",
        None,
        None,
    ),
}


@pytest.mark.parametrize("case", SYNTAX, ids=str)
def test_syntax_errors(case):
    source, span, message, helps, notes = SYNTAX[case]
    diag = check(source, span, message, helps, notes)
    assert len(errors(source)) == 1, "a syntax error is reported once, with no follow-on errors"
    assert diag.span.line <= len(source.split("\n"))


def test_parsing_resumes_at_the_next_model_after_a_syntax_error():
    source = (
        m("Linear(2", "ReLU") + m("Linear(2)", input="[4,]", name="B") + m("Linear(2)", name="C") + m("Relu(", name="D")
    )
    assert [(d.span.line, d.message) for d in errors(source)] == [
        (3, "missing ')' to close the arguments of 'Linear'"),
        (7, "stray ',' before ']'"),
        (16, "missing ')' to close the arguments of 'Relu'"),
    ]


def test_a_syntax_error_in_the_last_model_stops_there():
    source = m("Linear(2)", name="A") + "model B {\n  input [4]\n  Linear(2)\n  Relu\n"
    assert [d.message for d in errors(source)] == ["missing '}' to close model 'B'"]


def test_every_example_of_the_table_gets_its_own_message():
    """Each snippet of SYNTAX_EXAMPLES fails, and the table routes it to a builder that explains it."""
    from lark.exceptions import UnexpectedToken

    for builder, snippets in parser.SYNTAX_EXAMPLES:
        for snippet in snippets:
            with pytest.raises(UnexpectedToken) as info:
                parser._lark().parse(snippet)
            expected = builder(parser._failure(info.value, snippet))
            assert expected is not None, (builder.__name__, snippet)
            assert parser.syntax_diagnostic(info.value, snippet) == expected, (builder.__name__, snippet)


def test_syntax_error_messages_never_fall_back_to_lark_text():
    for source, *_ in SYNTAX.values():
        text = CompileError(errors(source), "bad.nn", source).render()
        for lark_word in ("Token(", "UnexpectedToken", "UnexpectedCharacters", "Expected one of", "$END", "RPAR"):
            assert lark_word not in text


def test_visit_errors_are_unwrapped(monkeypatch):
    """An exception inside the transformer surfaces as itself, never as lark's VisitError."""

    def boom(self, token):
        raise ZeroDivisionError("inside the transformer")

    monkeypatch.setattr(parser._ToAst, "_number", boom)
    with pytest.raises(ZeroDivisionError):
        parser.parse(m("Linear(2)"))


# ---------------------------------------------------------------------------------------------------------------------
# Unknown names, with a suggestion


NAMES = {
    "layer_case": (m("Relu"), (3, 3, 7), "unknown layer 'Relu'", ["did you mean 'ReLU'?"]),
    "layer_typo": (m("Linaer(2)"), (3, 3, 9), "unknown layer 'Linaer'", ["did you mean 'Linear'?"]),
    "layer_unrelated": (m("Transformer(2)"), (3, 3, 14), "unknown layer 'Transformer'", []),
    "argument": (m("Linear(2, bais=true)"), (3, 13, 17), "Linear has no argument 'bais'", ["did you mean 'bias'?"]),
    "init": (
        m("Linear(2, init=he_nromal)"),
        (3, 18, 27),
        "unknown initializer 'he_nromal'",
        ["did you mean 'he_normal'?"],
    ),
    "loss": (
        m("Linear(2)", "loss CrossEntorpy"),
        (4, 8, 20),
        "unknown loss 'CrossEntorpy'",
        ["did you mean 'CrossEntropy'?"],
    ),
    "loss_prefix": (m("Linear(2)", "loss Cross"), (4, 8, 13), "unknown loss 'Cross'", ["did you mean 'CrossEntropy'?"]),
    "optimizer": (
        m("Linear(2)", "optimizer sgd(lr=0.1)"),
        (4, 13, 16),
        "unknown optimizer 'sgd'",
        ["did you mean 'SGD'?"],
    ),
    "optimizer_argument": (
        m("Linear(2)", "optimizer SGD(lr=0.1, momentun=0.9)"),
        (4, 25, 33),
        "SGD has no argument 'momentun'",
        ["did you mean 'momentum'?"],
    ),
}


@pytest.mark.parametrize("case", NAMES, ids=str)
def test_unknown_names(case):
    source, span, message, helps = NAMES[case]
    diag = check(source, span, message, helps)
    if message.startswith("unknown"):
        # With a suggestion the list of every known name would only be noise.
        assert bool(diag.notes) != bool(helps)
        assert all(n.startswith(("known layers: ", "known losses: ", "known optimizers: ")) for n in diag.notes)
    else:
        assert diag.notes[0].startswith("signature: ")


@needs("LeakyReLU")
def test_unknown_layer_suggests_leaky_relu():
    check(m("LeakyRelu(alpha=0.1)"), (3, 3, 12), "unknown layer 'LeakyRelu'", ["did you mean 'LeakyReLU'?"])
    check(m("leakyrelu"), (3, 3, 12), "unknown layer 'leakyrelu'", ["did you mean 'LeakyReLU'?"])


@needs("Adam")
def test_unknown_optimizer_suggests_adam():
    check(m("Linear(2)", "optimizer Adma"), (4, 13, 17), "unknown optimizer 'Adma'", ["did you mean 'Adam'?"])


def test_ambiguous_prefix_lists_the_candidates():
    if not {"xavier_normal", "xavier_uniform"} <= set(INITS):
        pytest.skip("needs the xavier initializers")
    diag = first(m("Linear(2, init=xavier)"))
    assert diag.helps == ["did you mean 'xavier_normal' or 'xavier_uniform'?"]


def test_edit_distance_and_did_you_mean():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("he_nromal", "he_normal") == 1  # a transposition is one edit
    assert edit_distance("", "abc") == 3
    assert did_you_mean("relu", ["ReLU", "Tanh"]) == "ReLU"
    assert did_you_mean("TANH", ["ReLU", "Tanh"]) == "Tanh"
    assert did_you_mean("Lineer", ["Linear", "Flatten"]) == "Linear"
    assert did_you_mean("Transformer", ["Linear", "Flatten"]) is None
    assert did_you_mean("x" * 10_000, ["Linear"]) is None


# ---------------------------------------------------------------------------------------------------------------------
# Argument types and values


ARGUMENTS = {
    "negative_size": (m("Linear(-2)"), (3, 10, 12), "argument 'out' of Linear must be positive, got -2"),
    "zero_size": (m("Linear(0)"), (3, 10, 11), "argument 'out' of Linear must be positive, got 0"),
    "float_for_int": (m("Linear(2.5)"), (3, 10, 13), "argument 'out' of Linear must be an integer, got 2.5"),
    "int_for_bool": (m("Linear(2, bias=1)"), (3, 18, 19), "argument 'bias' of Linear must be true or false, got 1"),
    "number_for_name": (
        m("Linear(2, init=3)"),
        (3, 18, 19),
        "argument 'init' of Linear must be a name such as he_normal, got 3",
    ),
    "name_for_number": (
        m("Linear(2)", "optimizer SGD(lr=fast)"),
        (4, 20, 24),
        "argument 'lr' of SGD must be a number, got fast",
    ),
    "huge_int": (
        m("Linear(99999999999999999999)"),
        (3, 10, 30),
        "argument 'out' of Linear is too large: 99999999999999999999",
    ),
    "infinite_float": (
        m("Linear(2)", "optimizer SGD(lr=1e999)"),
        (4, 20, 25),
        "argument 'lr' of SGD must be a finite number",
    ),
    "negative_float": (
        m("Linear(2)", "optimizer SGD(momentum=-0.5)"),
        (4, 26, 30),
        "argument 'momentum' of SGD must not be negative, got -0.5",
    ),
    "positional_after_keyword": (
        m("Linear(out=2, true)"),
        (3, 17, 21),
        "positional argument follows a keyword argument",
    ),
    "repeated_keyword": (m("Linear(out=2, out=3)"), (3, 17, 22), "argument 'out' of Linear is given twice"),
    "keyword_repeats_positional": (m("Linear(2, out=3)"), (3, 13, 18), "argument 'out' of Linear is given twice"),
    "too_many_positional": (m("Linear(1, 2, 3)"), (3, 16, 17), "Linear takes at most 2 positional arguments, got 3"),
    "missing_required": (m("Linear"), (3, 3, 9), "Linear needs argument 'out'"),
    "missing_required_with_parentheses": (m("Linear()"), (3, 3, 11), "Linear needs argument 'out'"),
}


@pytest.mark.parametrize("case", ARGUMENTS, ids=str)
def test_argument_errors(case):
    source, span, message = ARGUMENTS[case]
    check(source, span, message)


def test_argument_error_notes():
    assert first(m("Linear(out=2, out=3)")).notes == ["first given at 3:10"]
    assert first(m("Linear(2, out=3)")).notes == ["already given by position at 3:10"]
    assert first(m("Linear(99999999999999999999)")).notes == ["the limit is 2147483647"]
    positional = first(m("Linear(out=2, true)"))
    assert positional.helps == ["put positional arguments first, or name this one"]
    assert positional.notes[0].startswith("signature: Linear(")


def test_positional_after_keyword_is_reported_alone():
    """No follow-on 'given twice' or type errors from guessing which parameter the value was for."""
    assert [d.message for d in errors(m("Linear(out=2, true, 3)"))] == [
        "positional argument follows a keyword argument"
    ] * 2


@needs("Conv1D")
@pytest.mark.parametrize(
    "call, span, message",
    [
        ("Conv1D(8, k=0)", (3, 15, 16), "argument 'k' of Conv1D must be positive, got 0"),
        ("Conv1D(8, -3)", (3, 13, 15), "argument 'k' of Conv1D must be positive, got -3"),
        ("Conv1D(8, 2, stride=0)", (3, 23, 24), "argument 'stride' of Conv1D must be positive, got 0"),
        ("Conv1D(-8, 2)", (3, 10, 12), "argument 'out' of Conv1D must be positive, got -8"),
    ],
)
def test_window_argument_values(call, span, message):
    check(m(call, input="[16, 2]"), span, message)


@needs("MaxPool1D", "AvgPool1D")
@pytest.mark.parametrize(
    "call, span, message",
    [
        ("MaxPool1D(0)", (3, 13, 14), "argument 'k' of MaxPool1D must be positive, got 0"),
        ("AvgPool1D(2, stride=0)", (3, 23, 24), "argument 'stride' of AvgPool1D must be positive, got 0"),
    ],
)
def test_pool_argument_values(call, span, message):
    check(m(call, input="[16, 2]"), span, message)


@needs("LeakyReLU")
def test_alpha_must_be_a_number():
    check(m("LeakyReLU(alpha=fast)"), (3, 19, 23), "argument 'alpha' of LeakyReLU must be a number, got fast")
    check(m("LeakyReLU(alpha=true)"), (3, 19, 23), "argument 'alpha' of LeakyReLU must be a number, got true")


# ---------------------------------------------------------------------------------------------------------------------
# Shapes


def test_linear_in_mismatch():
    check(
        m("fc = Linear(10, in=32)", input="[64]"),
        (3, 3, 25),
        "shape error in layer 'fc': Linear(in=32) receives [64]",
        notes=["[64] → fc Linear expects [32]"],
    )


def test_linear_needs_a_flat_input():
    diag = first(m("fc1 = Linear(8)", "fc2 = Linear(2)", input="[4, 3]"))
    assert diag.message.startswith("shape error in layer 'fc1': Linear expects a flat vector")
    assert where(diag) == (3, 3, 18)
    assert diag.notes == ["[4, 3] → fc1 Linear expects [in]"]


@needs("Conv1D")
def test_chain_note_leads_to_the_failing_layer():
    diag = first(m("fc1 = Linear(128)", "conv = Conv1D(8, 3)", input="[64]"))
    assert diag.message.startswith("shape error in layer 'conv': Conv1D expects a signal [length, channels], got [128]")
    assert where(diag) == (4, 3, 22)
    assert diag.notes[0].startswith("[64] → fc1 Linear → [128] → conv Conv1D expects [length, ")


@needs("Conv1D")
def test_kernel_longer_than_the_signal():
    diag = first(m("conv = Conv1D(8, k=5)", input="[4, 2]"))
    assert diag.message == "shape error in layer 'conv': Conv1D window k=5 is longer than the signal (length 4)"
    assert where(diag) == (3, 3, 24)
    assert diag.notes[0].startswith("[4, 2] → conv Conv1D expects [length, ")


@needs("MaxPool1D")
def test_pool_larger_than_its_input():
    diag = first(m("MaxPool1D(8)", input="[4, 2]"))
    assert (
        diag.message == "shape error in layer 'maxpool1d_1': MaxPool1D window k=8 is longer than the signal (length 4)"
    )
    assert where(diag) == (3, 3, 15)
    assert diag.notes[0].startswith("[4, 2] → maxpool1d_1 MaxPool1D expects [length, ")


def test_cross_entropy_needs_class_scores():
    check(
        m("ReLU", "loss CrossEntropy", input="[4, 4]"),
        (4, 3, 20),
        "shape error in the loss: CrossEntropy needs logits of shape [classes], got [4, 4]",
        notes=["[4, 4] → relu_1 ReLU → [4, 4] → loss CrossEntropy"],
    )


@needs("Conv1D")
def test_cross_entropy_after_a_signal_layer():
    diag = first(m("Conv1D(4, 3)", "loss CrossEntropy", input="[8, 2]"))
    assert diag.message == "shape error in the loss: CrossEntropy needs logits of shape [classes], got [6, 4]"
    assert diag.notes == ["[8, 2] → conv1d_1 Conv1D → [6, 4] → loss CrossEntropy"]


def test_long_chains_are_shortened():
    body = [f"fc{i} = Linear(8)" for i in range(1, 21)] + ["bad = Linear(2, in=3)"]
    note = first(m(*body, input="[8]")).notes[0]
    assert note == (
        "[8] → fc1 Linear → [8] → … → fc18 Linear → [8] → fc19 Linear → [8] → fc20 Linear → [8]"
        " → bad Linear expects [3]"
    )


def test_each_model_reports_its_own_shape_error():
    source = m("Linear(2, in=3)") + m("Linear(2, in=5)", name="B")
    assert [(d.span.line, d.message) for d in errors(source)] == [
        (3, "shape error in layer 'linear_1': Linear(in=3) receives [4]"),
        (7, "shape error in layer 'linear_1': Linear(in=5) receives [4]"),
    ]


# ---------------------------------------------------------------------------------------------------------------------
# Model-level rules


MODEL_LEVEL = {
    "no_input": ("model A {\n  Linear(2)\n}\n", (1, 7, 8), "model 'A' has no input statement"),
    "two_inputs": (
        m("input [5]", "Linear(2)"),
        (3, 3, 12),
        "each input of a model with several inputs needs a name, e.g. 'input pixels [64]'",
    ),
    "input_not_first": (
        "model A {\n  Linear(2)\n  input [4]\n}\n",
        (3, 3, 12),
        "'input' must come before the layers",
    ),
    "duplicate_layer_names": (m("a = Linear(2)", "a = ReLU"), (4, 3, 4), "'a' is defined twice"),
    "empty_model": ("model A {}\n", (1, 7, 8), "model 'A' is empty"),
    "no_layers": (m(), (1, 7, 8), "model 'A' has no layers"),
    "loss_not_last": (m("loss MSE", "Linear(2)"), (3, 3, 11), "the loss must come after every layer"),
    "optimizer_not_after_layers": (
        m("optimizer SGD", "Linear(2)"),
        (3, 3, 16),
        "the optimizer must come after every layer",
    ),
    "two_losses": (m("Linear(2)", "loss MSE", "loss MSE"), (5, 3, 11), "a model has at most one loss statement"),
    "two_optimizers": (
        m("Linear(2)", "optimizer SGD", "optimizer SGD"),
        (5, 3, 16),
        "a model has at most one optimizer statement",
    ),
    "same_class_name": (m("Linear(2)") + m("Linear(2)"), (5, 7, 8), "two models are named 'A'"),
    "layer_name_keyword": (m("class = Linear(2)"), (3, 3, 8), "name 'class' is a Python keyword"),
    "layer_name_soft_keyword": (m("match = Linear(2)"), (3, 3, 8), "name 'match' is a Python keyword"),
    "model_name_keyword": (m("Linear(2)", name="lambda"), (1, 7, 13), "model name 'lambda' is a Python keyword"),
    "model_name_soft_keyword": (m("Linear(2)", name="case"), (1, 7, 11), "model name 'case' is a Python keyword"),
    "model_name_np": (m("Linear(2)", name="np"), (1, 7, 9), "model name 'np' is reserved by the generated module"),
    "model_name_underscore": (
        m("Linear(2)", name="_views"),
        (1, 7, 13),
        "model name '_views' is reserved by the generated module",
    ),
    "model_name_builtin": (
        m("Linear(2)", name="float"),
        (1, 7, 12),
        "model name 'float' would shadow the Python builtin 'float'",
    ),
    "model_name_stdlib": (
        m("Linear(2)", name="sys"),
        (1, 7, 10),
        "model name 'sys' would shadow the standard-library module 'sys'",
    ),
    "input_without_dimensions": (
        m("Linear(2)", input="[]"),
        (2, 3, 11),
        "input needs at least one dimension, e.g. 'input [64]'",
    ),
    "input_zero": (m("Linear(2)", input="[0]"), (2, 10, 11), "input dimensions must be positive integers, got 0"),
    "input_fraction": (
        m("Linear(2)", input="[4.5]"),
        (2, 10, 13),
        "input dimensions must be positive integers, got 4.5",
    ),
    "input_huge": (m("Linear(2)", input="[99999999999]"), (2, 10, 21), "input dimension is too large: 99999999999"),
}


@pytest.mark.parametrize("case", MODEL_LEVEL, ids=str)
def test_model_level_errors(case):
    source, span, message = MODEL_LEVEL[case]
    check(source, span, message)


def test_model_level_notes_point_at_the_other_place():
    assert first(m("input [5]", "Linear(2)")).notes == ["the first input is at 2:3"]
    assert first(m("a = Linear(2)", "a = ReLU")).notes == ["first defined at 3:3"]
    assert first(m("Linear(2)") + m("Linear(2)")).notes == ["the first is at 1:7"]
    assert first(m("loss MSE", "Linear(2)")).notes == ["layer 'Linear' comes after it, at 4:3"]
    assert first(m("loss MSE", "fc = Linear(2)")).notes == ["layer 'fc' comes after it, at 4:3"]
    known = first(m("Transformer")).notes[0]
    assert known.startswith("known layers: ") and {"Linear", "ReLU"} <= set(known.split(": ", 1)[1].split(", "))
    assert first(m("class = Linear(2)")).helps == ["rename it, e.g. 'class_'"]


def test_empty_file_has_no_position():
    diag = first("# nothing here\n")
    assert diag.message == "no model in this file" and diag.span is None
    assert render_diagnostic(diag, "bad.nn", "").startswith("bad.nn: error: no model in this file")


def test_reserved_class_names_cover_every_top_level_name_of_the_generated_module():
    """A model named like anything the module binds at top level (imports, DTYPE, helpers) is refused."""
    code = nncompile.compile_source(m("Linear(2)", name="Probe"))
    bound = set()
    for node in python_ast.parse(code).body:
        if isinstance(node, (python_ast.Import, python_ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (python_ast.FunctionDef, python_ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, python_ast.Assign):
            bound |= {t.id for t in node.targets if isinstance(t, python_ast.Name)}
    bound.discard("Probe")
    assert bound, "expected the module to define something"
    for name in sorted(bound):
        if keyword.iskeyword(name):
            continue
        try:
            nncompile.compile_source(m("Linear(2)", name=name))
        except CompileError:
            continue
        pytest.fail(
            f"a model named {name!r} compiles, but its class would replace the module's own {name!r}: start the "
            "helper's name with '_' or add it to RESERVED_CLASS_NAMES in nncompile/ir.py"
        )


# ---------------------------------------------------------------------------------------------------------------------
# Several errors, limits, rendering


def test_independent_errors_are_all_reported_in_source_order():
    source = m("Relu", "Linear(0)", "a = Tanhh", "a = ReLU", "Linear(2, bais=true)", "loss Cross")
    assert [(d.span.line, d.message) for d in errors(source)] == [
        (3, "unknown layer 'Relu'"),
        (4, "argument 'out' of Linear must be positive, got 0"),
        (5, "unknown layer 'Tanhh'"),
        (6, "'a' is defined twice"),
        (7, "Linear has no argument 'bais'"),
        (8, "unknown loss 'Cross'"),
    ]


def test_errors_in_several_models_are_sorted_by_position():
    source = m("Relu", name="A") + m("Linear(0)", name="B")
    assert [d.span.line for d in errors(source)] == [3, 7]


def test_error_count_is_limited():
    source = m(*[f"Nope{i}" for i in range(50)])
    with pytest.raises(CompileError) as info:
        nncompile.compile_source(source, filename="bad.nn")
    assert len(info.value.diagnostics) == Reporter.limit
    assert info.value.truncated
    assert info.value.render().endswith(f"bad.nn: note: too many errors; only the first {Reporter.limit} are shown")


def test_identical_diagnostics_are_reported_once():
    diag = Diagnostic("same", Span(1, 1, 1, 2))
    assert len(CompileError([diag, Diagnostic("same", Span(1, 1, 1, 2))]).diagnostics) == 1


def test_rendering_layout():
    source = m("Linear(2, bais=true)")
    text = CompileError(errors(source), "bad.nn", source).render()
    assert text.splitlines() == [
        "bad.nn:3:13: error: Linear has no argument 'bais'",
        "   3 |   Linear(2, bais=true)",
        "     |             ^^^^",
        "  help: did you mean 'bias'?",
        "  note: signature: Linear(out, in=<inferred>, bias=true, init=he_normal)",
    ]


def test_rendering_keeps_columns_with_tabs_and_control_characters():
    source = "model A {\n\tinput [4]\n\tRelu\x07\n}\n"
    text = CompileError(errors(source.replace("\x07", "")), "bad.nn", source).render()
    assert text.splitlines()[1:3] == ["   3 |  Relu\N{REPLACEMENT CHARACTER}", "     |  ^^^^"]


def test_rendering_counts_lines_like_the_parser():
    """Only '\\n' ends a line: a form feed or CRLF line ending does not shift the shown line."""
    source = "model A {\r\n  input [4]\x0c\r\n  Relu\r\n}\r\n"
    diag = first(source)
    assert where(diag) == (3, 3, 7)
    lines = render_diagnostic(diag, "bad.nn", source).splitlines()
    assert lines[1] == "   3 |   Relu"


def test_rendering_a_huge_line_shows_a_window_around_the_span():
    source = "model A { input [4] " + "ReLU " * 2500 + "Relu " + "ReLU " * 2500 + "}\n"
    text = CompileError(errors(source), "bad.nn", source).render()
    shown, caret = text.splitlines()[1:3]
    assert len(shown) < 200 and shown.startswith("   1 | …") and shown.endswith("…")
    assert shown[caret.index("^") : caret.index("^") + 4] == "Relu"


def test_diagnostics_are_structured_data():
    diag = first(m("Relu"))
    assert diag.to_dict() == {
        "severity": "error",
        "message": "unknown layer 'Relu'",
        "span": {"line": 3, "column": 3, "end_line": 3, "end_column": 7},
        "helps": ["did you mean 'ReLU'?"],
        "notes": diag.notes,
    }


def test_a_500_layer_model_compiles_in_under_a_second():
    import time

    body = []
    for i in range(250):
        body += [f"fc{i} = Linear(16)", "ReLU"]
    source = m(*body, "loss MSE", input="[16]")
    nncompile.compile_source(m("Linear(2)"))  # warm up: grammar, registry and templates load once per process
    start = time.perf_counter()
    code = nncompile.compile_source(source)
    elapsed = time.perf_counter() - start
    assert "fc249" in code
    assert elapsed < 1.0, f"500 layers took {elapsed:.2f} s"
