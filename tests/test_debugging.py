"""Debugging inside the generated module: model.gradcheck() and model.check_numerics / fit(check_numerics=True)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import build

import nncompile

MLP = """
model Net {
    input [5]
    fc1 = Linear(8)
    ReLU
    fc2 = Linear(3)
    loss CrossEntropy
    optimizer Adam(lr=0.01)
}
"""

# Dropout (random masks), BatchNorm (running statistics, mode-dependent), a block and a skip connection.
RICH = """
block Residual(width) {
    input x
    h = x -> Linear(width) -> TanH -> Linear(width)
    (x, h) -> Add -> ReLU
}

model Rich {
    input x [6]
    stem = x -> Linear(8) -> BatchNorm -> ReLU -> Dropout(0.3)
    deep = stem -> Residual(8)
    logits = deep -> Linear(3)
    loss CrossEntropy
    optimizer Adam(lr=0.01)
}
"""

TWO = """
model Two {
    input pixels [4]
    input tokens [3] int
    a = pixels -> Linear(6) -> Sigmoid
    e = tokens -> Embedding(5, 2) -> Flatten
    joined = (a, e) -> Concat
    digit = joined -> Linear(3)
    size = joined -> Linear(1)
    output (digit, size)
    loss digit -> CrossEntropy
    loss size -> 0.5 * MSE
}
"""


def data(rng, batch=7, features=5, classes=3):
    return rng.normal(size=(batch, features)), rng.integers(0, classes, batch)


def rich(dtype="float64", seed=0):
    """RICH with random biases: zero biases put a ReLU exactly at its kink for a sample Dropout zeroes whole, where
    the gradient is a convention (0) and no finite difference can agree with it."""
    net = build(RICH, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    for name, param in net.params.items():
        if name.endswith("bias"):
            param[...] = rng.normal(scale=0.1, size=param.shape)
    return net


# ---- gradcheck -------------------------------------------------------------------------------------------------


def test_gradcheck_passes_on_correct_gradients_and_reports_every_tensor():
    net = build(MLP)  # float64
    x, y = data(np.random.default_rng(0))
    report = net.gradcheck(x, y)
    assert report.ok and report.failures == [] and report.dtype == "float64" and report.eps == 1e-6
    assert list(report.tensors) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "x"]
    assert [t.kind for t in report.tensors.values()] == ["parameter"] * 4 + ["input"]
    # 20 sampled entries, or all of a smaller tensor.
    assert [t.checked for t in report.tensors.values()] == [20, 8, 20, 3, 20]
    assert all(t.max_abs_error < 1e-8 and t.max_rel_error < 1e-5 for t in report.tensors.values())
    text = str(report)
    assert text.startswith("gradcheck (float64, eps 1e-06, loss ") and ": ok\n" in text
    assert re.search(r"\n  fc2\.bias +3 ", text) and repr(report) == "<GradcheckReport ok>"


def test_gradcheck_catches_a_planted_error_of_1e_3_in_one_gradient(monkeypatch):
    net = build(MLP)
    x, y = data(np.random.default_rng(1))
    backward = net._backward

    def planted(douts, need_dx):
        result = backward(douts, need_dx)
        net.grads["fc2.bias"][1] += 1e-3  # one entry of one gradient, off by 1e-3
        return result

    monkeypatch.setattr(net, "_backward", planted)
    report = net.gradcheck(x, y)
    assert not report.ok and report.failures == ["fc2.bias"]
    bad = report.tensors["fc2.bias"]
    assert bad.worst == (1,) and bad.max_abs_error == pytest.approx(1e-3, rel=1e-3)
    assert "FAILED for fc2.bias" in str(report) and "<- disagrees" in str(report)
    assert all(t.ok for name, t in report.tensors.items() if name != "fc2.bias")


def test_gradcheck_catches_a_planted_error_in_an_input_gradient(monkeypatch):
    net = build(MLP)
    x, y = data(np.random.default_rng(2))
    backward = net._backward

    def planted(douts, need_dx):
        (dx,) = backward(douts, need_dx)
        dx[4, 2] -= 1e-3
        return (dx,)

    monkeypatch.setattr(net, "_backward", planted)
    report = net.gradcheck(x, y, samples=x.size)
    assert report.failures == ["x"] and report.tensors["x"].worst == (4, 2)


def test_gradcheck_holds_dropout_masks_and_works_in_both_modes():
    net = rich()
    x, y = data(np.random.default_rng(3), batch=9, features=6)
    for training in (True, False):
        net.train(training)
        report = net.gradcheck(x, y, samples=30, seed=5)
        assert report.ok, str(report)
        assert net.training is training
    assert "deep.linear_2.weight" in report.tensors and "batchnorm_1.weight" in report.tensors


def test_gradcheck_changes_nothing():
    net = rich()
    rng = np.random.default_rng(4)
    x, y = data(rng, batch=9, features=6)
    for _ in range(2):
        net.train_step(x, y)  # optimizer state, running statistics and the dropout generator all move
    net.loss(x, y)
    net.backward()  # gradients of the current batch, as a user might hold them
    before = net.state_dict()
    grads = {name: g.copy() for name, g in net.grads.items()}
    x_before = x.copy()
    next_draw = np.random.default_rng()
    next_draw.bit_generator.state = net._rng.bit_generator.state
    net.gradcheck(x, y)
    after = net.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    for name, g in net.grads.items():
        np.testing.assert_array_equal(g, grads[name], err_msg=name)
    np.testing.assert_array_equal(x, x_before)
    assert net._rng.random() == next_draw.random()
    net.step()  # the gradients held before are still good for step()
    with pytest.raises(RuntimeError, match="backward"):
        net.backward()  # the last forward pass was gradcheck's: as after evaluate(), loss() comes first


def test_gradcheck_skips_integer_inputs_and_handles_several_outputs():
    net = build(TWO)
    rng = np.random.default_rng(5)
    x = {"pixels": rng.normal(size=(6, 4)), "tokens": rng.integers(0, 5, (6, 3))}
    y = {"digit": rng.integers(0, 3, 6), "size": rng.normal(size=(6, 1))}
    report = net.gradcheck(x, y)
    assert report.ok, str(report)
    assert "pixels" in report.tensors and "tokens" not in report.tensors
    assert "embedding_1.weight" in report.tensors


def test_gradcheck_in_float32_uses_its_own_step_and_tolerance():
    net = rich("float32")
    x, y = data(np.random.default_rng(6), batch=9, features=6)
    report = net.gradcheck(x, y)
    assert report.ok, str(report)
    assert report.dtype == "float32" and report.eps == 3e-4 and report.rtol == 2e-2


def test_gradcheck_refuses_bad_arguments():
    net = build(MLP)
    x, y = data(np.random.default_rng(7))
    for eps in (0, -1e-3, np.inf, np.nan):
        with pytest.raises(ValueError, match="eps must be a positive number"):
            net.gradcheck(x, y, eps=eps)
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        net.gradcheck(x, y, samples=0)
    with pytest.raises(ValueError, match="wrong input shape"):
        net.gradcheck(x[:, :4], y)
    plain = build("model P {\n    input [2]\n    Linear(2)\n}\n")
    with pytest.raises(RuntimeError, match="has no loss"):
        plain.gradcheck(np.ones((2, 2)), np.ones((2, 2)))


# ---- check_numerics ---------------------------------------------------------------------------------------------

# The tests below make values overflow on purpose.
overflows = pytest.mark.filterwarnings(
    "ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning"
)

MODEL_NN = """# the README's example, fc2 on line 6
model Net {
    input [4]
    fc1 = Linear(16)
    ReLU
    fc2 = Linear(10)
    loss CrossEntropy
    optimizer SGD(lr=0.1)
}
"""


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "model.nn"
    path.write_text(MODEL_NN)
    return nncompile.load(path, dtype="float64").Net


def test_off_by_default_and_free_when_off(net_file):
    net = net_file(seed=0)
    assert net.check_numerics is False
    assert "_forward" not in vars(net) and "_backward" not in vars(net)
    assert net._forward.__func__ is type(net)._forward
    # The plain methods hold no check at all; their checked twins one per layer and gradient.
    assert "_check_finite" not in inspect.getsource(type(net)._forward)
    assert "_check_finite" not in inspect.getsource(type(net)._backward)
    assert inspect.getsource(type(net)._forward_checked).count("_check_finite(") == 1 + 3  # the input, 3 layers
    net.check_numerics = True
    assert net._forward.__func__ is type(net)._forward_checked
    net.check_numerics = False
    assert "_forward" not in vars(net) and net._backward.__func__ is type(net)._backward


@overflows
def test_forward_names_the_layer_its_line_and_the_first_bad_index(net_file):
    net = net_file(seed=0)
    net.params["fc2.weight"][:, 7] = 1e308  # finite, but any positive hidden value times it overflows
    x = np.zeros((5, 4))
    x[3:] = 100.0  # rows 0-2 give hidden values of exactly 0, row 3 is the first to overflow
    net.check_numerics = True
    with pytest.raises(FloatingPointError) as error:
        net.predict(x)
    assert str(error.value) == "fc2 = Linear(10) (model.nn:6): forward produced inf at [3, 7]"
    net.check_numerics = False
    assert np.isinf(net.predict(x)[3, 7])  # off: no check, the inf comes out


def test_inputs_and_output_gradients_are_checked_first(net_file):
    net = net_file(seed=0)
    net.check_numerics = True
    x = np.ones((4, 4))
    x[2, 1] = np.nan
    with pytest.raises(FloatingPointError, match=re.escape("input x holds nan at [2, 1]")):
        net.forward(x)
    net.forward(np.ones((4, 4)))
    dout = np.zeros((4, 10))
    dout[1, 9] = -np.inf
    with pytest.raises(FloatingPointError, match=re.escape("the gradient of output fc2 holds -inf at [1, 9]")):
        net.backward(dout)


@overflows
def test_backward_names_the_gradient(net_file):
    net = net_file(seed=0)
    net.check_numerics = True
    net.forward(np.full((3, 4), 1e5))  # hidden values near 1e5, all finite
    with pytest.raises(FloatingPointError) as error:
        net.backward(np.full((3, 10), 1e305))  # fc2's weight gradient, Σ hidden · dout, overflows first
    message = str(error.value)
    assert re.fullmatch(
        r"fc2 = Linear\(10\) \(model\.nn:6\): backward produced inf at \[\d+, 0\] in the gradient of fc2\.weight",
        message,
    ), message
    net.params["fc2.weight"][...] = 1e10
    net.forward(np.zeros((3, 4)))  # hidden values of 0: the weight gradient stays 0
    net.zero_grad()  # else backward adds to the gradients the failed pass left
    with pytest.raises(FloatingPointError) as error:
        net.backward(np.full((3, 10), 1e300))
    assert str(error.value) == (
        "fc2 = Linear(10) (model.nn:6): backward produced inf at [0, 0] in the gradient of its input (relu_1's output)"
    )


@overflows
def test_fit_with_check_numerics_stops_at_the_layer(net_file):
    net = net_file(seed=0)
    net.params["fc2.weight"][...] = 1e308  # finite, but fc2's forward pass overflows
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(64, 4)) * 100, rng.integers(0, 10, 64)
    with pytest.raises(FloatingPointError) as error:
        net.fit(x, y, epochs=3, batch_size=16, seed=0, verbose=False, check_numerics=True)
    assert re.match(
        r"\w+ = \w+(\(\d+\))? \(model\.nn:\d\): (forward|backward) produced (-?inf|nan) at \[", str(error.value)
    )
    assert error.value.history == {"loss": [], "accuracy": []}
    assert net.check_numerics is False  # fit's argument holds for the call only
    fresh = net_file(seed=0)
    fresh.check_numerics = True
    fresh.fit(x, y, epochs=1, verbose=False)  # None keeps the model's setting
    assert fresh.check_numerics is True
    fresh.fit(x, y, epochs=1, verbose=False, check_numerics=False)
    assert fresh.check_numerics is True


def test_checked_and_plain_passes_compute_the_same(tmp_path):
    rng = np.random.default_rng(9)
    x, y = data(rng, batch=12, features=6)
    plain, checked = build(RICH, dtype="float32", seed=3), build(RICH, dtype="float32", seed=3)
    checked.check_numerics = True
    for _ in range(3):
        assert plain.train_step(x, y) == checked.train_step(x, y)
    for name in plain.params:
        np.testing.assert_array_equal(plain.params[name], checked.params[name])
    np.testing.assert_array_equal(plain.predict(x), checked.predict(x))
    assert plain.loss(x, y) == checked.loss(x, y)
    np.testing.assert_array_equal(plain.backward(), checked.backward())
    history = checked.fit(x, y, epochs=2, batch_size=3, seed=0, verbose=False, validation_split=0.25)
    assert len(history["val_loss"]) == 2


def test_several_inputs_and_outputs_are_named(tmp_path):
    net = build(TWO)
    net.check_numerics = True
    rng = np.random.default_rng(10)
    pixels = rng.normal(size=(3, 4))
    pixels[1, 3] = np.inf
    with pytest.raises(FloatingPointError, match=re.escape("input pixels holds inf at [1, 3]")):
        net.forward({"pixels": pixels, "tokens": rng.integers(0, 5, (3, 3))})
    net.params["size.bias"][0] = np.nan
    y = {"digit": rng.integers(0, 3, 3), "size": rng.normal(size=(3, 1))}
    with pytest.raises(
        FloatingPointError, match=r"^size = Linear\(1\) \(<string>:\d+\): forward produced nan at \[0, 0\]$"
    ):
        net.train_step({"pixels": np.ones((3, 4)), "tokens": np.zeros((3, 3), int)}, y)


# ---- every layer: the golden models ------------------------------------------------------------------------------

GOLDEN = sorted((Path(__file__).resolve().parent / "golden").glob("*.nn"))


def random_batch(net, rng, batch=6, labels=True):
    """Inputs and targets of the right kinds for any model: indices for integer inputs, labels (when `labels`) for a
    loss with an accuracy, values in (0, 1) for the others (valid for MSE, BCE and the like)."""
    x = {
        name: rng.integers(0, 4, (batch, *shape)) if name in net._integer_inputs else rng.normal(size=(batch, *shape))
        for name, shape in net.input_shapes.items()
    }
    y = {}
    for output, _, metric, *_ in net._loss_terms:
        shape = net.output_shapes[output]
        if labels and metric == "accuracy" and shape[-1] > 1:
            y[output] = rng.integers(0, shape[-1], (batch, *shape[:-1]) if len(shape) > 1 else batch)
        else:
            y[output] = rng.uniform(0.1, 0.9, (batch, *shape))
    return (x if len(x) > 1 else next(iter(x.values()))), (y if len(y) > 1 else next(iter(y.values())))


@pytest.mark.parametrize("nn_file", GOLDEN, ids=lambda p: p.stem)
def test_every_golden_model_passes_gradcheck_and_checks_the_same_numbers(nn_file):
    for dtype in ("float64", "float32"):
        module = nncompile.load(nn_file, dtype=dtype)
        for name in module.__all__:
            cls = getattr(module, name)
            if not cls.has_loss:
                continue
            x, y = random_batch(cls(seed=0), np.random.default_rng(11))
            try:
                cls(seed=0).loss(x, y)
            except ValueError:  # a loss with an accuracy that takes probabilities (multi-label BCE)
                x, y = random_batch(cls(seed=0), np.random.default_rng(11), labels=False)
            if dtype == "float64":
                net = cls(seed=0)
                report = net.gradcheck(x, y, samples=8)
                assert report.ok, f"{name}\n{report}"
            plain, checked = cls(seed=0), cls(seed=0)
            checked.check_numerics = True
            for _ in range(2):
                assert plain.train_step(x, y) == checked.train_step(x, y), name
            for key in plain.params:
                np.testing.assert_array_equal(plain.params[key], checked.params[key], err_msg=f"{name} {key}")
