"""Float32 against PyTorch float32 at the tails, for every activation and every loss.

Inputs reach ±1e4, ±88, ±30, ±20, ±17 and ±10, besides 0 and ordinary values, so every exp, log and subtraction is
exercised where it can overflow, underflow or cancel. Checked: each activation's output and input gradient through
backward(dout), and each loss's value and its gradient with respect to the model input (the loss alone, and after
every activation it can follow).

Tolerance. An element passes when it is within RTOL of PyTorch float32 (relative to that value), or within RTOL of
the exact value (PyTorch float64 on the same float32 inputs) relative to its scale; the second admits being more exact
than PyTorch where PyTorch float32 itself is not (sigmoid below -88.7, where it returns 0). RTOL = 1e-6 is about 8
float32 ulps: NumPy's float32 exp alone is off by up to 2.4 ulps, our Sigmoid by 3.2 and PyTorch's by 2.4, so two
correct float32 results can differ by about 6. The scale is the element's own magnitude for every activation output,
for the input gradient of an elementwise activation and for loss values. Where an element is a sum of terms that
cancel, float32 cannot do better than a few ulps of those terms, so its scale is the sum of their magnitudes (the
usual forward error bound): p + t for a loss gradient p - t, and |J|ᵀ|g| for the input gradient Jᵀg through
Softmax and LogSoftmax, whose Jacobian J mixes a row. Only where the exact value and its scale are 0 (e^-10000, a
softmax entry 1e4 below its row maximum) is there an absolute floor, ZERO_FLOOR, below the smallest normal float32.

Where PyTorch float32 is itself inexact in the same way ours is (the slope y·(1 - y) of Sigmoid at x ≥ 17 and
1 - y² of TanH at |x| ≥ 9, both read from an output that has rounded to 1), agreeing with PyTorch is accepted.

The exact value is PyTorch float64 of the same function, except where PyTorch's float64 formula itself cancels
(EXACT): GELU's 1 + erf(x/√2) and the tanh form's 1 + tanh(u) round to 0 for x ≲ -8 even in float64, where the true
output is a tiny negative number, so there the reference is x·erfc(-x/√2)/2 and x·sigmoid(2u).
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import torch
from conftest import build

from nncompile import NNCompileWarning

F = torch.nn.functional

RTOL = 1e-6
ZERO_FLOOR = 1e-38

TAILS = [-1e4, -88.0, -30.0, -20.0, -17.0, -10.0, -1.0, -0.5, 0.0, 0.5, 1.0, 10.0, 17.0, 20.0, 30.0, 88.0, 1e4]
ORDINARY = np.random.default_rng(7).standard_normal(7).tolist()
POINTS = np.array(TAILS + ORDINARY, dtype=np.float32)
WIDTH = 4


def _inputs() -> np.ndarray:
    """(12, 4) float32: the points in order (rows of like magnitude), then shuffled (rows mixing the tails)."""
    shuffled = np.random.default_rng(3).permutation(POINTS)
    return np.concatenate([POINTS.reshape(-1, WIDTH), shuffled.reshape(-1, WIDTH)])


# Our layer statement → the PyTorch function.
ACTIVATIONS = {
    "ReLU": torch.relu,
    "LeakyReLU": lambda t: F.leaky_relu(t, 0.01),
    "LeakyReLU(0.2)": lambda t: F.leaky_relu(t, 0.2),
    "Sigmoid": torch.sigmoid,
    "TanH": torch.tanh,
    "Softplus": F.softplus,
    "Softmax": lambda t: torch.softmax(t, dim=-1),
    "LogSoftmax": lambda t: torch.log_softmax(t, dim=-1),
    "GELU": F.gelu,
    "GELU(tanh)": lambda t: F.gelu(t, approximate="tanh"),
    "SiLU": F.silu,
    "ELU": F.elu,
    "ELU(0.5)": lambda t: F.elu(t, 0.5),
}
GELU_BETA, GELU_KAPPA = math.sqrt(2 / math.pi), 0.044715
# Float64 references where PyTorch's float64 formula cancels (see the module docstring).
EXACT = {
    "GELU": lambda t: t * torch.special.erfc(-t / math.sqrt(2)) / 2,
    "GELU(tanh)": lambda t: t * torch.sigmoid(2 * GELU_BETA * (t + GELU_KAPPA * t**3)),
}


def exact(layer: str):
    """The float64 reference function of a layer."""
    return EXACT.get(layer, ACTIVATIONS[layer])


# What may precede each loss: "" is the loss on the input itself (behind a Flatten, as a model needs a layer).
LOSS_INPUTS = {
    "MSE": ["", *ACTIVATIONS],
    "CrossEntropy": ["", *ACTIVATIONS],
    "BCE": ["", "Sigmoid", "Softmax"],
    # Not after Sigmoid or Softmax, which the compiler warns about.
    "BCEWithLogits": ["", *(layer for layer in ACTIVATIONS if layer not in ("Sigmoid", "Softmax"))],
    "Huber": ["", *ACTIVATIONS],
    "Huber(0.5)": ["", "GELU", "SiLU", "ELU"],
    "L1": ["", *ACTIVATIONS],
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_matches(ours, torch32, exact, inputs, what: str, scale=None) -> None:
    """Each element within RTOL of PyTorch float32, or within RTOL·scale of the exact value (scale: |exact|)."""
    ours = np.asarray(ours, dtype=np.float64)
    torch32 = np.asarray(torch32, dtype=np.float64)
    exact = np.asarray(exact, dtype=np.float64)
    scale = np.abs(exact) if scale is None else np.asarray(scale, dtype=np.float64)
    assert ours.shape == torch32.shape == exact.shape == scale.shape, what
    assert np.isfinite(ours).all() or not np.isfinite(torch32).all(), f"{what}: inf or NaN where PyTorch is finite"
    as_torch = np.abs(ours - torch32) <= RTOL * np.abs(torch32)
    as_exact = np.abs(ours - exact) <= RTOL * scale
    at_zero = (scale.astype(np.float32) == 0) & (np.abs(ours) <= ZERO_FLOOR)
    bad = ~(as_torch | as_exact | at_zero)
    if bad.any():
        rows = [
            f"  x={x!r}: ours {o!r}, torch float32 {t!r}, exact {e!r}, scale {c!r}"
            for x, o, t, e, c in zip(
                np.broadcast_to(inputs, ours.shape)[bad],
                ours[bad],
                torch32[bad],
                exact[bad],
                scale[bad],
                strict=True,
            )
        ]
        pytest.fail(f"{what}: {int(bad.sum())} of {bad.size} elements off\n" + "\n".join(rows[:12]))


def _build(source: str):
    return build(source, dtype="float32")


@pytest.mark.parametrize("layer", sorted(ACTIVATIONS))
def test_activation_value_and_input_gradient_match_pytorch_float32(layer):
    x = _inputs()
    dout = np.random.default_rng(5).standard_normal(x.shape).astype(np.float32)
    net = _build(f"model Net {{ input [{WIDTH}] {layer} }}")
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = net.forward(x.copy())
        dx = net.backward(dout.copy())

    results = {}
    for dtype, function in ((torch.float32, ACTIVATIONS[layer]), (torch.float64, exact(layer))):
        xt = torch.tensor(x, dtype=dtype, requires_grad=True)
        yt = function(xt)
        yt.backward(torch.tensor(dout, dtype=dtype))
        results[dtype] = yt.detach().numpy(), xt.grad.numpy()
    (y32, dx32), (y64, dx64) = results[torch.float32], results[torch.float64]
    assert_matches(y, y32, y64, x, f"{layer} output")
    assert_matches(dx, dx32, dx64, x, f"{layer} input gradient")


def _targets(loss: str, shape, rng):
    if loss == "CrossEntropy":
        return rng.integers(0, shape[1], shape[0])
    if loss in ("BCE", "BCEWithLogits"):
        # Hard labels, where saturated outputs matter most, and soft ones.
        t = rng.integers(0, 2, shape).astype(np.float32)
        t[::3] = rng.random(t[::3].shape)
        return t
    return (rng.standard_normal(shape) * 3).astype(np.float32)


def _probabilities() -> np.ndarray:
    """BCE's own input (no activation in front): probabilities down to 0 and up to 1, as float32."""
    p = [0.0, 1e-45, 1e-30, 2e-9, 1e-7, 1e-3, 0.1, 0.3, 0.5, 0.7, 0.9, 0.999, 1 - 1e-7, 1 - 6e-8, 1.0, 0.25]
    return np.random.default_rng(11).permutation(np.array(p, dtype=np.float32)).reshape(-1, WIDTH)


