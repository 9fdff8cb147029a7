"""Initializers draw from their documented distributions, with Linear's and Conv1D's fan-in and fan-out."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build

import nncompile

# Linear(500) on [400]: fan_in 400, fan_out 500.  Conv1D(120, 5) on [8, 80]: fan_in 5·80, fan_out 5·120.
LINEAR = ("model Big {{ input [400] layer = Linear(500, init={init}) }}", 400, 500)
CONV = ("model Big {{ input [8, 80] layer = Conv1D(120, 5, init={init}) }}", 400, 600)

# name: (kind, scale as a function of fan_in, fan_out); kind is normal (scale = std) or uniform (scale = bound)
EXPECTED = {
    "normal": ("normal", lambda i, o: 1.0),
    "uniform": ("uniform", lambda i, o: 1.0),
    "he_normal": ("normal", lambda i, o: np.sqrt(2 / i)),
    "he_uniform": ("uniform", lambda i, o: np.sqrt(6 / i)),
    "xavier_normal": ("normal", lambda i, o: np.sqrt(2 / (i + o))),
    "xavier_uniform": ("uniform", lambda i, o: np.sqrt(6 / (i + o))),
}


@pytest.mark.parametrize("layer", [LINEAR, CONV], ids=["linear", "conv1d"])
@pytest.mark.parametrize("init", sorted(EXPECTED))
def test_random_initializers_have_their_documented_distribution(init, layer):
    template, fan_in, fan_out = layer
    weight = build(template.format(init=init)).params["layer.weight"]
    kind, scale = EXPECTED[init]
    scale = scale(fan_in, fan_out)
    # 200 000 and 48 000 draws: the sample mean is within 0.02 std and the sample std within 2 % of the true ones
    # (over 4 standard errors).
    if kind == "normal":
        std = scale
        assert abs(np.mean(np.abs(weight)) - std * np.sqrt(2 / np.pi)) < 0.02 * std  # the shape is Gaussian
    else:
        std = scale / np.sqrt(3)
        assert weight.min() >= -scale and weight.max() <= scale
        assert weight.min() < -0.99 * scale and weight.max() > 0.99 * scale
    assert abs(weight.mean()) < 0.02 * std
    assert abs(weight.std() - std) < 0.02 * std


@pytest.mark.parametrize(("init", "value"), [("zeros", 0.0), ("ones", 1.0)])
def test_constant_initializers(init, value):
    net = build(LINEAR[0].format(init=init).replace("500", "5").replace("400", "4"))
    assert (net.params["layer.weight"] == value).all()
    assert (net.params["layer.bias"] == 0).all()


def test_conv_bias_starts_at_zero_and_inits_are_seeded():
    source = "model N { input [8, 2] layer = Conv1D(3, 2, bias=true, init=he_uniform) }"
    a, b = build(source, seed=5), build(source, seed=5)
    assert not a.params["layer.bias"].any()
    np.testing.assert_array_equal(a.params["layer.weight"], b.params["layer.weight"])
    assert build(source, dtype="float32").params["layer.weight"].dtype == np.float32


def test_generated_init_lines_show_their_formula():
    code = nncompile.compile_source("model N { input [8, 2] c = Conv1D(3, 2, init=xavier_uniform) }")
    formula = "U(-√(6 / (fan_in + fan_out)), √(6 / (fan_in + fan_out)))"
    assert f"# c.weight: xavier_uniform, {formula}, fan_in=4, fan_out=6" in code
    assert "rng.uniform(-1.0, 1.0, (2, 2, 3)) * np.sqrt(6.0 / (4 + 6))" in code
