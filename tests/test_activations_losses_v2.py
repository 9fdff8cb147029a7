"""GELU (exact and tanh), SiLU, ELU and the BCEWithLogits, Huber and L1 losses (catalogue v2).

- PyTorch as the oracle in float64, rtol 1e-9: forward, loss, input and parameter gradients through Linear layers,
  then 3 steps of SGD (momentum, weight decay) and of Adam, for every new activation and loss, in a sequential
  model and in a graph (GRAPH).
- Finite differences (CASES, also read by tests/test_catalogue.py): after a Linear (in place), first (not in place),
  over a signal, followed by an in-place ReLU, in graphs, and into each new loss.
- GELU's erf: the float64 output and slope against mpmath to a few ulps over all three of Cody's regions, and the
  float32 negative tail at non-integer points (where x² is not exact in float32: the split of e^(-x²/2) matters).
- Float32 tails of the losses; 1-D targets for [1] outputs; argument and target errors; no steady-state allocation.
The float32 tables of tests/test_numerics_float32.py cover every new entry at the tails as well.
"""

from __future__ import annotations

import math
import tracemalloc

import mpmath
import numpy as np
import pytest
import torch
from conftest import GRADIENT_TOLERANCE, build, check_gradients, rel_error

import nncompile

nn = torch.nn
F = torch.nn.functional
TOLERANCE = 1e-9
STEPS = 3

# Our statement → the torch module.
ACTIVATIONS = {
    "GELU": lambda: nn.GELU(),
    "GELU(approximate=tanh)": lambda: nn.GELU(approximate="tanh"),
    "SiLU": lambda: nn.SiLU(),
    "ELU": lambda: nn.ELU(),
    "ELU(alpha=0.3)": lambda: nn.ELU(alpha=0.3),
    "ELU(2.5)": lambda: nn.ELU(alpha=2.5),
}
LOSSES = {
    "MSE": lambda: nn.MSELoss(),
    "BCEWithLogits": lambda: nn.BCEWithLogitsLoss(),
    "Huber": lambda: nn.HuberLoss(),
    "Huber(delta=0.3)": lambda: nn.HuberLoss(delta=0.3),
    "L1": lambda: nn.L1Loss(),
}
SGD = "SGD(lr=0.05, momentum=0.9, weight_decay=0.01)"
ADAM = "Adam(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05)"
# A graph: GELU's output read by two activations (neither in place) and, through them, by an Add with the input.
GRAPH = """h = x -> Linear(5) -> GELU
    a = h -> SiLU
    b = h -> ELU(alpha=0.3)
    (x, a, b) -> Add -> GELU(approximate=tanh) -> Linear(2)"""


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _torch_optimizer(optimizer: str, parameters):
    if optimizer == SGD:
        return torch.optim.SGD(parameters, lr=0.05, momentum=0.9, weight_decay=0.01)
    return torch.optim.Adam(parameters, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)


def _targets(loss: str, rng, shape):
    if loss == "BCEWithLogits":
        t = rng.random(shape)
        t[::2] = np.round(t[::2])  # hard labels and soft ones
        return t
    return rng.standard_normal(shape) * 2


def _oracle_cases():
    # Each activation twice: first (not in place: it reads the caller's array) and after a Linear (in place).
    for activation in ACTIVATIONS:
        for optimizer in (SGD, ADAM):
            yield pytest.param(activation, "MSE", 3, optimizer, id=f"{activation}-MSE-{optimizer[:3]}")
    for loss in [loss for loss in LOSSES if loss != "MSE"]:
        for optimizer in (SGD, ADAM):
            yield pytest.param("GELU", loss, 3, optimizer, id=f"GELU-{loss}-{optimizer[:3]}")
    # An output of shape [1] with 1-D targets (n,), against torch with (n, 1).
    for loss in ("BCEWithLogits", "Huber", "L1"):
        yield pytest.param("SiLU", loss, 1, ADAM, id=f"SiLU-{loss}-one_output")


