"""Finite-difference checks (float64, central) of every layer and loss: inputs and every parameter."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import GRADIENT_TOLERANCE, build, check_gradients, numeric_grad, rel_error

TOLERANCE = GRADIENT_TOLERANCE

# (layer statements, input shape, loss, loss target kind)
CASES = {
    "linear": ("fc = Linear(7)", [5]),
    "linear_in_out": ("fc = Linear(5, 4, bias=false)", [5]),
    "relu": ("Linear(6)\n ReLU", [4]),
    "sigmoid": ("Linear(6)\n Sigmoid", [4]),
    "tanh": ("Linear(6)\n TanH", [4]),
    "sigmoid_first": ("Sigmoid\n Linear(3)", [4]),
    "relu_first": ("ReLU\n Linear(3)", [4]),
    "mlp": ("Linear(8)\n ReLU\n Linear(6)\n Tanh\n Linear(5)\n Sigmoid\n Linear(3)", [4]),
    # Graphs: the input x (the v1 form names it x) and values read by several layers.
    "residual_add": ("h = x -> Linear(4) -> Tanh\n (x, h) -> Add -> Linear(3)", [4]),
    "concat_three": ("a = x -> Linear(3) -> ReLU\n b = x -> Linear(2)\n (a, b, x) -> Concat -> Linear(3)", [4]),
    "multiply_gate": ("g = x -> Linear(4) -> Sigmoid\n (x, g) -> Multiply -> Linear(3)", [4]),
    "fan_out_three": ("h = Linear(5)\n a = h -> Tanh\n b = h -> Sigmoid\n (a, b, h) -> Add -> Linear(3)", [4]),
    "same_value_twice": ("h = Linear(4)\n s = (h, h) -> Multiply\n (s, h, h) -> Add -> Linear(3)", [4]),
}
LOSSES = ["CrossEntropy", "MSE"]


def _source(layers: str, shape, loss: str) -> str:
    return f"model Net {{\n input {shape}\n {layers}\n loss {loss}\n}}\n"


def _targets(net, loss: str, rng, batch: int, as_probs: bool = False):
    classes = net.output_shape[0]
    if loss == "CrossEntropy":
        if as_probs:
            t = rng.random((batch, classes))
            return t / t.sum(axis=1, keepdims=True)
        return rng.integers(0, classes, batch)
    return rng.standard_normal((batch, *net.output_shape))


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_match_finite_differences(case, loss, rng):
    layers, shape = CASES[case]
    net = build(_source(layers, shape, loss))
    for params in net.params.values():
        params[...] = rng.standard_normal(params.shape) * 0.5
    x = rng.standard_normal((3, *net.input_shape))
    check_gradients(net, x, _targets(net, loss, rng, 3))


def test_cross_entropy_with_probability_targets(rng):
    net = build(_source(CASES["mlp"][0], [4], "CrossEntropy"))
    x = rng.standard_normal((4, 4))
    check_gradients(net, x, _targets(net, "CrossEntropy", rng, 4, as_probs=True))


def test_backward_with_explicit_dout_is_a_vector_jacobian_product(rng):
    net = build("model Net { input [4] Linear(5) Tanh Linear(3) }")
    x = rng.standard_normal((2, 4))
    dout = rng.standard_normal((2, 3))
    net.forward(x)
    net.zero_grad()
    dx = net.backward(dout)
    objective = lambda: float(np.vdot(net.forward(x), dout))
    assert rel_error(dx, numeric_grad(objective, x)) < TOLERANCE
    for name, param in net.params.items():
        assert rel_error(net.grads[name], numeric_grad(objective, param)) < TOLERANCE, name


def test_sigmoid_is_stable_at_extremes():
    net = build("model Net { input [3] Sigmoid }")
    with np.errstate(all="raise"):
        y = net.forward(np.array([[-1000.0, 0.0, 1000.0]]))
    np.testing.assert_array_equal(y, [[0.0, 0.5, 1.0]])
    net32 = build("model Net { input [2] Sigmoid }", dtype="float32")
    with np.errstate(all="raise"):
        y32 = net32.forward(np.array([[-1000.0, 1000.0]]))
    assert np.isfinite(y32).all() and y32.dtype == np.float32


def test_cross_entropy_is_stable_for_huge_logits():
    net2 = build("model Net { input [2] Linear(3) loss CrossEntropy }")
    net2.params["linear_1.weight"][...] = [[1e4, -1e4, 0], [0, 0, 0]]
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = net2.loss(np.array([[1.0, 0.0]]), np.array([1]))
        net2.backward()
    assert np.isclose(value, 2e4)
