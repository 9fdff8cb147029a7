"""The layer reference in docs/ is generated from the registry and must be current."""

from __future__ import annotations

from conftest import ROOT

from nncompile import docs
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