@pytest.mark.parametrize(("activation", "loss", "outputs", "optimizer"), list(_oracle_cases()))
def test_matches_pytorch_float64(activation, loss, outputs, optimizer, rng):
    source = (
        f"model Net {{\n input [5]\n {activation}\n fc1 = Linear(7)\n {activation}\n fc2 = Linear({outputs})\n"
        f" loss {loss}\n optimizer {optimizer}\n}}\n"
    )
    net = build(source, seed=3)
    fc1, fc2 = nn.Linear(5, 7).double(), nn.Linear(7, outputs).double()
    model = nn.Sequential(ACTIVATIONS[activation](), fc1, ACTIVATIONS[activation](), fc2)
    pairs = {"fc1.weight": fc1.weight, "fc1.bias": fc1.bias, "fc2.weight": fc2.weight, "fc2.bias": fc2.bias}
    to_ours = {name: (lambda t: t.T) if name.endswith("weight") else (lambda t: t) for name in pairs}
    with torch.no_grad():
        for name, tensor in pairs.items():
            to_ours[name](tensor).copy_(torch.from_numpy(net.params[name]))
    criterion = LOSSES[loss]()

    def batch():
        # Wide inputs, with GELU's three erfc regions (|x| ≤ 0.71, ≤ 5.66, beyond) visited in every batch.
        x = rng.standard_normal((8, 5)) * 3
        x[0, :3] = [7.5, -6.5, 0.3]
        t = _targets(loss, rng, (8, outputs))
        ours = t[:, 0] if outputs == 1 else t  # 1-D targets for a [1] output
        return x, ours, torch.from_numpy(t)

    x, t, t_torch = batch()
    x_torch = torch.from_numpy(x.copy()).requires_grad_(True)
    out = model(x_torch)
    value_torch = criterion(out, t_torch)
    value_torch.backward()
    assert rel_error(net.forward(x), out.detach().numpy()) < TOLERANCE, "output"
    value = net.loss(x, t)
    assert abs(value - value_torch.item()) <= TOLERANCE * abs(value_torch.item()), "loss"
    net.zero_grad()
    dx = net.backward()
    assert rel_error(dx, x_torch.grad.numpy()) < TOLERANCE, "input gradient"
    for name, tensor in pairs.items():
        assert rel_error(net.grads[name], to_ours[name](tensor.grad).numpy()) < TOLERANCE, name

    optimizer_torch = _torch_optimizer(optimizer, model.parameters())
    for _ in range(STEPS):
        x, t, t_torch = batch()
        optimizer_torch.zero_grad()
        value_torch = criterion(model(torch.from_numpy(x)), t_torch)
        value_torch.backward()
        optimizer_torch.step()
        value = net.train_step(x, t)
        assert abs(value - value_torch.item()) <= TOLERANCE * abs(value_torch.item()), "training loss"
    for name, tensor in pairs.items():
        assert rel_error(net.params[name], to_ours[name](tensor.detach()).numpy()) < TOLERANCE, name


