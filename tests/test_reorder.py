"""Lowering's speed-ups that change the order of work, not its result: ReLU moved after the max pool it feeds
(nncompile/reorder.py) and a Conv2D or Conv1D writing its rows in the order of the max pool of 2 that reads it. Which layers
they apply to, that the generated code still describes the file's graph, and that values and gradients still equal
PyTorch's (in the file's order)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import build
from test_conv2d import TOLERANCE, _one_thread, oracle_errors  # noqa: F401  (_one_thread: an autouse fixture)

import nncompile
from nncompile import compiler, reorder
from nncompile import lower as lower_module

CNN = """
model Net {
    input [10, 10, 2]
    conv = Conv2D(4, 3, padding=1)
    ReLU
    MaxPool2D(2)
    Flatten
    fc = Linear(3)
    loss CrossEntropy
    optimizer SGD(lr=0.1)
}
"""


def moved(source: str) -> dict[str, str]:
    (model,) = compiler.compile_models(source, "model.nn")
    return reorder.pools_before_relus(model)[1]


def test_a_relu_read_only_by_a_max_pool_moves_after_it():
    assert moved(CNN) == {"relu_1": "maxpool2d_1"}
    chained = CNN.replace("    Flatten\n", "    Conv2D(4, 3)\n    ReLU\n    GlobalMaxPool\n")
    assert moved(chained) == {"relu_1": "maxpool2d_1", "relu_2": "globalmaxpool_1"}


@pytest.mark.parametrize(
    "body",
    [
        # read twice: by the pool and by Add
        (
            "h = x -> Conv2D(4, 3, padding=1) -> ReLU\n p = h -> MaxPool2D(2)\n q = (h, h) -> Add -> MaxPool2D(2)\n"
            " out = (p, q) -> Add -> Flatten -> Linear(3)\n output out"
        ),
        # an average commutes with nothing
        "Conv2D(4, 3, padding=1)\n ReLU\n AvgPool2D(2)\n Flatten\n Linear(3)",
    ],
)
def test_a_relu_with_another_reader_or_an_average_pool_stays(body):
    source = f"model Net {{\n input x [10, 10, 2]\n {body}\n loss CrossEntropy\n}}\n"
    assert moved(source) == {}


def test_the_module_still_describes_the_file_and_says_why_the_code_differs():
    code = nncompile.compile_source(CNN, dtype="float64")
    layers = code.split("    Layers:\n", 1)[1].split("    Outputs:", 1)[0]
    assert layers.index("relu_1: ReLU  [10, 10, 4]") < layers.index("maxpool2d_1: MaxPool2D  [10, 10, 4] -> [5, 5, 4]")
    forward = code.split("    def _forward(self", 1)[1].split("    def _backward(self", 1)[0]
    assert forward.index("# maxpool2d_1 = MaxPool2D(2)") < forward.index("# relu_1 = ReLU")
    assert "# (moved after maxpool2d_1, its only reader: max commutes with ReLU, and leaves fewer values)" in forward
    net = build(CNN)
    assert [layer["name"] for layer in net.get_config()["layers"]] == [
        "conv",
        "relu_1",
        "maxpool2d_1",
        "flatten_1",
        "fc",
    ]
    assert net.get_config()["layers"][1]["input_shapes"] == [[10, 10, 4]]


@pytest.mark.parametrize(
    "layers, shape",
    [
        ("Conv2D(4, 3, padding=1)\n ReLU\n MaxPool2D(2)\n Flatten\n Linear(3)", [10, 10, 2]),
        ("Conv2D(4, 3)\n ReLU\n MaxPool2D(3, stride=2, padding=1)\n ReLU\n GlobalMaxPool\n Linear(3)", [11, 9, 2]),
        (
            "Conv1D(4, 3)\n ReLU\n MaxPool1D(2)\n Conv1D(3, 2)\n ReLU\n MaxPool1D(3, stride=2)\n Flatten\n Linear(3)",
            [17, 2],
        ),
    ],
)
def test_moved_relus_match_pytorch_in_the_files_order(layers, shape, rng):
    source = f"model Net {{\n input {shape}\n {layers}\n loss CrossEntropy\n optimizer SGD(lr=0.1, momentum=0.9)\n}}\n"
    assert moved(source)
    errors = oracle_errors(source, rng, batch=4)
    assert max(errors.values()) < TOLERANCE, errors


def test_ties_where_every_value_of_a_window_is_negative_or_zero_give_zero_gradients():
    """Windows whose values are all ≤ 0 (many exact zeros): max-then-ReLU routes dy to the window's maximum and ReLU
    stops it; ReLU-then-max would route it to a zero whose ReLU slope is 0. Both give 0 for the whole window."""
    source = "model Net {\n input [4, 4, 1]\n ReLU\n MaxPool2D(2)\n Flatten\n Linear(2)\n loss MSE\n}\n"
    net = build(source)
    x = np.zeros((2, 4, 4, 1))
    x[0, :2, :2, 0] = [[-1.0, 0.0], [0.0, -2.0]]  # a window of ties at 0 after ReLU
    x[1, 2:, 2:, 0] = [[3.0, 3.0], [1.0, 3.0]]  # positive ties: the first maximum in row-major order takes dy
    net.forward(x)
    dx = net.backward(np.ones((2, 2)))
    expected = np.zeros_like(x)
    weight = net.params["linear_1.weight"].sum(axis=1)
    expected[1, 2, 2, 0] = weight[3]
    np.testing.assert_array_equal(dx, expected)


# ---- a Conv2D's rows in the order of the MaxPool2D(2) that reads it -------------------------------------------------


def pool_ordered(source: str) -> list[str]:
    """The pools whose input convolutions write in their order (the checked twin repeats the comment)."""
    code = nncompile.compile_source(source, dtype="float64")
    marker = "# Windows in "
    return sorted({line.split(marker, 1)[1].split("'s order", 1)[0] for line in code.splitlines() if marker in line})


@pytest.mark.parametrize(
    "layers, shape, ordered",
    [
        # tap-major im2col (one channel), the conv's input gradient not needed
        ("Conv2D(4, 3, padding=1)\n ReLU\n MaxPool2D(2)\n Flatten\n Linear(3)", [10, 10, 1], 1),
        # window-major im2col (many channels), no bias; the second conv's input gradient is needed, so only the
        # first is reordered
        (
            "Conv2D(8, 3, padding=1)\n ReLU\n MaxPool2D(2)\n Conv2D(5, 3, padding=1, bias=false)\n MaxPool2D(2)\n Flatten",
            [12, 12, 3],
            1,
        ),
        # tap-major with two channels, unpadded
        ("Conv2D(3, 2)\n MaxPool2D(2)\n Conv2D(4, 3)\n ReLU\n MaxPool2D(2)\n Flatten\n Linear(3)", [13, 13, 2], 1),
        # Conv1D: one channel, the input gradient not needed
        ("Conv1D(4, 3, bias=true)\n ReLU\n MaxPool1D(2)\n Flatten\n Linear(3)", [18, 1], 1),
        # Conv1D twice without a bias (k = 2, then k = 3), the second one's input gradient needed
        ("Conv1D(5, 2)\n ReLU\n MaxPool1D(2)\n Conv1D(3, 3)\n MaxPool1D(2)\n Flatten\n Linear(3)", [17, 3], 1),
        # trimmed to the 8 × 8 windows the pool reads, and then even: reordered too
        ("Conv2D(4, 3)\n ReLU\n MaxPool2D(2)\n Flatten\n Linear(3)", [11, 11, 1], 1),
    ],
)
def test_pool_ordered_convolutions_match_pytorch(layers, shape, ordered, rng):
    source = f"model Net {{\n input {shape}\n {layers}\n loss CrossEntropy\n optimizer SGD(lr=0.1, momentum=0.9)\n}}\n"
    assert len(pool_ordered(source)) == ordered
    errors = oracle_errors(source, rng, batch=4)
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.parametrize(
    "layers",
    [
        "Conv2D(4, 3, padding=[1, 0])\n MaxPool2D(2)",  # 10 × 7: an odd number of columns (padded: not trimmed)
        "Conv2D(4, 3, stride=2)\n MaxPool2D(2)",  # a strided convolution
        "Conv2D(4, 3, padding=1)\n MaxPool2D(2, stride=1)",  # overlapping windows
        "Conv2D(4, 3, padding=1)\n MaxPool2D(2, padding=1)",  # a padded pool
        "h = x -> Conv2D(4, 3, padding=1)\n a = h -> MaxPool2D(2)\n b = h -> MaxPool2D(2)\n (a, b) -> Add",
        "Conv2D(2, [1, 2])\n Conv2D(4, 3, padding=1)\n MaxPool2D(2)",  # 10 × 8, but its input gradient is needed
    ],
)
def test_convolutions_keep_their_order_for_other_readers(layers):
    source = f"model Net {{\n input x [10, 9, 2]\n {layers}\n Flatten\n Linear(3)\n loss CrossEntropy\n}}\n"
    assert pool_ordered(source) == []


@pytest.mark.parametrize(
    "layers",
    [
        "Conv1D(4, 3, stride=2)\n MaxPool1D(2)",  # a strided convolution
        "Conv1D(4, 3, padding=1)\n MaxPool1D(2)",  # a padded convolution
        "Conv1D(4, 3, dilation=2)\n MaxPool1D(2)",  # a dilated one
        "Conv1D(4, 3)\n MaxPool1D(2, stride=1)",  # overlapping windows
        "Conv1D(4, 3)\n MaxPool1D(2, padding=1)",  # a padded pool
        "Conv1D(4, 3)\n MaxPool1D(2, stride=3)",  # gaps between the windows
        "Conv1D(4, 3)\n AvgPool1D(2)",  # an average
        "h = x -> Conv1D(4, 3)\n a = h -> MaxPool1D(2)\n b = h -> MaxPool1D(2)\n (a, b) -> Add",
        "Conv1D(4, 1)\n Conv1D(4, 3)\n MaxPool1D(2)",  # the second one's input gradient is needed
    ],
)
def test_conv1d_keeps_its_order_for_other_readers(layers):
    source = f"model Net {{\n input x [10, 2]\n {layers}\n Flatten\n Linear(3)\n loss CrossEntropy\n}}\n"
    assert pool_ordered(source) == []


def test_a_pool_that_is_an_output_keeps_its_name_and_gives_the_relus_values():
    moved_model = build("model A { input [6, 6, 2] Conv2D(3, 3) ReLU GlobalMaxPool loss MSE }", seed=1)
    by_hand = build("model B { input [6, 6, 2] Conv2D(3, 3) GlobalMaxPool ReLU loss MSE }", seed=1)
    assert moved_model.output_shapes == {"globalmaxpool_1": (3,)}
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((5, 6, 6, 2)), rng.standard_normal((5, 3))
    np.testing.assert_array_equal(moved_model.predict(x), by_hand.predict(x))
    assert [moved_model.train_step(x, t) for _ in range(3)] == [by_hand.train_step(x, t) for _ in range(3)]
    for name in moved_model.params:
        np.testing.assert_array_equal(moved_model.params[name], by_hand.params[name])


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize(
    "layers, shape, pixel, first_bad",
    [
        # 8 × 8 windows kept as (row phase, column phase, sample, row / 2, column / 2)
        ("conv = Conv2D(2, 3)\n MaxPool2D(2)", [10, 10, 1], (1, 5, 6, 0), "[1, 3, 4, 0]"),
        # 8 windows kept as (phase, sample, position / 2)
        ("conv = Conv1D(2, 3)\n MaxPool1D(2)", [10, 1], (1, 5, 0), "[1, 3, 0]"),
    ],
)
def test_check_numerics_reports_a_pool_ordered_output_by_position(layers, shape, pixel, first_bad):
    """The convolution's rows are stored in the pool's order, but the first bad value is found and reported in the
    order of its positions, as for any other layer."""
    source = f"model Net {{\n input x {shape}\n {layers}\n Flatten\n Linear(3)\n loss CrossEntropy\n}}\n"
    assert pool_ordered(source) == ["maxpool{}_1".format("2d" if "2D" in layers else "1d")]
    net = build(source)
    net.params["conv.weight"][...] = 1e308  # finite, but every window that covers the pixel overflows
    x = np.zeros((3, *shape))
    x[pixel] = 10.0
    net.check_numerics = True
    with pytest.raises(FloatingPointError) as error:
        net.predict(x)
    assert str(error.value).endswith(f"forward produced inf at {first_bad}"), str(error.value)


# ---- a convolution computing only the windows its max pool reads ---------------------------------------------------


def trimmed(source: str) -> dict[str, str]:
    """{convolution: the windows it computes, as its comment in the generated code gives them}."""
    code = nncompile.compile_source(source, dtype="float64")
    found = {}
    for before, line in zip(code.splitlines(), code.splitlines()[1:]):
        if "(computes only the " in line:
            found[before.split("# ", 1)[1].split(" = ", 1)[0]] = line.split("only the ", 1)[1].split(" of its", 1)[0]
    return found


@pytest.mark.parametrize(
    "layers, shape, expected",
    [
        # 8 × 7 windows, the pool reads 8 × 6; a ReLU in between runs after the pool
        ("conv = Conv2D(4, 3)\n ReLU\n MaxPool2D(2)", [10, 9, 2], {"conv": "[8, 6]"}),
        # 10 × 10 windows, a 3 × 3 pool of stride 2 reads 9 × 9 of them
        ("conv = Conv2D(4, 3)\n MaxPool2D(3, stride=2)", [12, 12, 1], {"conv": "[9, 9]"}),
        # 9 windows, a pool with gaps (k = 2, stride 3) reads 8
        ("conv = Conv1D(4, 2)\n MaxPool1D(2, stride=3)", [10, 2], {"conv": "[8]"}),
        # a dilated convolution: 6 windows, the pool reads 4
        ("conv = Conv1D(4, 3, dilation=2)\n MaxPool1D(4)", [10, 2], {"conv": "[4]"}),
        # every window read, or a padded or strided convolution, a padded pool, two readers: nothing to trim
        ("Conv2D(4, 3)\n MaxPool2D(2)", [10, 10, 2], {}),
        ("Conv2D(4, 3, padding=1)\n MaxPool2D(2)", [9, 9, 2], {}),
        ("Conv2D(4, 3, stride=2)\n MaxPool2D(2)", [12, 12, 2], {}),
        ("Conv2D(4, 3)\n MaxPool2D(2, padding=1)", [10, 9, 2], {}),
        ("Conv1D(4, 3, padding=1)\n MaxPool1D(2)", [9, 2], {}),
        ("h = x -> Conv1D(4, 2)\n a = h -> MaxPool1D(2)\n b = h -> MaxPool1D(2)\n (a, b) -> Add", [12, 2], {}),
    ],
)
def test_which_convolutions_are_trimmed(layers, shape, expected):
    source = f"model Net {{\n input x {shape}\n {layers}\n Flatten\n Linear(3)\n loss CrossEntropy\n}}\n"
    assert trimmed(source) == expected


@pytest.mark.parametrize(
    "layers, shape",
    [
        # the second convolution is trimmed (7 × 7 to 6 × 6) and its input gradient is needed
        ("Conv2D(6, 3, padding=1)\n ReLU\n MaxPool2D(2)\n Conv2D(5, 3)\n ReLU\n MaxPool2D(2)\n Flatten", [18, 18, 2]),
        # trimmed to 8 × 8 and then reordered for the pool; tap-major im2col
        ("Conv2D(4, 3)\n ReLU\n MaxPool2D(2)\n Flatten\n Linear(3)", [11, 11, 1]),
        # a pool of 3 with stride 2 that leaves the last window out, no bias
        ("Conv2D(4, [2, 3], bias=false)\n MaxPool2D(3, stride=2)\n Flatten", [11, 12, 3]),
        # Conv1D: 29 windows of which the pool reads 28, after a first convolution (input gradient needed)
        ("Conv1D(4, 3)\n ReLU\n MaxPool1D(2)\n Conv1D(5, 3)\n ReLU\n MaxPool1D(2)\n Flatten\n Linear(3)", [64, 1]),
        # dilated, with gaps between the pool's windows
        ("Conv1D(3, 2)\n Conv1D(4, 3, dilation=2)\n MaxPool1D(2, stride=3)\n Flatten", [14, 2]),
    ],
)
def test_trimmed_convolutions_match_pytorch(layers, shape, rng):
    source = f"model Net {{\n input {shape}\n {layers}\n loss CrossEntropy\n optimizer SGD(lr=0.1, momentum=0.9)\n}}\n"
    assert trimmed(source)
    errors = oracle_errors(source, rng, batch=4)
    assert max(errors.values()) < TOLERANCE, errors


def test_trimming_changes_no_value_or_gradient_of_random_conv_pool_models(monkeypatch):
    """Random Conv1D/Conv2D -> (ReLU) -> MaxPool models (kernels, strides, dilations, pool windows, strides and
    padding drawn at random; ties in the input), built with and without trimming: predictions equal exactly, the
    input and parameter gradients and two training steps to float64 rounding."""
    rnd = random.Random(0)
    untrimmed = 0
    for trial in range(150):
        two_d = rnd.random() < 0.5
        conv = f"conv = Conv{'2' if two_d else '1'}D(3, {rnd.randint(1, 4)}, stride={rnd.choice([1, 1, 2])}, "
        conv += f"dilation={rnd.choice([1, 1, 2])})"
        pool = f"MaxPool{'2' if two_d else '1'}D({rnd.randint(1, 3)}, stride={rnd.choice([1, 2, 3])}"
        pool += f", padding={rnd.choice([0, 0, 1])})"
        first = f"Conv{'2' if two_d else '1'}D(2, 1)\n" if rnd.random() < 0.5 else ""
        n = rnd.randint(6, 13)
        shape = [n, n + rnd.randint(0, 2), 2] if two_d else [n, 2]
        relu = "ReLU\n" if rnd.random() < 0.5 else ""
        source = (
            f"model Net {{\n input {shape}\n {first}{conv}\n {relu}{pool}\n Flatten\n Linear(3)\n"
            " loss CrossEntropy\n optimizer SGD(lr=0.1, momentum=0.9)\n}\n"
        )
        try:
            trimmed_net = build(source, seed=1)
        except nncompile.CompileError:
            continue  # the pool or the kernel does not fit
        if not trimmed(source):
            continue
        with monkeypatch.context() as patch:
            patch.setattr(lower_module, "trimmed_convolutions", lambda model: (model, {}))
            assert not trimmed(source)
            plain_net = build(source, seed=1)
        untrimmed += 1
        rng = np.random.default_rng(trial)
        x, y = rng.standard_normal((5, *shape)), rng.integers(0, 3, 5)
        x[0, :2] = 0  # equal values: the pools' ties
        np.testing.assert_array_equal(trimmed_net.predict(x), plain_net.predict(x), err_msg=source)
        trimmed_net.loss(x, y)
        plain_net.loss(x, y)
        np.testing.assert_allclose(trimmed_net.backward(), plain_net.backward(), rtol=1e-10, atol=1e-13, err_msg=source)
        for name, grad in trimmed_net.grads.items():
            np.testing.assert_allclose(grad, plain_net.grads[name], rtol=1e-10, atol=1e-13, err_msg=source)
        for _ in range(2):
            assert trimmed_net.train_step(x, y) == pytest.approx(plain_net.train_step(x, y), rel=1e-12), source
    assert untrimmed >= 20  # the draw reaches the rewrite often enough to mean something
