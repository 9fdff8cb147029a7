"""The compiler refuses what it cannot honour: non-ASCII digits, impossible sizes; and reads every line break."""

from __future__ import annotations

import pytest
from conftest import build

import nncompile
from nncompile import CompileError


def _messages(source: str) -> list[str]:
    with pytest.raises(CompileError) as info:
        nncompile.compile_source(source, filename="m.nn")
    return [d.message for d in info.value.diagnostics]


@pytest.mark.parametrize("digit", ["\u09ea", "\u0664", "\uff14", "\u00b2"])
def test_only_ascii_digits_are_numbers(digit):
    # Python's int() reads '৪' (Bengali four) as 4; the language does not.
    messages = _messages(f"model M {{\n input [4]\n Linear({digit})\n}}\n")
    assert any("unexpected character" in m or "not a valid name or number" in m for m in messages), messages


def test_a_lone_carriage_return_ends_a_comment_and_a_line():
    net = build("model M {\r input [4] # a note\r ReLU\r Linear(2)\r}\r")
    assert [layer["type"] for layer in net.get_config()["layers"]] == ["ReLU", "Linear"]
    # Positions count the lone '\r' as a line break too.
    with pytest.raises(CompileError) as info:
        nncompile.compile_source("model M {\r input [4]\r Relu\r}\r")
    assert (info.value.diagnostics[0].span.line, info.value.diagnostics[0].message) == (3, "unknown layer 'Relu'")


def test_a_model_too_large_to_allocate_is_a_compile_error_naming_the_layer():
    source = "model Huge {\n input [100000]\n small = Linear(10)\n huge = Linear(2000000000)\n}\n"
    with pytest.raises(CompileError) as info:
        nncompile.compile_source(source, filename="m.nn")
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.message.startswith("layer 'huge' brings the model to ")
    assert "more than can be allocated" in diagnostic.message and diagnostic.span.line == 4


def test_per_sample_activations_too_large_to_allocate_are_a_compile_error():
    source = "model Wide {\n input [65536, 65536]\n ReLU\n Flatten\n}\n"
    messages = _messages(source)
    assert any("per-sample activation values" in m for m in messages)


@pytest.mark.parametrize("value", [123, None, b"model A { input [2] Linear(1) }"])
def test_load_and_export_name_what_they_take_for_a_value_that_is_no_path_or_text(value):
    for function in (nncompile.load, nncompile.export_onnx):
        with pytest.raises(TypeError, match=rf"nncompile.{function.__name__}: expected the path of a .nn file .* got"):
            function(value)
