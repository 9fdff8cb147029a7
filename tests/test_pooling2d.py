"""MaxPool2D, AvgPool2D, the 1-D pools with padding, GlobalAvgPool, GlobalMaxPool, Reshape and Permute.

PyTorch is the oracle (float64, rtol 1e-9): the twin of test_graph_oracle, extended here with these layers
(channels-last images are permuted to torch's [batch, chan, height, width] around F.max_pool2d / F.avg_pool2d,
the global pools are F.adaptive_*_pool to size 1), checks forward, loss, input and parameter gradients and three
optimizer steps for many window/stride/padding combinations, ties included (PyTorch sends the gradient to the
first maximum of a window in row-major order, and so do we). Finite differences check a few cases independently
of torch (max pools on inputs without near-ties); shape and argument errors are checked with their location; a
hypothesis test stacks these layers at random.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import build, check_gradients
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_gradients_catalogue import _separated, _source, _targets
from test_graph_oracle import TorchTwin, compare_once, compare_training
from test_graph_oracle import _batch as oracle_batch

import nncompile

F = torch.nn.functional
SGD = "SGD(lr=0.05, momentum=0.9, weight_decay=0.01)"
ADAM = "Adam(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05)"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class PoolTwin(TorchTwin):
    """The graph oracle's torch twin, knowing the layers of this file too."""

    def _apply(self, layer: dict, xs: list[torch.Tensor]) -> torch.Tensor:
        kind, args = layer["type"], layer["args"]
        if kind in ("MaxPool2D", "AvgPool2D"):
            (x,) = xs
            pool = F.max_pool2d if kind == "MaxPool2D" else F.avg_pool2d
            stride = args["stride"] or args["k"]
            return pool(x.permute(0, 3, 1, 2), args["k"], stride, args["padding"]).permute(0, 2, 3, 1)
        if kind in ("GlobalAvgPool", "GlobalMaxPool"):
            (x,) = xs
            spatial = x.dim() - 2
            pool = {
                ("GlobalAvgPool", 1): F.adaptive_avg_pool1d,
                ("GlobalAvgPool", 2): F.adaptive_avg_pool2d,
                ("GlobalMaxPool", 1): F.adaptive_max_pool1d,
                ("GlobalMaxPool", 2): F.adaptive_max_pool2d,
            }[kind, spatial]
            return pool(x.movedim(-1, 1), 1).flatten(1)
        if kind == "Reshape":
            (x,) = xs
            return x.reshape(x.shape[0], *args["shape"])
        if kind == "Permute":
            (x,) = xs
            return x.permute(0, *(a + 1 for a in args["axes"]))
        return super()._apply(layer, xs)


def _model(layers: str, shape, loss: str, optimizer: str) -> str:
    return f"model Net {{\n input {shape}\n {layers}\n Flatten\n head = Linear(3)\n loss {loss}\n optimizer {optimizer}\n}}\n"