@pytest.mark.parametrize("optimizer", [SGD, ADAM])
def test_graph_model_matches_pytorch_float64(optimizer, rng):
    net = build(f"model Net {{\n input [5]\n {GRAPH}\n loss Huber(delta=0.5)\n optimizer {optimizer}\n}}\n", seed=4)
    fc1, fc2 = nn.Linear(5, 5).double(), nn.Linear(5, 2).double()
    pairs = {"linear_1.weight": fc1.weight, "linear_1.bias": fc1.bias}
    pairs |= {"linear_2.weight": fc2.weight, "linear_2.bias": fc2.bias}
    assert set(pairs) == set(net.params)
    with torch.no_grad():
        for name, tensor in pairs.items():
            (tensor.T if name.endswith("weight") else tensor).copy_(torch.from_numpy(net.params[name]))

    def model(x):
        h = F.gelu(fc1(x))
        return fc2(F.gelu(x + F.silu(h) + F.elu(h, 0.3), approximate="tanh"))

    criterion = nn.HuberLoss(delta=0.5)
    x, t = rng.standard_normal((6, 5)) * 3, rng.standard_normal((6, 2))
    x_torch = torch.from_numpy(x.copy()).requires_grad_(True)
    value_torch = criterion(model(x_torch), torch.from_numpy(t))
    value_torch.backward()
    assert net.loss(x, t) == pytest.approx(value_torch.item(), rel=TOLERANCE)
    net.zero_grad()
    assert rel_error(net.backward(), x_torch.grad.numpy()) < TOLERANCE, "input gradient"
    for name, tensor in pairs.items():
        grad = tensor.grad.T if name.endswith("weight") else tensor.grad
        assert rel_error(net.grads[name], grad.numpy()) < TOLERANCE, name
    optimizer_torch = _torch_optimizer(optimizer, [fc1.weight, fc1.bias, fc2.weight, fc2.bias])
    for _ in range(STEPS):
        x, t = rng.standard_normal((6, 5)) * 3, rng.standard_normal((6, 2))
        optimizer_torch.zero_grad()
        value_torch = criterion(model(torch.from_numpy(x)), torch.from_numpy(t))
        value_torch.backward()
        optimizer_torch.step()
        assert net.train_step(x, t) == pytest.approx(value_torch.item(), rel=TOLERANCE)
    for name, tensor in pairs.items():
        expected = tensor.detach().T if name.endswith("weight") else tensor.detach()
        assert rel_error(net.params[name], expected.numpy()) < TOLERANCE, name


def test_bce_with_logits_accuracy_counts_positive_logits_as_class_one():
    net = build("model Net { input [2] Linear(1) loss BCEWithLogits }")
    net.params["linear_1.weight"][...] = [[1.0], [0.0]]
    net.params["linear_1.bias"][...] = 0
    x = np.array([[2.0, 0], [-1.0, 0], [0.0, 0], [3.0, 0]])
    # logits 2, -1, 0, 3 → classes 1, 0, 0, 1 (z = 0 is sigmoid 0.5: class 0, as BCE's p > 0.5)
    t = np.array([1.0, 0.0, 1.0, 0.0])
    metrics = net.evaluate(x, t)
    assert metrics["accuracy"] == 0.5
    expected = F.binary_cross_entropy_with_logits(torch.tensor([2.0, -1, 0, 3], dtype=torch.float64), torch.tensor(t))
    assert metrics["loss"] == pytest.approx(expected.item(), rel=1e-12)


# ---- finite differences ----------------------------------------------------------------------------------------

# name: (layer statements, input shape, losses to check with)
CASES = {
    "gelu": ("Linear(6)\n GELU\n Linear(3)", [4], ["MSE", "BCEWithLogits"]),
    "gelu_first": ("GELU\n Linear(3)", [4], ["Huber"]),
    "gelu_then_inplace_relu": ("Linear(5)\n GELU\n ReLU\n Linear(3)", [4], ["MSE"]),
    "gelu_signal": ("Conv1D(3, 2, bias=true)\n GELU\n Flatten\n Linear(2)", [6, 2], ["BCEWithLogits"]),
    "gelu_tanh": ("Linear(6)\n GELU(approximate=tanh)\n Linear(3)", [4], ["MSE", "L1"]),
    "gelu_tanh_first": ("GELU(tanh)\n Linear(3)", [4], ["Huber(delta=0.5)"]),
    "silu": ("Linear(6)\n SiLU\n Linear(3)", [4], ["MSE", "Huber(delta=0.5)"]),
    "silu_first": ("SiLU\n Linear(2)", [4], ["BCEWithLogits"]),
    "elu": ("Linear(6)\n ELU\n Linear(3)", [4], ["MSE", "L1"]),
    "elu_alpha": ("ELU(alpha=0.3)\n Linear(5)\n ELU(2.0)\n Linear(3)", [4], ["Huber"]),
    "one_output": ("Linear(5)\n SiLU\n Linear(1)", [3], ["BCEWithLogits", "Huber", "L1"]),
    # Graphs: an activation's output read by an Add; one value read by several activations (none in place).
    "gelu_residual": ("h = x -> Linear(4) -> GELU\n (x, h) -> Add -> SiLU -> Linear(3)", [4], ["MSE"]),
    "fan_out": (GRAPH, [5], ["Huber(delta=0.5)", "BCEWithLogits"]),
}