def _torch_loss(loss: str, z, target):
    if loss == "MSE":
        return F.mse_loss(z, target)
    if loss == "BCE":
        return F.binary_cross_entropy(z, target)
    if loss == "BCEWithLogits":
        return F.binary_cross_entropy_with_logits(z, target)
    if loss.startswith("Huber"):
        return F.huber_loss(z, target, delta=0.5 if loss == "Huber(0.5)" else 1.0)
    if loss == "L1":
        return F.l1_loss(z, target)
    return F.cross_entropy(z, target)


def _loss_gradient_and_scale(loss: str, z, target):
    """The exact dL/dz in float64, and the magnitudes it is a difference of (see the module docstring)."""
    n = z.numel()
    if loss == "MSE":
        return 2 * (z - target) / n, 2 * (z.abs() + target.abs()) / n
    if loss == "BCE":
        p = z.clamp(0, 1)
        # PyTorch's floor is the float32 1e-12 also in float64; ours is 1e-12 in its dtype, the same in float32.
        denominator = (p * (1 - p)).clamp_min(float(np.float32(1e-12))) * n
        return (p - target) / denominator, (p + target) / denominator
    if loss == "BCEWithLogits":
        p = torch.sigmoid(z)
        return (p - target) / n, (p + target) / n
    if loss.startswith("Huber"):
        delta = 0.5 if loss == "Huber(0.5)" else 1.0
        return (z - target).clamp(-delta, delta) / n, (z.abs() + target.abs()) / n
    if loss == "L1":
        return torch.sign(z - target) / n, torch.ones_like(z) / n
    batch = z.shape[0]
    p = torch.softmax(z, dim=-1)
    if target.ndim == 2:
        # The gradient of -Σ t·log softmax(z) is p·Σt - t; ours assumes Σt = 1, true of these rows up to float32.
        total = target.sum(dim=1, keepdim=True)
        return (p * total - target) / batch, (p * total + target) / batch
    # At the true class p - 1 = -(the others summed): summing them keeps even float64 from cancelling to 0.
    others = F.one_hot(target, z.shape[1]) == 0
    gradient = torch.where(others, p, -(p * others).sum(dim=1, keepdim=True)) / batch
    return gradient, gradient.abs()