# (layers, input shape): every case ends in Flatten and a Linear head (parameters after the pools), and some start
# with a Linear reshaped into an image (parameters before them, so their gradients pass through the pools).
ORACLE_CASES = [
    # MaxPool2D: 2×2 tiles (the pairwise path), with tails, gaps and padding; general windows, overlapping or not
    ("MaxPool2D(2)", [8, 8, 3]),
    ("MaxPool2D(2)", [7, 9, 2]),
    ("MaxPool2D(2, stride=3)", [8, 7, 2]),
    ("MaxPool2D(2, stride=[2, 3], padding=1)", [5, 6, 2]),
    ("MaxPool2D(2, padding=[0, 1])", [5, 5, 2]),
    ("MaxPool2D(3)", [9, 10, 2]),
    ("MaxPool2D(3, stride=2)", [9, 8, 2]),
    ("MaxPool2D(3, stride=1, padding=1)", [5, 6, 2]),
    ("MaxPool2D([2, 3], stride=[1, 2], padding=[1, 1])", [6, 7, 2]),
    ("MaxPool2D([3, 1], stride=[2, 1])", [7, 4, 2]),
    ("MaxPool2D(2, stride=[2, 1])", [6, 5, 2]),
    ("MaxPool2D(4, stride=2, padding=2)", [6, 7, 1]),
    ("MaxPool2D(5)", [5, 5, 2]),
    ("MaxPool2D([1, 2], stride=[3, 2])", [7, 6, 2]),
    ("MaxPool2D(1)", [3, 4, 2]),
    ("MaxPool2D(3, stride=2, padding=1)\n MaxPool2D(2)", [9, 9, 2]),
    # AvgPool2D: the same geometries
    ("AvgPool2D(2)", [8, 8, 3]),
    ("AvgPool2D(2)", [7, 9, 2]),
    ("AvgPool2D(2, stride=3, padding=1)", [8, 7, 2]),
    ("AvgPool2D(3, stride=2)", [9, 8, 2]),
    ("AvgPool2D(3, stride=1, padding=1)", [5, 6, 2]),
    ("AvgPool2D([2, 3], stride=[1, 2], padding=[1, 1])", [6, 7, 2]),
    ("AvgPool2D([3, 1], stride=[2, 1], padding=[1, 0])", [7, 4, 2]),
    ("AvgPool2D(4, stride=2, padding=2)", [6, 7, 1]),
    ("AvgPool2D([1, 2], stride=[3, 2])", [7, 6, 2]),
    # Parameters before the pools
    ("Linear(48)\n Reshape([4, 4, 3])\n MaxPool2D(2)", [10]),
    ("Linear(50)\n Tanh\n Reshape([5, -1, 2])\n MaxPool2D(3, stride=2, padding=1)", [6]),
    ("Linear(36)\n Reshape([-1, 6, 2])\n AvgPool2D(2, stride=1, padding=1)", [6]),
    # 1-D pools with padding: pairwise, overlapping, gaps
    ("MaxPool1D(2, padding=1)", [7, 2]),
    ("MaxPool1D(2, stride=3, padding=1)", [9, 2]),
    ("MaxPool1D(3, stride=1, padding=1)", [8, 2]),
    ("MaxPool1D(4, stride=3, padding=2)", [10, 2]),
    ("AvgPool1D(3, padding=1)", [8, 2]),
    ("AvgPool1D(2, stride=1, padding=1)", [5, 2]),
    ("AvgPool1D(4, stride=2, padding=2)", [9, 3]),
    ("Conv1D(3, 3, bias=true)\n MaxPool1D(3, stride=2, padding=1)", [11, 2]),
    # Global pools over signals and images
    ("GlobalAvgPool", [7, 3]),
    ("GlobalAvgPool", [4, 5, 3]),
    ("GlobalMaxPool", [7, 3]),
    ("GlobalMaxPool", [4, 5, 3]),
    ("Conv1D(4, 3)\n ReLU\n GlobalMaxPool", [9, 2]),
    ("Linear(24)\n Reshape([2, 4, 3])\n GlobalMaxPool", [5]),
    # Reshape (with -1) and Permute
    ("Reshape([8, 8, 1])\n MaxPool2D(2)", [64]),
    ("Reshape([4, -1])", [2, 3, 4]),
    ("Reshape([-1])", [2, 3, 4]),
    ("Permute([1, 2, 0])\n AvgPool2D(2, padding=1)", [3, 4, 5]),
    ("Permute([1, 0])\n MaxPool1D(2)", [5, 3]),
    ("Permute([2, 0, 1])\n Permute([0, 2, 1])", [3, 4, 2]),
    ("Linear(24)\n Reshape([2, 3, 4])\n Permute([2, 1, 0])\n MaxPool2D(2, stride=1)", [5]),
]


@pytest.mark.parametrize(
    ("index", "layers", "shape"), [(i, layers, shape) for i, (layers, shape) in enumerate(ORACLE_CASES)]
)
def test_matches_pytorch(index, layers, shape, rng):
    loss, optimizer = ("CrossEntropy", SGD) if index % 2 == 0 else ("MSE", ADAM)
    net = build(_model(layers, shape, loss, optimizer), seed=index)
    twin = PoolTwin(net)
    compare_once(net, twin, *oracle_batch(twin.config, rng))
    compare_training(net, twin, rng)