def _source(layers: str, shape, loss: str) -> str:
    return f"model Net {{\n input {shape}\n {layers}\n loss {loss}\n}}\n"


@pytest.mark.parametrize(
    ("case", "loss"),
    [pytest.param(case, loss, id=f"{case}-{loss}") for case in sorted(CASES) for loss in CASES[case][2]],
)
def test_gradients_match_finite_differences(case, loss, rng):
    layers, shape, _ = CASES[case]
    net = build(_source(layers, shape, loss))
    for params in net.params.values():
        params[...] = rng.standard_normal(params.shape)
    # Inputs around ±2 reach GELU's middle region (|x| > 0.71) and often the large one (|x| > 5.66) after a layer.
    x = rng.standard_normal((3, *shape)) * 2
    t = _targets(loss.split("(")[0], rng, (3, *net.output_shape))
    if net.output_shape == (1,):
        t = t[:, 0]
    check_gradients(net, x, t, GRADIENT_TOLERANCE)


# ---- GELU's erf --------------------------------------------------------------------------------------------------

ULP = 2.0**-53


def _gelu_exact(points):
    """y = x·Φ(x), the slope Φ(x) + x·φ(x) and the magnitude Φ(x) + |x·φ(x)| of its terms, to 40 digits."""
    mpmath.mp.dps = 40
    y, slope, terms = [], [], []
    for value in points:
        x = mpmath.mpf(float(value))
        phi = mpmath.erfc(-x / mpmath.sqrt(2)) / 2
        density = mpmath.exp(-x * x / 2) / mpmath.sqrt(2 * mpmath.pi)
        y.append(float(x * phi))
        slope.append(float(phi + x * density))
        terms.append(float(phi + abs(x) * density))
    return np.array(y), np.array(slope), np.array(terms)


def test_gelu_float64_is_within_a_few_ulps_of_the_exact_function():
    rng = np.random.default_rng(5)
    # Cody's three regions in a = |x|: up to 0.71, to 5.66, beyond; tiny |x|; and the region boundaries.
    points = np.concatenate(
        [
            np.linspace(-37.5, 37.5, 1201) + rng.uniform(-0.01, 0.01, 1201),
            rng.standard_normal(300),
            np.geomspace(1e-9, 0.7, 50) * np.tile([1, -1], 25),
            [0.0, 0.7071067811865476, -0.7071067811865476, 5.656854249492381, -5.656854249492381],
        ],
        axis=None,
    )
    net = build(f"model Net {{ input [{points.size}] GELU }}")
    with np.errstate(all="raise"):
        y = net.forward(points[None].copy())[0]
        slope = net.backward(np.ones((1, points.size)))[0]
    exact_y, exact_slope, terms = _gelu_exact(points)
    normal = np.abs(exact_y) > 1e-300  # below, y itself is subnormal in float64
    worst = np.max(np.abs(y - exact_y)[normal] / np.abs(exact_y[normal]))
    assert worst < 16 * ULP, f"y: {worst / ULP:.1f} ulps"
    # The slope sums Φ(x) and x·φ(x), which cancel near its root x ≈ -0.75: its error is to the terms' size.
    worst = np.max(np.abs(slope - exact_slope)[normal] / terms[normal])
    assert worst < 16 * ULP, f"slope: {worst / ULP:.1f} ulps of its terms"
    assert np.all(y[~normal] <= 0) and np.all(np.abs(y[~normal]) < 1e-300)


