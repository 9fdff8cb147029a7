"""The docs: the layer reference is generated from the registry and must be current; the language reference's
examples compile (or fail, or warn, as marked) exactly as shown."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from conftest import ROOT

from nncompile import CompileError, compile_source, docs
from nncompile.registry import LAYERS, LOSSES, OPTIMIZERS, canonical


def test_layer_reference_is_up_to_date():
    current = (ROOT / "docs" / "layers.md").read_text(encoding="utf-8")
    assert current == docs.render(), "docs/layers.md is stale; run: python -m nncompile.docs > docs/layers.md"


def test_every_entry_is_documented_with_its_formulas():
    text = docs.render()
    for entry in canonical(LAYERS) + canonical(LOSSES) + canonical(OPTIMIZERS):
        assert f"### {entry.name}" in text
        assert entry.forward_formula and entry.forward_formula in text
        assert entry.summary
    for layer in canonical(LAYERS):
        assert layer.shape_rule, layer.name
        for formula in layer.backward_formulas:
            assert formula in text


# ---- docs/language.md: every example model compiles ----------------------------------------------------------

LANGUAGE = ROOT / "docs" / "language.md"
# A fenced block, maybe right after an HTML comment that marks it: <!-- error --> or <!-- warning -->.
FENCE = re.compile(r"(?:<!-- (error|warning) -->\n)?```[^\n]*\n(.*?)```", re.DOTALL)


@dataclass
class Example:
    line: int
    marker: str | None  # None: compiles cleanly; "error": raises CompileError; "warning": compiles with warnings
    source: str
    shown: str | None  # the fenced block right after it when that shows diagnostics (starts with "model.nn:")


def language_examples() -> list[Example]:
    """Each fenced block of docs/language.md that holds a model, with its marker and the diagnostics shown after it."""
    text = LANGUAGE.read_text(encoding="utf-8")
    blocks = [(m, text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]
    examples = []
    for i, (match, line) in enumerate(blocks):
        if "model " not in match.group(2):
            continue
        shown = None
        if i + 1 < len(blocks):
            following = blocks[i + 1][0]
            if not text[match.end() : following.start()].strip() and following.group(2).startswith("model.nn:"):
                shown = following.group(2).rstrip("\n")
        examples.append(Example(line, match.group(1), match.group(2), shown))
    return examples


EXAMPLES = language_examples()


def test_language_reference_has_its_examples():
    sources = [e.source for e in EXAMPLES]
    for name in ("model ResidualMLP", "block Residual(", "model TwoInputs", "input [64]"):
        assert any(name in s for s in sources), name
    assert {e.marker for e in EXAMPLES} == {None, "error", "warning"}


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"line{e.line}" for e in EXAMPLES])
def test_language_reference_example_compiles(example):
    """Unmarked examples compile without warnings; marked ones fail or warn, with the diagnostics shown after them."""
    warnings = []
    if example.marker == "error":
        with pytest.raises(CompileError) as failure:
            compile_source(example.source, filename="model.nn", on_warning=warnings.append)
        printed = failure.value.render()
    else:
        code = compile_source(example.source, filename="model.nn", on_warning=warnings.append)
        compile(code, "model.py", "exec")
        printed = "\n".join(warnings)
        assert bool(warnings) == (example.marker == "warning"), printed
    if example.shown is not None:
        assert printed == example.shown
    else:
        assert example.marker is None, "a marked example shows the diagnostics it gives, in a block right after it"