@pytest.mark.parametrize(
    "layers",
    ["MaxPool2D(2)", "MaxPool2D(2, padding=1)", "MaxPool2D(3, stride=1, padding=1)", "MaxPool2D([2, 3], stride=2)"]
    + ["MaxPool1D(3, stride=2, padding=1)", "MaxPool1D(2, padding=1)", "GlobalMaxPool"],
)
def test_ties_go_to_the_first_maximum_in_row_major_order_as_in_pytorch(layers, rng):
    """Inputs of only 0s and 1s (and the same −1 everywhere): nearly every window ties."""
    shape = [5, 6, 2] if "1D" not in layers else [7, 2]
    net = build(_model(layers, shape, "MSE", SGD))
    for x in (rng.integers(0, 2, (4, *shape)).astype(float), -np.ones((2, *shape))):
        compare_once(net, PoolTwin(net), {"x": x}, {"head": rng.standard_normal((len(x), 3))})
    # Without the head: the gradient itself lands on the first maximum.
    bare = build(f"model Net {{ input {shape} {layers} }}")
    x = np.zeros((1, *shape))
    y = bare.forward(x)
    dx = bare.backward(np.ones_like(y))
    x_torch = torch.zeros((1, *shape), dtype=torch.float64, requires_grad=True)
    PoolTwin(bare)._apply(bare.get_config()["layers"][0], [x_torch]).sum().backward()
    np.testing.assert_array_equal(dx, x_torch.grad.numpy())


def test_max_pool_2x2_ties_by_hand():
    net = build("model Net { input [2, 4, 1] MaxPool2D(2) }")
    x = np.array([[[[1.0], [1.0], [0.0], [3.0]], [[1.0], [1.0], [3.0], [3.0]]]])
    y = net.forward(x)
    np.testing.assert_array_equal(y[0, :, :, 0], [[1, 3]])
    dx = net.backward(np.array([[[[2.0], [5.0]]]]))
    np.testing.assert_array_equal(dx[0, :, :, 0], [[2, 0, 0, 5], [0, 0, 0, 0]])


GRAPH = """
model Branches {
    input x [6, 7, 2]
    h = x -> MaxPool2D(2, padding=1)
    m = h -> MaxPool2D(3, stride=1, padding=1)
    a = h -> AvgPool2D(3, stride=1, padding=1)
    p = h -> Permute([1, 0, 2])
    s = (m, a, p) -> Add
    g = s -> GlobalMaxPool
    v = s -> GlobalAvgPool
    r = h -> Reshape([-1])
    signal = x -> Reshape([21, -1]) -> MaxPool1D(3, stride=2, padding=1) -> AvgPool1D(2, padding=1) -> GlobalMaxPool
    (g, v, r, signal) -> Concat -> Linear(3)
    loss MSE
    optimizer OPTIMIZER
}
"""


@pytest.mark.parametrize("optimizer", [SGD, ADAM])
def test_graph_with_fan_out_through_every_new_layer_matches_pytorch(optimizer, rng):
    """Values read by several layers (x, h, s) add their gradients through temporaries: every template's dx
    works when it is a share to add, not the value's whole gradient."""
    net = build(GRAPH.replace("OPTIMIZER", optimizer))
    twin = PoolTwin(net)
    compare_once(net, twin, *oracle_batch(twin.config, rng))
    compare_training(net, twin, rng)


# ---- finite differences -------------------------------------------------------------------------------------