def test_gelu_matches_math_erf_in_every_region():
    # An independent float64 erf (the C library's, through math.erf) on a fine grid through the region boundaries.
    points = np.linspace(-8, 8, 16001)
    net = build(f"model Net {{ input [{points.size}] GELU }}")
    y = net.forward(points[None].copy())[0]
    expected = np.array([x * math.erfc(-x / math.sqrt(2)) / 2 for x in points])
    np.testing.assert_allclose(y, expected, rtol=1e-14, atol=0)


def test_gelu_float32_negative_tail_keeps_its_relative_precision():
    # At non-integer x, x² is rounded in float32: e^(-x²/2) from a rounded x² would be off by |x²/2|·2^-24 relative,
    # 3e-6 at x = -10, beyond the 1e-6 below; and 1 + erf(x/√2) (PyTorch's form) is 0 here even in float64.
    x = -np.linspace(5.03, 12.77, 40, dtype=np.float32)[None]  # down to y ≈ -4e-37, still normal
    net = build("model Net { input [40] GELU }", dtype="float32")
    y = net.forward(x.copy())
    dx = net.backward(np.ones_like(y))
    x64 = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    exact = x64 * torch.special.erfc(-x64 / math.sqrt(2)) / 2
    exact.sum().backward()
    np.testing.assert_allclose(y, exact.detach().numpy(), rtol=1e-6, atol=0)
    np.testing.assert_allclose(dx, x64.grad.numpy(), rtol=1e-6, atol=0)
    assert (y < 0).all()


# ---- stability at the tails ----------------------------------------------------------------------------------------


