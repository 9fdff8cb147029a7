"""The layer catalogue is complete and checked: every entry has its template, golden case and gradient test;
shape and argument errors are clear; in-place reuse stays correct around view layers (Flatten)."""

from __future__ import annotations

import importlib
import re

import numpy as np
import pytest
from conftest import ROOT, build, numeric_grad, rel_error

import nncompile
from nncompile.compiler import compile_models
from nncompile.layers.activations import LeakyReLU
from nncompile.lower import lower
from nncompile.registry import INITS, LAYERS, LOSSES, OPTIMIZERS, canonical, load_all

load_all()
GOLDEN_SOURCES = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests" / "golden").glob("*.nn"))
# Test modules whose module-level CASES dict holds finite-difference cases: name → (layer statements, input
# shape[, losses]).
GRADIENT_CASE_MODULES = [
    importlib.import_module(name)
    for name in (
        "test_gradients",
        "test_gradients_catalogue",
        "test_normalization",
        "test_pooling2d",
        "test_activations_losses_v2",
        "test_conv2d",
    )
]
GRADIENT_CASES = "\n".join(layers for module in GRADIENT_CASE_MODULES for layers, *_ in module.CASES.values())
# The losses those cases are checked with: each case's own list, or test_gradients' LOSSES for all of its cases.
GRADIENT_LOSSES = "\n".join(
    [*GRADIENT_CASE_MODULES[0].LOSSES]
    + [
        loss
        for module in GRADIENT_CASE_MODULES
        for case in module.CASES.values()
        if len(case) > 2 and isinstance(case[2], (list, tuple))
        for loss in case[2]
    ]
)


def _used(name: str, text: str) -> bool:
    return re.search(rf"\b{name}\b", text) is not None


@pytest.mark.parametrize("entry", canonical(LAYERS) + canonical(LOSSES) + canonical(OPTIMIZERS), ids=lambda e: e.name)
def test_every_entry_has_its_template_golden_case_and_gradient_test(entry):
    template = (ROOT / "templates" / entry.template).read_text(encoding="utf-8")
    if entry in canonical(LAYERS):
        single = entry.arity == (1, 1)
        for macro in ("forward(L)", "backward_params(L)", "backward_input(L)" if single else "backward_input_at(L, I)"):
            assert f"{{% macro {macro} %}}" in template, macro
        assert entry.summary and entry.shape_rule and entry.forward_formula and entry.backward_formulas
        assert all(arg.doc for arg in entry.args), entry.name
        assert _used(entry.name, GRADIENT_CASES), f"{entry.name} has no finite-difference case"
    if entry in canonical(LOSSES):
        assert _used(entry.name, GRADIENT_LOSSES), f"{entry.name} has no finite-difference case"
    assert _used(entry.name, GOLDEN_SOURCES), f"{entry.name} appears in no golden case"


def test_aliases_compile_to_their_entry():
    assert LAYERS["StableSigmoid"] is LAYERS["Sigmoid"]
    net = build("model Net { input [3] StableSigmoid }")
    np.testing.assert_allclose(net.forward(np.array([[-1.0, 0.0, 2.0]])), 1 / (1 + np.exp(-np.array([[-1, 0, 2.0]]))))


def test_all_eight_initializers_are_registered():
    expected = {"normal", "uniform", "zeros", "ones", "he_normal", "he_uniform", "xavier_normal", "xavier_uniform"}
    assert set(INITS) == expected