# name: (layer statements, input shape, losses to check with); test_catalogue requires every layer to have a case.
CASES = {
    "maxpool2d_pairs_uneven": ("MaxPool2D(2)", [5, 7, 2], ["MSE"]),
    "maxpool2d_pairs_padded_gaps": ("MaxPool2D(2, stride=3, padding=1)", [7, 8, 2], ["MSE"]),
    "maxpool2d_overlap_padded": ("MaxPool2D(3, stride=2, padding=1)", [7, 6, 2], ["MSE"]),
    "maxpool2d_rect": ("MaxPool2D([2, 3], stride=[1, 2], padding=[1, 0])", [5, 7, 2], ["MSE"]),
    "avgpool2d_overlap_padded": ("AvgPool2D(3, stride=2, padding=1)", [7, 6, 2], ["MSE"]),
    "avgpool2d_rect_gaps": ("AvgPool2D([1, 2], stride=[2, 3])", [5, 8, 2], ["MSE"]),
    "maxpool1d_padded": ("MaxPool1D(3, stride=2, padding=1)", [9, 2], ["MSE"]),
    "maxpool1d_pair_padded": ("MaxPool1D(2, padding=1)", [8, 2], ["MSE"]),
    "avgpool1d_padded": ("AvgPool1D(3, stride=1, padding=1)", [7, 2], ["MSE"]),
    "global_avg_image": ("GlobalAvgPool\n Linear(3)", [3, 4, 2], ["MSE", "CrossEntropy"]),
    "global_max_signal": ("GlobalMaxPool", [5, 3], ["MSE"]),
    "global_max_image": ("GlobalMaxPool\n Linear(3)", [3, 4, 2], ["CrossEntropy"]),
    "reshape_image": ("Linear(32)\n Reshape([4, -1, 2])\n AvgPool2D(2)\n Flatten\n Linear(3)", [5], ["MSE"]),
    "permute": ("Permute([1, 2, 0])\n MaxPool2D(2, padding=1)", [2, 3, 4], ["MSE"]),
}


@pytest.mark.parametrize(
    ("case", "loss"),
    [pytest.param(case, loss, id=f"{case}-{loss}") for case in sorted(CASES) for loss in CASES[case][2]],
)
def test_gradients_match_finite_differences(case, loss, rng):
    layers, shape, _ = CASES[case]
    net = build(_source(layers, shape, loss))
    for params in net.params.values():
        params[...] = rng.standard_normal(params.shape) * 0.5
    # Values at least 0.05 apart: no max-pool window is near a tie.
    check_gradients(net, _separated(rng, (3, *shape)), _targets(net, loss, rng, 3))


# ---- shapes, arguments and their errors ----------------------------------------------------------------------


def test_output_shapes_and_positional_forms():
    shapes = {
        "MaxPool2D(2)": ([7, 9, 3], (3, 4, 3)),
        "AvgPool2D([2, 3], [1, 2], [1, 0])": ([5, 7, 1], (6, 3, 1)),
        "MaxPool2D(3, stride=2, padding=1)": ([8, 8, 2], (4, 4, 2)),
        "MaxPool1D(3, 2, 1)": ([9, 2], (5, 2)),
        "AvgPool1D(2, padding=1)": ([9, 2], (5, 2)),
        "GlobalMaxPool": ([4, 5, 6], (6,)),
        "GlobalAvgPool": ([4, 6], (6,)),
        "Reshape([8, 8, 1])": ([64], (8, 8, 1)),
        "Reshape(shape=[2, -1])": ([3, 4], (2, 6)),
        "Reshape([-1])": ([3, 4], (12,)),
        "Permute([1, 2, 0])": ([3, 8, 9], (8, 9, 3)),
    }
    for layer, (shape, expected) in shapes.items():
        assert build(f"model N {{ input {shape} {layer} }}").output_shape == expected, layer
    assert nncompile.registry.LAYERS["MaxPool2D"].signature() == "MaxPool2D(k, stride=k, padding=0)"


def _error(source: str) -> str:
    with pytest.raises(nncompile.CompileError) as info:
        nncompile.compile_source(source, filename="m.nn")
    return str(info.value)