def _extremes(dtype: str) -> np.ndarray:
    """From near the dtype's largest values (but such that a few of them still sum to a finite value) to ±0."""
    huge = 1e300 if dtype == "float64" else 1e37
    return np.array([[-huge, -1e4, -700.0, -88.0, -0.0, 0.0, 88.0, 700.0, 1e4, huge]], dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layer", sorted(ACTIVATIONS))
def test_activations_are_finite_at_any_input_without_floating_point_errors(layer, dtype):
    x = _extremes(dtype)
    net = build(f"model Net {{ input [{x.size}] {layer} }}", dtype=dtype)
    with np.errstate(all="raise"):
        y = net.forward(x.copy())
        dx = net.backward(np.ones_like(y))
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    positive = x > 100
    np.testing.assert_array_equal(y[positive], x[positive])  # every form is the identity far right
    np.testing.assert_array_equal(dx[positive], 1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", ["BCEWithLogits", "Huber", "L1"])
def test_losses_are_finite_at_any_logit_without_floating_point_errors(loss, dtype):
    z = _extremes(dtype)[..., None]
    t = np.tile([0.0, 1.0], 5)[None].astype(dtype)
    net = build(f"model Net {{ input [10, 1] Flatten loss {loss} }}", dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise", under="raise"):
        value = net.loss(z.copy(), t)
        dz = net.backward()
    assert np.isfinite(dz).all() and np.isfinite(value)


def test_bce_with_logits_gradient_keeps_its_precision_where_sigmoid_rounds_to_one():
    # dL/dz = (sigmoid(z) - 1)/N = -sigmoid(-z)/N with t = 1: sigmoid(17) is 1 in float32, but the gradient is not 0.
    z = np.array([[[17.0], [20.0], [30.0], [-1e4]]], dtype=np.float32)
    t = np.ones((1, 4), dtype=np.float32)
    net = build("model Net { input [4, 1] Flatten loss BCEWithLogits }", dtype="float32")
    value = net.loss(z, t)
    dz = net.backward().reshape(-1)
    z64 = z.reshape(-1).astype(np.float64)
    np.testing.assert_allclose(dz, -1 / (1 + np.exp(z64)) / 4, rtol=1e-6)
    exact = np.mean(np.log1p(np.exp(-z64[:3])).tolist() + [1e4])
    assert value == pytest.approx(exact, rel=1e-6)


def test_huber_is_quadratic_inside_delta_and_linear_beyond():
    net = build("model Net { input [4, 1] Flatten loss Huber(delta=2) }")
    z = np.array([[[0.5], [-1.5], [3.0], [-10.0]]])
    value = net.loss(z, np.zeros((1, 4)))
    assert value == pytest.approx((0.125 + 1.125 + 2 * (3 - 1) + 2 * (10 - 1)) / 4, rel=1e-15)
    np.testing.assert_array_equal(net.backward().reshape(-1), np.array([0.5, -1.5, 2, -2]) / 4)


def test_l1_gradient_is_zero_where_output_equals_target():
    net = build("model Net { input [3, 1] Flatten loss L1 }")
    net.loss(np.array([[[1.0], [2.0], [-3.0]]]), np.array([[1.0, 0.0, 0.0]]))
    np.testing.assert_array_equal(net.backward().reshape(-1), [0, 1 / 3, -1 / 3])


# ---- targets and errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["BCEWithLogits", "Huber", "L1"])
def test_one_output_models_take_one_target_per_sample(loss, rng):
    net = build(f"model Net {{ input [3] Linear(1) loss {loss} }}")
    x, t = rng.standard_normal((10, 3)), rng.random(10)
    assert net.loss(x, t) == net.loss(x, t[:, None])
    history = net.fit(x, t, epochs=2, batch_size=4, verbose=False)
    assert len(history["loss"]) == 2
    assert set(net.evaluate(x, t)) == ({"loss", "accuracy"} if loss == "BCEWithLogits" else {"loss"})
    with pytest.raises(ValueError, match=r"targets must have shape \(10, 1\) or \(10,\), got \(10, 2\)"):
        net.loss(x, np.zeros((10, 2)))


@pytest.mark.parametrize("loss", ["BCEWithLogits", "Huber", "L1"])
def test_wider_outputs_still_need_targets_of_their_shape(loss):
    net = build(f"model Net {{ input [3] Linear(2) loss {loss} }}")
    with pytest.raises(ValueError, match=r"targets must have shape \(4, 2\), got \(4,\)"):
        net.loss(np.zeros((4, 3)), np.zeros(4))


def test_bce_with_logits_rejects_targets_outside_unit_interval():
    net = build("model Net { input [2] Linear(1) loss BCEWithLogits }")
    with pytest.raises(ValueError, match=r"BCEWithLogits targets must be probabilities in \[0, 1\]"):
        net.loss(np.zeros((2, 2)), np.array([0.5, 1.5]))


def _error(source: str) -> str:
    with pytest.raises(nncompile.CompileError) as info:
        nncompile.compile_source(source, filename="m.nn")
    return str(info.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("model N { input [4] GELU(approximate=fast) }", "argument 'approximate' of GELU must be one of none, tanh"),
        ("model N { input [4] GELU(1) }", "argument 'approximate' of GELU must be a name"),
        ("model N { input [4] ELU(alpha=true) }", "argument 'alpha' of ELU must be a number"),
        ("model N { input [4] Linear(1) loss Huber(delta=0) }", "argument 'delta' of Huber must be positive"),
    ],
)
def test_argument_errors_are_clear(source, message):
    assert message in _error(source)


def test_bce_on_logits_suggests_bce_with_logits_and_the_reverse_warns():
    with pytest.warns(nncompile.NNCompileWarning, match="use BCEWithLogits instead"):
        nncompile.compile_source("model N { input [4] Linear(1) loss BCE }")
    with pytest.warns(nncompile.NNCompileWarning, match="BCEWithLogits applies the sigmoid itself"):
        nncompile.compile_source("model N { input [4] Linear(1) Sigmoid loss BCEWithLogits }")


# ---- allocation --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["BCEWithLogits", "Huber", "L1"])
def test_training_allocates_nothing_in_steady_state(loss):
    source = (
        "model Net { input [64] Linear(64) GELU Linear(64) GELU(tanh) Linear(32) SiLU Linear(32) ELU(0.5) "
        f"Linear(8) ELU loss {loss} }}"
    )
    net = build(source, dtype="float32")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((256, 64)) * 4).astype(np.float32)
    y = rng.random((256, 8)).astype(np.float32)

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
