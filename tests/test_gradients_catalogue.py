"""Finite-difference checks (float64, central) of the layer catalogue: inputs and every parameter, several shapes.

Window layers are checked at stride 1, stride > 1 with overlapping windows, stride > k (gaps) and lengths where
the last window does not fit evenly. Max-pool inputs are drawn without near-ties (a tie would make the
function non-differentiable there); the tie rule has its own test.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import GRADIENT_TOLERANCE, build, check_gradients, numeric_grad, rel_error

import nncompile

TOLERANCE = GRADIENT_TOLERANCE

# name: (layer statements, input shape, losses to check with)
CASES = {
    # Conv1D: output length (length - k) // stride + 1
    "conv_stride1": ("conv = Conv1D(4, 3, bias=true)", [9, 2], ["MSE"]),
    "conv_stride2_uneven": ("conv = Conv1D(3, 3, stride=2, bias=true)", [10, 2], ["MSE"]),
    "conv_stride3_uneven": ("conv = Conv1D(2, 4, stride=3)", [12, 3], ["MSE"]),
    "conv_gaps": ("conv = Conv1D(2, 2, stride=3, bias=true)", [11, 2], ["MSE"]),
    "conv_k1": ("conv = Conv1D(3, 1)", [5, 2], ["MSE"]),
    "conv_k_is_length": ("conv = Conv1D(3, 6, bias=true)", [6, 2], ["MSE"]),
    "conv_stack": ("Conv1D(3, 3, bias=true)\n Tanh\n Conv1D(2, 2, stride=2)", [11, 2], ["MSE"]),
    # Pools
    "maxpool": ("MaxPool1D(2)", [8, 3], ["MSE"]),
    "maxpool_uneven": ("MaxPool1D(3)", [10, 2], ["MSE"]),
    "maxpool_overlap": ("MaxPool1D(3, stride=2)", [10, 2], ["MSE"]),
    "maxpool_gaps": ("MaxPool1D(2, stride=3)", [9, 2], ["MSE"]),
    "maxpool_pair_tail": ("MaxPool1D(2)", [9, 2], ["MSE"]),
    "avgpool": ("AvgPool1D(2)", [8, 3], ["MSE"]),
    "avgpool_uneven": ("AvgPool1D(3)", [10, 2], ["MSE"]),
    "avgpool_overlap": ("AvgPool1D(3, stride=2)", [10, 2], ["MSE"]),
    "avgpool_gaps": ("AvgPool1D(2, stride=3)", [9, 2], ["MSE"]),
    # Flatten, alone and between a signal stack and a dense head
    "flatten": ("Flatten\n Linear(3)", [4, 3], ["MSE", "CrossEntropy"]),
    "cnn": (
        "Conv1D(3, 3, bias=true)\n ReLU\n MaxPool1D(2)\n Flatten\n Linear(4)",
        [11, 2],
        ["MSE", "CrossEntropy"],
    ),
    "cnn_avg": ("Conv1D(3, 2, stride=2)\n Softplus\n AvgPool1D(2)\n Flatten\n Linear(3)", [13, 2], ["CrossEntropy"]),
    # Activations after a layer (in place), first (not in place), and over a signal (several rows)
    "leaky_relu": ("Linear(6)\n LeakyReLU", [4], ["MSE", "CrossEntropy"]),
    "leaky_relu_alpha": ("Linear(6)\n LeakyReLU(alpha=0.3)\n Linear(3)", [4], ["MSE"]),
    "leaky_relu_first": ("LeakyReLU(0.2)\n Linear(3)", [4], ["MSE"]),
    "softplus": ("Linear(6)\n Softplus\n Linear(3)", [4], ["MSE", "CrossEntropy"]),
    "softplus_first": ("Softplus\n Linear(3)", [4], ["MSE"]),
    "softmax": ("Linear(5)\n Softmax", [4], ["MSE", "BCE"]),
    "softmax_signal": ("Conv1D(4, 2)\n Softmax", [5, 3], ["MSE", "BCE"]),
    "softmax_first": ("Softmax\n Linear(3)", [4], ["MSE"]),
    "log_softmax": ("Linear(5)\n LogSoftmax", [4], ["MSE", "CrossEntropy"]),
    "log_softmax_signal": ("Conv1D(4, 2)\n LogSoftmax", [5, 3], ["MSE"]),
    "stable_sigmoid": ("Linear(5)\n StableSigmoid", [4], ["MSE", "BCE"]),
    "sigmoid_signal": ("Conv1D(3, 2, bias=true)\n Sigmoid", [5, 2], ["BCE"]),
}


def _source(layers: str, shape, loss: str) -> str:
    return f"model Net {{\n input {shape}\n {layers}\n loss {loss}\n}}\n"


def _targets(net, loss: str, rng, batch: int):
    if loss == "CrossEntropy":
        return rng.integers(0, net.output_shape[0], batch)
    if loss == "BCE":
        return rng.random((batch, *net.output_shape))
    return rng.standard_normal((batch, *net.output_shape))


def _separated(rng, shape, gap: float = 0.05) -> np.ndarray:
    """Random values whose pairwise differences are at least `gap`, so no max-pool window is near a tie."""
    values = np.arange(np.prod(shape)) * gap - np.prod(shape) * gap / 2
    return rng.permutation(values).reshape(shape)


@pytest.mark.parametrize(
    ("case", "loss"),
    [pytest.param(case, loss, id=f"{case}-{loss}") for case in sorted(CASES) for loss in CASES[case][2]],
)
# The catalogue pairs LogSoftmax with CrossEntropy on purpose: the gradient must hold for legal code that warns.
@pytest.mark.filterwarnings("ignore:.*CrossEntropy applies log-softmax itself")
def test_gradients_match_finite_differences(case, loss, rng):
    layers, shape, _ = CASES[case]
    net = build(_source(layers, shape, loss))
    for params in net.params.values():
        params[...] = rng.standard_normal(params.shape) * 0.5
    x = _separated(rng, (3, *shape)) if layers.startswith("MaxPool") else rng.standard_normal((3, *shape))
    check_gradients(net, x, _targets(net, loss, rng, 3))


def test_bce_on_probabilities_directly(rng):
    # No Sigmoid in front: z itself is the probability (kept inside the clip range), which the compiler warns about.
    with pytest.warns(nncompile.NNCompileWarning, match="BCE takes probabilities"):
        net = build(_source("Linear(4, bias=false)", [3], "BCE"))
    net.params["linear_1.weight"][...] = rng.uniform(0.1, 0.5, (3, 4))
    x = rng.uniform(0.1, 0.9, (5, 3)) / 3
    check_gradients(net, x, rng.random((5, 4)))


def test_conv_gradients_accumulate_across_backward_calls(rng):
    net = build(_source("conv = Conv1D(3, 3, stride=2, bias=true)", [9, 2], "MSE"))
    x, t = rng.standard_normal((4, 9, 2)), rng.standard_normal((4, 4, 3))
    net.zero_grad()
    net.loss(x, t)
    net.backward()
    once = {k: g.copy() for k, g in net.grads.items()}
    net.loss(x, t)
    net.backward()
    for name, grad in net.grads.items():
        np.testing.assert_allclose(grad, 2 * once[name], rtol=1e-12, err_msg=name)


def test_backward_with_dout_through_window_layers(rng):
    net = build("model Net { input [12, 2] Conv1D(3, 3, stride=2) MaxPool1D(2, stride=1) AvgPool1D(2) }")
    x = rng.standard_normal((2, 12, 2))
    dout = rng.standard_normal((2, *net.output_shape))
    net.forward(x)
    net.zero_grad()
    dx = net.backward(dout)
    objective = lambda: float(np.vdot(net.forward(x), dout))
    assert rel_error(dx, numeric_grad(objective, x)) < TOLERANCE
    assert rel_error(net.grads["conv1d_1.weight"], numeric_grad(objective, net.params["conv1d_1.weight"])) < 1e-6


def test_maxpool_ties_route_the_gradient_to_the_first_maximum():
    net = build("model Net { input [6, 2] MaxPool1D(3, stride=1) }")
    x = np.array([[[1.0, 5.0], [3.0, 5.0], [3.0, 2.0], [0.0, 5.0], [3.0, 1.0], [-1.0, 1.0]]])
    y = net.forward(x)
    np.testing.assert_array_equal(y[0], [[3, 5], [3, 5], [3, 5], [3, 5]])
    dx = net.backward(np.ones_like(y))
    # channel 0: windows [1,3,3] [3,3,0] [3,0,3] [0,3,-1] -> first maxima at positions 1, 1, 2, 4
    # channel 1: windows [5,5,2] [5,2,5] [2,5,1] [5,1,1] -> first maxima at positions 0, 1, 3, 3
    np.testing.assert_array_equal(dx[0, :, 0], [0, 2, 1, 0, 1, 0])
    np.testing.assert_array_equal(dx[0, :, 1], [1, 1, 0, 2, 0, 0])
    # Windows that do not overlap (stride = k) write dx directly; the rule is the same.
    tiled = build("model Net { input [7, 1] MaxPool1D(2) }")
    y = tiled.forward(np.array([[[3.0], [3.0], [1.0], [2.0], [-1.0], [-1.0], [9.0]]]))
    dx = tiled.backward(np.ones_like(y))
    np.testing.assert_array_equal(dx[0, :, 0], [1, 0, 0, 1, 1, 0, 0])


def test_window_layers_ignore_positions_after_the_last_window(rng):
    net = build("model Net { input [10, 2] Conv1D(2, 3, stride=3) }")
    x = rng.standard_normal((2, 10, 2))
    net.forward(x)
    dx = net.backward(np.ones((2, *net.output_shape)))
    assert net.output_shape == (3, 2)
    assert not dx[:, 9].any() and dx[:, 8].any()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softplus_softmax_and_log_softmax_are_stable_for_huge_inputs(dtype):
    big = np.array([[-1000.0, -30.0, 0.0, 30.0, 1000.0]])
    # e^-1000 underflowing to 0 is the right answer; overflow or a NaN would not be.
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        softplus = build("model Net { input [5] Softplus }", dtype=dtype)
        y = softplus.forward(big)
        dx = softplus.backward(np.ones_like(y))
        softmax = build("model Net { input [5] Softmax }", dtype=dtype).forward(big)
        log_softmax = build("model Net { input [5] LogSoftmax }", dtype=dtype).forward(big)
    np.testing.assert_allclose(y[0], [0.0, np.exp(-30.0), np.log(2.0), 30.0, 1000.0], rtol=1e-6)
    np.testing.assert_allclose(dx[0], [0.0, np.exp(-30.0), 0.5, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(softmax[0], [0, 0, 0, 0, 1], atol=1e-30)
    np.testing.assert_allclose(log_softmax[0], [-2000, -1030, -1000, -970, 0], rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bce_clamps_the_logs_of_saturated_probabilities_like_pytorch(dtype):
    net = build("model Net { input [2] Sigmoid loss BCE }", dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        # Sigmoid saturates to exactly 0 and 1: each log is clamped at -100 (PyTorch's BCELoss), and the gradient's
        # denominator p·(1 - p) at 1e-12, so both stay finite.
        value = net.loss(np.array([[-1000.0, 1000.0]]), np.array([[1.0, 0.0]]))
        dz = net.backward()
    assert value == 100.0
    assert np.isfinite(dz).all()
    code = nncompile.compile_source("model Net { input [2] Sigmoid loss BCE }", dtype=dtype)
    assert "clamped at -100.0 as in PyTorch" in code


def test_bce_rejects_targets_outside_unit_interval():
    net = build("model Net { input [2] Sigmoid loss BCE }")
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        net.loss(np.zeros((1, 2)), np.array([[0.5, 1.5]]))