ERRORS = [
    # (layer statement, input shape, message); the error points at line 3 (the layer, or its argument)
    ("MaxPool2D(5)", [4, 4, 2], "MaxPool2D window 5 × 5 is larger than the image (4 × 4)"),
    ("AvgPool2D([2, 5], padding=[1, 1])", [4, 2, 2], "AvgPool2D window 2 × 5 is larger than the padded image (4 + 2·1) × (2 + 2·1)"),
    ("MaxPool1D(9, padding=1)", [6, 2], "MaxPool1D window k=9 is longer than the padded signal (length 6 + 2·1)"),
    ("AvgPool1D(9)", [8, 2], "AvgPool1D window k=9 is longer than the signal (length 8)"),
    ("MaxPool2D(2)", [8, 8], "MaxPool2D expects an image [height, width, channels], got [8, 8]; a one-channel 8×8 image is [8, 8, 1]"),
    ("AvgPool2D(2)", [64], "Reshape turns a vector into an image, e.g. [64] → Reshape([8, 8, 1])"),
    ("MaxPool2D(3, padding=2)", [8, 8, 1], "argument 'padding' of MaxPool2D must be at most half the window k=3, i.e. at most 1 (PyTorch refuses more), got 2"),
    ("AvgPool2D([2, 4], padding=[1, 3])", [8, 8, 1], "argument 'padding' of AvgPool2D must be at most half the window k=[2, 4], i.e. at most [1, 2] (PyTorch refuses more), got [1, 3]"),
    ("MaxPool1D(2, padding=2)", [8, 1], "argument 'padding' of MaxPool1D must be at most half the window k=2 (PyTorch refuses more), got 2"),
    ("AvgPool1D(3, padding=-1)", [8, 1], "argument 'padding' of AvgPool1D must not be negative, got -1"),
    ("MaxPool2D([2, 2, 2])", [8, 8, 1], "argument 'k' of MaxPool2D must be an integer or a list of 2 integers, got [2, 2, 2]"),
    ("MaxPool2D(2, stride=[1, 0])", [8, 8, 1], "argument 'stride' of MaxPool2D must be positive, got [1, 0]"),
    ("GlobalMaxPool", [8], "GlobalMaxPool expects a signal [length, channels] or an image [height, width, channels], got [8]"),
    ("Reshape([8, 8, 2])", [64], "Reshape to [8, 8, 2] needs 128 values per sample, but its input [64] has 64"),
    ("Reshape([-1, 7])", [4, 4], "Reshape cannot fit 16 values per sample (input [4, 4]) into [-1, 7]: 16 is not a multiple of 7"),
    ("Reshape([-1, 2, -1])", [4, 4], "argument 'shape' of Reshape may contain -1 only once, got [-1, 2, -1]"),
    ("Reshape([4, 0, 4])", [4, 4], "argument 'shape' of Reshape must hold positive sizes or one -1, got [4, 0, 4]"),
    ("Reshape(16)", [4, 4], "argument 'shape' of Reshape must be a list of integers, e.g. [8, 8, 1], got 16"),
    ("Permute([0, 0, 1])", [3, 4, 5], "argument 'axes' of Permute must be a permutation of 0 … 2 (each axis once), got [0, 0, 1]"),
    ("Permute([1, 2])", [3, 4, 5], "argument 'axes' of Permute must be a permutation of 0 … 1 (each axis once), got [1, 2]"),
    ("Permute([1, 0])", [3, 4, 5], "Permute([1, 0]) orders 2 axes, but its input [3, 4, 5] has 3"),
]  # fmt: skip