def _input_gradient_and_scale(layer: str, x, gradient, scale):
    """Backpropagate the exact gradient and its scale through the layer (float64): Jᵀg and |J|ᵀ|g|."""
    if not layer:
        return gradient, scale
    xt = x.clone().requires_grad_(True)
    z = exact(layer)(xt)
    (dx,) = torch.autograd.grad(z, xt, gradient)
    z = z.detach()
    if layer == "Softmax":  # J = diag(y) - y yᵀ
        return dx, z * (scale + (z * scale).sum(dim=-1, keepdim=True))
    if layer == "LogSoftmax":  # J = I - 1 softmaxᵀ
        return dx, scale + z.exp() * scale.sum(dim=-1, keepdim=True)
    # Elementwise: |J|ᵀ|g| = |slope|·|g| (the slopes of GELU and SiLU change sign).
    (slope,) = torch.autograd.grad(exact(layer)(xt), xt, torch.ones_like(xt))
    return dx, slope.abs() * scale


def _check_exact_gradient(loss, layer, x64, t64, gradient, scale, dx64):
    """The hand-written exact gradient is PyTorch's float64 autograd, up to float64 rounding of the terms autograd
    sums (at CrossEntropy's true class those are p and 1, whose difference cancels even in float64)."""
    if loss == "CrossEntropy" and t64.ndim == 1:
        z64 = exact(layer)(x64) if layer else x64
        scale = (torch.softmax(z64, dim=-1) + F.one_hot(t64, WIDTH)) / x64.shape[0]
    terms = _input_gradient_and_scale(layer, x64, gradient, scale)[1]
    xt = x64.clone().requires_grad_(True)
    _torch_loss(loss, exact(layer)(xt) if layer else xt, t64).backward()
    assert (xt.grad - dx64).abs().le(1e-12 * terms).all()


def _loss_cases():
    for loss, layers in LOSS_INPUTS.items():
        for layer in layers:
            yield pytest.param(loss, layer, False, id=f"{layer or 'input'}-{loss}")
    # CrossEntropy also takes probability rows as targets.
    yield pytest.param("CrossEntropy", "", True, id="input-CrossEntropy-probability_targets")