def _error(source: str) -> str:
    with pytest.raises(nncompile.CompileError) as info:
        nncompile.compile_source(source, filename="m.nn")
    return str(info.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("model N { input [8] Conv1D(4, 3) }", "Conv1D expects a signal [length, channels], got [8]"),
        ("model N { input [8] Conv1D(4, 3) }", "a one-channel signal of length 8 is [8, 1]"),
        ("model N { input [4, 2, 2] Conv1D(4, 3) }", "Conv1D expects a signal [length, channels], got [4, 2, 2]"),
        ("model N { input [2, 3] Conv1D(4, 3) }", "Conv1D window k=3 is longer than the signal (length 2)"),
        ("model N { input [8, 3] Conv1D(4) }", "Conv1D needs argument 'k'"),
        ("model N { input [8, 3] Conv1D(4, 0) }", "argument 'k' of Conv1D must be positive"),
        ("model N { input [8, 3] Conv1D(4, 2, stride=0) }", "argument 'stride' of Conv1D must be positive"),
        ("model N { input [8] MaxPool1D(2) }", "MaxPool1D expects a signal [length, channels], got [8]"),
        ("model N { input [8, 2] AvgPool1D(9) }", "AvgPool1D window k=9 is longer than the signal (length 8)"),
        ("model N { input [8, 2] MaxPool1D(2, stride=-1) }", "argument 'stride' of MaxPool1D must be positive"),
        ("model N { input [4, 2] Flatten Conv1D(2, 2) }", "Conv1D expects a signal [length, channels], got [8]"),
        ("model N { input [4, 2] Linear(3) }", "Linear expects a flat vector"),
        ("model N { input [4] LeakyReLU(alpha=-0.1) }", "argument 'alpha' of LeakyReLU must not be negative"),
        ("model N { input [4] Linear(2) optimizer Adam(beta1=1) }", "argument 'beta1' of Adam must be in [0, 1)"),
        ("model N { input [4] Linear(2) optimizer Adam(lr=0) }", "argument 'lr' of Adam must be positive"),
        ("model N { input [4] Linear(2) optimizer Adam(betas=0.9) }", "Adam has no argument 'betas'"),
    ],
)
def test_shape_and_argument_errors_are_clear(source, message):
    assert message in _error(source)


def test_unknown_initializer_suggests_the_closest_name():
    text = _error("model N { input [4, 2] Conv1D(3, 2, init=xavier_norml) }")
    assert "unknown initializer 'xavier_norml'" in text
    assert "did you mean 'xavier_normal'?" in text


def test_pool_stride_defaults_to_k():
    net = build("model N { input [9, 2] MaxPool1D(3) }")
    assert net.output_shape == (3, 2)
    assert LAYERS["MaxPool1D"].signature() == "MaxPool1D(k, stride=k, padding=0)"


# ---- in-place reuse around view layers and layers whose backward reads their input ----


def _inplace(source: str) -> dict[str, bool]:
    (model,) = compile_models(source)
    return {view.name: view.inplace for view in lower(model).layers}


def test_elementwise_after_flatten_does_not_overwrite_an_output_that_backward_reads(rng):
    # Sigmoid's backward reads its output; ReLU after Flatten would overwrite it through the reshape view.
    source = "model N { input [4, 3] Conv1D(2, 2) Sigmoid Flatten ReLU Linear(2) loss MSE }"
    assert _inplace(source)["relu_1"] is False
    net = build(source)
    x, t = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 2))
    net.loss(x, t)
    net.zero_grad()
    dx = net.backward()
    assert rel_error(dx, numeric_grad(lambda: net.loss(x, t), x)) < 1e-6


def test_elementwise_after_flatten_reuses_a_buffer_nobody_reads():
    assert _inplace("model N { input [4, 3] Conv1D(2, 2) Flatten ReLU }")["relu_1"] is True
    assert _inplace("model N { input [4] Linear(3) LeakyReLU }")["leakyrelu_1"] is True


def test_elementwise_after_a_leading_flatten_leaves_the_callers_input_alone(rng):
    assert _inplace("model N { input [4, 3] Flatten ReLU }")["relu_1"] is False
    net = build("model N { input [4, 3] Flatten Softplus LeakyReLU }")
    x = rng.standard_normal((2, 4, 3))
    before = x.copy()
    net.forward(x)
    net.backward(np.ones((2, 12)))
    np.testing.assert_array_equal(x, before)


def test_elementwise_layer_whose_backward_reads_its_input_is_not_run_in_place(monkeypatch):
    source = "model N { input [4] Linear(3) LeakyReLU }"
    monkeypatch.setattr(LeakyReLU, "saves", frozenset({"input"}))
    assert _inplace(source)["leakyrelu_1"] is False