@pytest.mark.parametrize(("layer", "shape", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_shape_and_argument_errors_are_clear_and_located(layer, shape, message):
    text = _error(f"model N {{\n    input {shape}\n    {layer}\n}}\n")
    assert message in text, text
    first = text.splitlines()[0]
    column = int(re.match(r"m\.nn:3:(\d+): error: ", first).group(1))
    if "argument '" in message:
        assert column > 5, first  # at the argument
    else:
        assert column == 5 and "error: shape error in layer " in first, first  # at the layer


def test_a_list_written_without_brackets_gets_a_hint():
    text = _error("model N {\n    input [64]\n    Reshape(8, 8, 1)\n}\n")
    assert "Reshape takes at most 1 positional argument, got 3" in text
    assert "help: a list goes in brackets: Reshape([8, 8, 1])" in text
    assert "help: a list goes in brackets: Permute([2, 0, 1])" in _error("model N { input [2, 3, 4] Permute(2, 0, 1) }")


# ---- random stacks -------------------------------------------------------------------------------------------


def _pair_text(a: int, b: int) -> str:
    return str(a) if a == b else f"[{a}, {b}]"


@st.composite
def pooled_stacks(draw):
    """(input shape, layer statements): images, signals or vectors through random pools and shape layers."""
    kind = draw(st.sampled_from(["image", "signal", "vector"]))
    layers = []
    if kind == "vector":
        h, w, c = draw(st.integers(2, 6)), draw(st.integers(2, 6)), draw(st.integers(1, 3))
        start = [h * w * c]
        layers.append(draw(st.sampled_from([f"Reshape([{h}, {w}, {c}])", f"Reshape([-1, {w}, {c}])"])))
        shape = [h, w, c]
    elif kind == "image":
        start = shape = [draw(st.integers(2, 7)), draw(st.integers(2, 7)), draw(st.integers(1, 3))]
    else:
        start = shape = [draw(st.integers(3, 10)), draw(st.integers(1, 3))]
    for _ in range(draw(st.integers(1, 4))):
        step = draw(st.sampled_from(["pool", "pool", "permute", "reshape", "activation"]))
        if step == "pool" and len(shape) == 3:
            k = [draw(st.integers(1, min(shape[a] + 2, 4))) for a in (0, 1)]
            padding = [draw(st.integers(0, n // 2)) for n in k]
            if any(n > size + 2 * p for n, size, p in zip(k, shape, padding)):
                continue
            stride = [draw(st.integers(1, 3)) for _ in (0, 1)]
            name = draw(st.sampled_from(["MaxPool2D", "AvgPool2D"]))
            layers.append(f"{name}({_pair_text(*k)}, stride={_pair_text(*stride)}, padding={_pair_text(*padding)})")
            shape = [(size + 2 * p - n) // s + 1 for size, p, n, s in zip(shape, padding, k, stride)] + [shape[2]]
        elif step == "pool" and len(shape) == 2:
            k = draw(st.integers(1, min(shape[0] + 2, 4)))
            padding = draw(st.integers(0, k // 2))
            if k > shape[0] + 2 * padding:
                continue
            stride = draw(st.integers(1, 3))
            layers.append(
                f"{draw(st.sampled_from(['MaxPool1D', 'AvgPool1D']))}({k}, stride={stride}, padding={padding})"
            )
            shape = [(shape[0] + 2 * padding - k) // stride + 1, shape[1]]
        elif step == "permute":
            axes = draw(st.permutations(list(range(len(shape)))))
            layers.append(f"Permute({list(axes)})")
            shape = [shape[a] for a in axes]
        elif step == "reshape":
            size = int(np.prod(shape))
            chans = draw(st.sampled_from([d for d in (1, 2, 3) if size % d == 0]))
            if draw(st.booleans()):
                layers.append(f"Reshape([-1, {chans}])")
                shape = [size // chans, chans]
            else:
                width = draw(st.sampled_from([d for d in (1, 2, 3, 4) if size // chans % d == 0]))
                layers.append(f"Reshape([-1, {width}, {chans}])")
                shape = [size // chans // width, width, chans]
        else:
            layers.append(draw(st.sampled_from(["ReLU", "TanH", "Softplus"])))
    if draw(st.booleans()):
        layers.append(draw(st.sampled_from(["GlobalMaxPool", "GlobalAvgPool"])))
    return start, layers


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(stack=pooled_stacks(), seed=st.integers(0, 2**16))
def test_random_pooled_stacks_match_pytorch(stack, seed):
    shape, layers = stack
    optimizer = SGD if seed % 2 else ADAM
    net = build(_model("\n ".join(layers) or "Flatten", shape, "MSE", optimizer), seed=seed)
    twin = PoolTwin(net)
    rng = np.random.default_rng(seed)
    compare_once(net, twin, *oracle_batch(twin.config, rng))
    compare_training(net, twin, rng, steps=2)