@pytest.mark.parametrize(("loss", "layer", "probability_targets"), list(_loss_cases()))
# Some pairs are legal but warned about (a softmax before CrossEntropy, BCE on raw inputs): their numbers must hold too.
@pytest.mark.filterwarnings("ignore:.*CrossEntropy applies log-softmax itself", "ignore:.*BCE takes probabilities")
def test_loss_value_and_input_gradient_match_pytorch_float32(loss, layer, probability_targets):
    x = _probabilities() if loss == "BCE" and not layer else _inputs()
    rng = np.random.default_rng(13)
    target = _targets(loss, x.shape, rng)
    if probability_targets:
        target = rng.dirichlet(np.full(WIDTH, 0.5), x.shape[0]).astype(np.float32)
        target[0] = [0, 0, 1, 0]
    # A Flatten of [k, 1] is the identity on values: the loss then sees the input itself.
    body = f"input [{WIDTH}] {layer}" if layer else f"input [{WIDTH}, 1] Flatten"
    net = _build(f"model Net {{ {body} loss {loss} }}")
    x_in = x if layer else x[..., None]
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = net.loss(x_in.copy(), target.copy())
        net.zero_grad()
        dx = net.backward().reshape(x.shape)

    xt = torch.tensor(x, requires_grad=True)
    value32 = _torch_loss(loss, ACTIVATIONS[layer](xt) if layer else xt, torch.tensor(target))
    value32.backward()
    x64 = torch.tensor(x, dtype=torch.float64)
    t64 = torch.tensor(target) if target.dtype.kind in "iu" else torch.tensor(target, dtype=torch.float64)
    z64 = exact(layer)(x64) if layer else x64
    gradient, scale = _loss_gradient_and_scale(loss, z64, t64)
    dx64, dx_scale = _input_gradient_and_scale(layer, x64, gradient, scale)
    _check_exact_gradient(loss, layer, x64, t64, gradient, scale, dx64)
    name = f"{layer or 'input'} → {loss}"
    assert_matches(value, value32.item(), _torch_loss(loss, z64, t64).item(), 0.0, f"{name} value")
    assert_matches(dx, xt.grad.numpy(), dx64.numpy(), x, f"{name} input gradient", dx_scale.numpy())


SIGMOID_TAIL = np.array([[-88.0, -30.0, -20.0, -17.0, -10.0, 0.0, 10.0, 17.0]], dtype=np.float32)


def test_sigmoid_is_exact_on_the_negative_tail():
    # The tanh form (1 + tanh(x/2)) / 2 lost it all here: relative error 2e-4 at -10, 44 % at -17, 0 below -20.
    net = _build("model Net { input [8] Sigmoid }")
    y = net.forward(SIGMOID_TAIL.copy())
    exact = 1 / (1 + np.exp(-SIGMOID_TAIL.astype(np.float64)))
    np.testing.assert_allclose(y, exact, rtol=RTOL, atol=0)
    # Down into the subnormals (e^-95 ≈ 5.5e-42), where 1 / (1 + e^-x) has already overflowed to 0.
    deep = np.array([[-95.0, -100.0, -1e4]], dtype=np.float32)
    y = _build("model Net { input [3] Sigmoid }").forward(deep)
    expected = np.exp(deep.astype(np.float64)).astype(np.float32)
    assert y[0, 0] > 0 and y[0, 1] > 0 and y[0, 2] == 0
    np.testing.assert_allclose(y, expected, rtol=0.01)  # subnormals: a few of their few bits


def test_gradient_through_sigmoid_into_bce_does_not_vanish_on_the_negative_tail():
    # dL/dx = (sigmoid(x) - t) / N exactly; with t = 1 at x = -17 or -20 it is -1/N, not 0.
    x = np.array([[-20.0, -17.0, -10.0, -5.0]], dtype=np.float32)
    t = np.ones_like(x)
    net = _build("model Net { input [4] Sigmoid loss BCE }")
    value = net.loss(x, t)
    dx = net.backward()
    p = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(dx, (p - t) / t.size, rtol=RTOL)
    assert value == pytest.approx(-np.log(p).mean(), rel=RTOL)


def test_bce_with_saturated_outputs_is_finite_like_pytorch():
    # p = 0 with t = 1 and p = 1 with t = 0: PyTorch clamps each log at -100 and p·(1 - p) at 1e-12.
    with pytest.warns(NNCompileWarning, match="BCE takes probabilities"):
        net = _build("model Net { input [2, 1] Flatten loss BCE }")
    p, t = np.array([[[0.0], [1.0]]], dtype=np.float32), np.array([[1.0, 0.0]], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = net.loss(p, t)
        dz = net.backward()
    assert value == pytest.approx(100.0, rel=RTOL)
    np.testing.assert_allclose(dz.reshape(-1), [-0.5e12, 0.5e12], rtol=RTOL)


def test_sigmoid_and_bce_train_without_allocating_in_steady_state():
    # tests/test_allocation.py covers the examples, which use neither.
    net = _build("model Net { input [64] Linear(32) Sigmoid Linear(8) Sigmoid loss BCE }")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 64)).astype(np.float32) * 20
    y = (rng.random((256, 8)) > 0.5).astype(np.float32)

    def peak(call) -> int:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        call()
        return tracemalloc.get_traced_memory()[1] - baseline

    tracemalloc.start()
    try:
        first = peak(lambda: net.train_step(x, y))
        second = peak(lambda: net.train_step(x, y))
    finally:
        tracemalloc.stop()
    assert second < 0.05 * first, (first, second)
