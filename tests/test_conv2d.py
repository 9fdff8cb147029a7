"""Conv2D, and Conv1D's padding and dilation: PyTorch as the oracle (float64, rtol 1e-9), finite differences,
shape and argument errors, lint-clean generated code, and random stacks (hypothesis).

Layouts: our Conv2D weight is (kh, kw, chan_in, out) and images are channels-last (batch, H, W, chan); torch's
weight is (out, chan_in, kh, kw) and images (batch, chan, H, W). The torch twin keeps our layout between layers and
permutes around each convolution, so Flatten flattens in our (H, W, chan) order.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_generated_code_is_clean, build, check_gradients, numeric_grad, rel_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nncompile

nn = torch.nn
TOLERANCE = 1e-9
STEPS = 3
SGD = "SGD(lr=0.05, momentum=0.9, weight_decay=0.01)"
ADAM = "Adam(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05)"


class ChannelsLast(nn.Module):
    """Run a torch channels-first convolution on our channels-last layout."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if x.dim() == 3:
            return self.inner(x.transpose(1, 2)).transpose(1, 2)
        return self.inner(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _torch_padding(value):
    return value if isinstance(value, (str, int)) else tuple(value)


def _pair(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def _torch_layer(layer: dict):
    kind, args, in_shape = layer["type"], layer["args"], layer["input_shapes"][0]
    if kind == "Conv2D":
        conv = nn.Conv2d(
            in_shape[2],
            args["out"],
            args["k"],
            stride=args["stride"],
            padding=_torch_padding(args["padding"]),
            dilation=args["dilation"],
            bias=args["bias"],
        )
        return ChannelsLast(conv)
    if kind == "Conv1D":
        conv = nn.Conv1d(
            in_shape[1],
            args["out"],
            args["k"],
            stride=args["stride"],
            padding=_torch_padding(args["padding"]),
            dilation=args["dilation"],
            bias=args["bias"],
        )
        return ChannelsLast(conv)
    if kind == "Linear":
        return nn.Linear(in_shape[0], args["out"], bias=args["bias"])
    if kind == "MaxPool2D":
        stride = args["stride"] or args["k"]  # None: the kernel, as in PyTorch
        return ChannelsLast(nn.MaxPool2d(_pair(args["k"]), _pair(stride), _pair(args["padding"])))
    if kind == "MaxPool1D":
        return ChannelsLast(nn.MaxPool1d(args["k"], args["stride"] or args["k"], args["padding"]))
    if kind == "GlobalMaxPool":
        return GlobalMax()
    return {"ReLU": nn.ReLU, "TanH": nn.Tanh, "Flatten": nn.Flatten}[kind]()


class GlobalMax(nn.Module):
    """GlobalMaxPool on our channels-last layout: the maximum over every axis but the batch and the channels."""

    def forward(self, x):
        return x.flatten(1, -2).amax(dim=1)


# Our layout from torch's, as a view (so copying into it writes the torch parameter).
TO_OURS = {
    "Conv2D": lambda t: t.permute(2, 3, 1, 0),
    "Conv1D": lambda t: t.permute(2, 1, 0),
    "Linear": lambda t: t.T,
}


def torch_twin(net):
    """The equivalent torch model with the same parameters, and our name → (torch parameter, to_ours)."""
    config = net.get_config()
    layers, mapping = [], {}
    for layer in config["layers"]:
        module = _torch_layer(layer).double()
        inner = getattr(module, "inner", module)
        if layer["type"] in TO_OURS:
            mapping[f"{layer['name']}.weight"] = (inner.weight, TO_OURS[layer["type"]])
            if inner.bias is not None:
                mapping[f"{layer['name']}.bias"] = (inner.bias, lambda t: t)
        layers.append(module)
    with torch.no_grad():
        for key, (tensor, to_ours) in mapping.items():
            to_ours(tensor).copy_(torch.from_numpy(net.params[key]))
    assert set(mapping) == set(net.params)
    return nn.Sequential(*layers), mapping, config


def _torch_optimizer(config, parameters):
    kind, args = config["optimizer"]["type"], config["optimizer"]["args"]
    if kind == "SGD":
        return torch.optim.SGD(parameters, lr=args["lr"], momentum=args["momentum"], weight_decay=args["weight_decay"])
    betas = (args["beta1"], args["beta2"])
    return torch.optim.Adam(parameters, lr=args["lr"], betas=betas, eps=args["eps"], weight_decay=args["weight_decay"])


def _batch(net, loss: str, rng, batch: int):
    x = rng.standard_normal((batch, *net.input_shape))
    if loss == "CrossEntropy":
        return x, rng.integers(0, net.output_shape[0], batch)
    return x, rng.standard_normal((batch, *net.output_shape))


def _source(layers: str, shape, loss: str, optimizer: str = SGD) -> str:
    return f"model Net {{\n input {list(shape)}\n {layers}\n loss {loss}\n optimizer {optimizer}\n}}\n"


def oracle_errors(source: str, rng, batch: int = 3) -> dict[str, float]:
    """Relative errors against torch of forward, loss, input and parameter gradients, and of the parameters after
    STEPS training steps on fresh batches."""
    net = build(source, seed=5)
    model, mapping, config = torch_twin(net)
    loss_kind = config["losses"][0]["type"]
    criterion = nn.CrossEntropyLoss() if loss_kind == "CrossEntropy" else nn.MSELoss()
    x, t = _batch(net, loss_kind, rng, batch)
    x_torch = torch.from_numpy(x.copy()).requires_grad_(True)
    out = model(x_torch)
    torch_loss = criterion(out, torch.from_numpy(t))
    torch_loss.backward()
    errors = {"forward": rel_error(net.forward(x), out.detach().numpy())}
    errors["loss"] = abs(net.loss(x, t) - torch_loss.item()) / abs(torch_loss.item())
    net.zero_grad()
    errors["dx"] = rel_error(net.backward(), x_torch.grad.numpy())
    for key, (tensor, to_ours) in mapping.items():
        errors[f"grad {key}"] = rel_error(net.grads[key], to_ours(tensor.grad).numpy())
    optimizer = _torch_optimizer(config, model.parameters())
    for _ in range(STEPS):
        x, t = _batch(net, loss_kind, rng, batch)
        optimizer.zero_grad()
        torch_loss = criterion(model(torch.from_numpy(x)), torch.from_numpy(t))
        torch_loss.backward()
        optimizer.step()
        value = net.train_step(x, t)
        errors["train loss"] = max(errors.get("train loss", 0), abs(value - torch_loss.item()) / abs(torch_loss.item()))
    for key, (tensor, to_ours) in mapping.items():
        errors[f"param {key}"] = rel_error(net.params[key], to_ours(tensor.detach()).numpy())
    return errors


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Conv2D arguments × input [H, W, C]: kernels square and not, strides, padding as int, pair, same and valid,
# dilation, bias or not, sizes where the last window does not fit evenly, few channels (tap-major im2col) and many
# (window-major).
CONV2D_CASES = [
    ("Conv2D(3, 3)", [6, 7, 2]),
    ("Conv2D(4, 3, bias=false)", [5, 5, 1]),
    ("Conv2D(2, [2, 3], stride=2)", [7, 8, 3]),
    ("Conv2D(3, 3, stride=[2, 3], padding=1)", [8, 9, 2]),
    ("Conv2D(3, [3, 1], padding=[2, 0], dilation=[2, 1])", [7, 5, 2]),
    ("Conv2D(2, 3, padding=same)", [6, 5, 3]),
    ("Conv2D(2, [2, 4], padding=same, bias=false)", [5, 7, 2]),
    ("Conv2D(3, [3, 2], padding=same, dilation=[2, 3])", [8, 8, 1]),
    ("Conv2D(3, 2, padding=valid, dilation=2)", [6, 7, 2]),
    ("Conv2D(4, 1)", [4, 3, 5]),
    ("Conv2D(2, 1, stride=2, padding=1)", [5, 4, 3]),
    ("Conv2D(3, 3, stride=3)", [10, 11, 2]),
    ("Conv2D(2, [5, 6])", [5, 6, 2]),
    ("Conv2D(3, 3, padding=3)", [2, 2, 2]),
    ("Conv2D(5, 3, stride=2, padding=[1, 2], dilation=[1, 2], bias=false)", [9, 10, 4]),
    ("Conv2D(6, 3, padding=1)", [6, 6, 8]),
    ("Conv2D(4, [2, 3], stride=[1, 2], dilation=[3, 1])", [9, 8, 16]),
    ("Conv2D(3, 2, padding=same)", [6, 6, 8]),
]
CONV1D_CASES = [
    ("Conv1D(3, 3, padding=1, bias=true)", [7, 2]),
    ("Conv1D(2, 4, padding=same)", [6, 3]),
    ("Conv1D(3, 3, padding=same, dilation=2, bias=true)", [9, 2]),
    ("Conv1D(2, 2, stride=2, padding=2, dilation=3)", [9, 1]),
    ("Conv1D(3, 3, dilation=2)", [8, 2]),
    ("Conv1D(2, 2, stride=3, dilation=2, bias=true)", [11, 2]),
    ("Conv1D(2, 3, padding=valid)", [6, 2]),
    ("Conv1D(3, 1, stride=2, padding=1)", [5, 2]),
]


@pytest.mark.parametrize(("layer", "shape"), CONV2D_CASES + CONV1D_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("optimizer", [SGD, ADAM], ids=["sgd", "adam"])
# PyTorch notes that it pads a copy of the input for an even kernel with padding=same: the oracle's cost, not ours.
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
def test_convolution_matches_pytorch(layer, shape, optimizer, rng):
    source = _source(f"conv = {layer}\n Tanh\n Flatten\n head = Linear(3)", shape, "CrossEntropy", optimizer)
    errors = oracle_errors(source, rng)
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.parametrize(("layer", "shape"), CONV2D_CASES[:6] + CONV1D_CASES[:3], ids=lambda v: str(v))
def test_convolution_alone_with_mse_matches_pytorch(layer, shape, rng):
    """The convolution's output is the model's: its gradient is the loss's, not routed through other layers."""
    errors = oracle_errors(_source(f"conv = {layer}", shape, "MSE", ADAM), rng, batch=2)
    assert max(errors.values()) < TOLERANCE, errors


def test_stacked_convolutions_match_pytorch(rng):
    layers = """c1 = Conv2D(4, 3, padding=same, bias=false)
 ReLU
 c2 = Conv2D(6, [3, 2], stride=2, padding=[1, 0], dilation=[1, 2])
 Tanh
 c3 = Conv2D(3, 1, init=xavier_uniform)
 Flatten
 head = Linear(4)"""
    errors = oracle_errors(_source(layers, [10, 9, 2], "CrossEntropy", ADAM), rng, batch=4)
    assert max(errors.values()) < TOLERANCE, errors


def test_v1_conv1d_files_keep_their_code():
    """Without padding or dilation, Conv1D's generated code is version 1's: no padded buffers, no 4-D windows."""
    code = nncompile.compile_source("model N { input [9, 2] Conv1D(3, 3, stride=2, bias=true) loss MSE }")
    assert "padded" not in code and "tap_offset" not in code
    assert "y[b, t, o] = Σ_{j, c} x[b, t·stride + j, c] · W[j, c, o] + bias[o]" in code
    assert "(signal.shape[0], 4, 6), (step_batch, 2 * step_position, step_channel)" in code


# ---- finite differences (module-level CASES: tests/test_catalogue.py checks every entry appears in one) ----

# name: (layer statements, input shape, loss)
CASES = {
    "conv2d_same": ("Conv2D(2, 3, padding=same)", [4, 5, 2], "MSE"),
    "conv2d_stride_pad_dilation": (
        "Conv2D(3, [3, 2], stride=[2, 1], padding=[1, 2], dilation=[1, 2])",
        [6, 5, 2],
        "MSE",
    ),
    "conv2d_uneven_no_bias": ("Conv2D(2, 2, stride=3, bias=false)", [7, 8, 3], "MSE"),
    "conv2d_many_channels": ("Conv2D(2, [1, 2], padding=1)", [3, 3, 9], "MSE"),
    "conv2d_head": ("Conv2D(3, 3, stride=2, padding=1)\n ReLU\n Flatten\n Linear(3)", [5, 6, 1], "CrossEntropy"),
    "conv1d_pad_dilation": ("Conv1D(3, 3, stride=2, padding=2, dilation=2, bias=true)", [9, 2], "MSE"),
    "conv1d_same": ("Conv1D(2, 4, padding=same)", [6, 2], "MSE"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_match_finite_differences(case, rng):
    layers, shape, loss = CASES[case]
    net = build(_source(layers, shape, loss))
    for param in net.params.values():
        param[...] = rng.standard_normal(param.shape) * 0.5
    x, t = _batch(net, loss, rng, 2)
    check_gradients(net, x, t)


def test_graph_model_gradients_match_finite_differences(rng):
    """Conv2D reading a model input twice, feeding several consumers (its dx added to another's), padded or not."""
    net = build(
        """
model G {
    input x [6, 5, 2]
    a = x -> Conv2D(3, 3, padding=same)
    b = x -> Conv2D(3, [2, 3], padding=same, dilation=2, bias=false)
    c = a -> Conv2D(3, 1)
    s = (a, b, c) -> Add -> Tanh
    out = s -> Conv2D(2, 2, stride=2, padding=1) -> Flatten -> Linear(3)
    loss MSE
}
"""
    )
    for param in net.params.values():
        param[...] = rng.standard_normal(param.shape) * 0.5
    check_gradients(net, rng.standard_normal((2, 6, 5, 2)), rng.standard_normal((2, 3)))


def test_gradients_accumulate_and_backward_takes_dout(rng):
    net = build(_source("conv = Conv2D(3, 3, stride=2, padding=1)", [6, 5, 2], "MSE"))
    x = rng.standard_normal((2, 6, 5, 2))
    dout = rng.standard_normal((2, *net.output_shape))
    net.forward(x)
    net.zero_grad()
    dx = net.backward(dout)
    once = {k: g.copy() for k, g in net.grads.items()}
    objective = lambda: float(np.vdot(net.forward(x), dout))
    assert rel_error(dx, numeric_grad(objective, x)) < 1e-6
    net.forward(x)
    net.backward(dout)
    for name, grad in net.grads.items():
        np.testing.assert_allclose(grad, 2 * once[name], rtol=1e-12, err_msg=name)


def test_non_contiguous_inputs_give_the_same_result(rng):
    for layer in ("Conv2D(3, 3)", "Conv2D(3, 2, padding=1)", "Conv2D(2, 2, dilation=2)"):
        net = build(_source(layer, [6, 6, 16], "MSE"))
        x = rng.standard_normal((3, 6, 6, 16))
        view = np.asfortranarray(x)
        np.testing.assert_array_equal(net.forward(view).copy(), net.forward(x))


# ---- shapes, arguments and errors ----


def _error(source: str) -> str:
    with pytest.raises(nncompile.CompileError) as info:
        nncompile.compile_source(source, filename="m.nn")
    return str(info.value)


@pytest.mark.parametrize(
    ("layer", "shape", "out"),
    [
        ("Conv2D(4, 3)", [28, 28, 1], (26, 26, 4)),
        ("Conv2D(4, 3, padding=same)", [28, 27, 1], (28, 27, 4)),
        ("Conv2D(4, [4, 2], padding=same, dilation=3)", [10, 7, 2], (10, 7, 4)),
        ("Conv2D(4, 3, stride=2, padding=1)", [28, 28, 1], (14, 14, 4)),
        ("Conv2D(4, [5, 3], stride=[2, 1], padding=[2, 0], dilation=[1, 2])", [11, 9, 3], (6, 5, 4)),
        ("Conv1D(4, 3, padding=same, dilation=2)", [10, 3], (10, 4)),
        ("Conv1D(4, 3, stride=2, padding=1)", [10, 3], (5, 4)),
    ],
)
def test_output_shapes_follow_pytorch(layer, shape, out):
    net = build(f"model N {{ input {shape} {layer} }}")
    assert net.output_shape == out


def test_he_normal_fan_in_is_kh_kw_cin():
    code = nncompile.compile_source("model N { input [8, 8, 3] conv = Conv2D(16, [3, 5]) }")
    assert "conv.weight: he_normal, N(0, 2 / fan_in), fan_in=45, fan_out=240" in code
    net = build("model N { input [20, 20, 8] conv = Conv2D(64, 5) }", seed=1)
    assert abs(net.params["conv.weight"].std() - np.sqrt(2 / 200)) < 0.005
    assert not net.params["conv.bias"].any()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("model N { input [64] Conv2D(4, 3) }", "Conv2D expects an image [height, width, channels], got [64]"),
        (
            "model N { input [64] Conv2D(4, 3) }",
            "8×8 pixels of one channel are [8, 8, 1]: declare `input [8, 8, 1]` or add Reshape([8, 8, 1])",
        ),
        ("model N { input [28, 28] Conv2D(4, 3) }", "a one-channel image of 28×28 is [28, 28, 1]"),
        ("model N { input [4, 4, 2] Conv2D(4, 5) }", "Conv2D kernel 5×5 is larger than the input 4×4"),
        (
            "model N { input [4, 4, 2] Conv2D(4, 7, padding=1) }",
            "Conv2D kernel 7×7 is larger than the input 4×4 padded to 6×6",
        ),
        (
            "model N { input [6, 9, 2] Conv2D(4, 3, dilation=[3, 1]) }",
            "Conv2D kernel 3×3 with dilation [3, 1] (extent 7×3) is larger than the input 6×9",
        ),
        (
            "model N { input [8, 8, 1] Conv2D(4, 3, stride=2, padding=same) }",
            "argument 'padding' of Conv2D can be 'same' only with stride 1, as in PyTorch (stride is [2, 2])",
        ),
        (
            "model N { input [8, 8, 1] Conv2D(4, 3, padding=full) }",
            "argument 'padding' of Conv2D must be one of valid, same",
        ),
        ("model N { input [8, 8, 1] Conv2D(4, 3, padding=-1) }", "argument 'padding' of Conv2D must not be negative"),
        (
            "model N { input [8, 8, 1] Conv2D(4, [3, 3, 3]) }",
            "argument 'k' of Conv2D must be an integer or a list of 2",
        ),
        ("model N { input [8, 8, 1] Conv2D(4, 3, dilation=0) }", "argument 'dilation' of Conv2D must be positive"),
        ("model N { input [8, 8, 1] Conv2D(4) }", "Conv2D needs argument 'k'"),
        ("model N { input [8, 3] Conv1D(4, 3, stride=2, padding=same) }", "can be 'same' only with stride 1"),
        ("model N { input [8, 3] Conv1D(4, 3, padding=[1, 2]) }", "argument 'padding' of Conv1D must be an integer or"),
        ("model N { input [4, 3] Conv1D(4, 3, dilation=2) }", "Conv1D window k=3 with dilation 2 (extent 5) is longer"),
        (
            "model N { input [2, 3] Conv1D(4, 5, padding=1) }",
            "Conv1D window k=5 is longer than the signal (length 2, 4 with padding)",
        ),
        ("model N { input [2, 3] Conv1D(4, 3) }", "Conv1D window k=3 is longer than the signal (length 2)"),
    ],
)
def test_shape_and_argument_errors_are_clear(source, message):
    assert message in _error(source)


def test_shape_error_points_at_the_layer():
    text = _error("model N {\n input [64]\n Linear(64)\n Conv2D(4, 3)\n}")
    assert "m.nn:4" in text and "got [64]" in text


# ---- generated code ----

VARIANTS = [
    "model A { input [9, 9, 1] Conv2D(2, 3, padding=same) loss MSE }",
    "model B { input [9, 8, 3] Conv2D(2, [3, 2], stride=[2, 1], padding=[1, 2], dilation=[1, 2], bias=false) }",
    "model C { input [6, 6, 16] Conv2D(4, 3, stride=2) loss MSE optimizer Adam }",
    "model D { input [6, 6, 16] Conv2D(4, 3, dilation=2, padding=2, bias=false) loss MSE }",
    "model E { input [6, 6, 8] Conv2D(4, 1) Flatten Linear(2) loss CrossEntropy }",
    "model F { input [8, 8, 2] Conv2D(4, 2, stride=2) Conv2D(4, 2, stride=3) loss MSE }",
    "model G { input [12, 2] Conv1D(4, 3, padding=same, dilation=3) Conv1D(2, 2, stride=2, padding=1, bias=true) }",
    "model H { input [12, 16] Conv1D(4, 3, dilation=2, bias=true) loss MSE }",
]


def test_generated_code_is_lint_clean_and_formatted(tmp_path):
    for index, source in enumerate(VARIANTS):
        (tmp_path / f"m{index}.py").write_text(nncompile.compile_source(source), encoding="utf-8")
    assert_generated_code_is_clean(sorted(map(str, tmp_path.glob("*.py"))))


def test_both_im2col_layouts_are_used():
    few = nncompile.compile_source("model N { input [8, 8, 3] Conv2D(4, 3) }")
    many = nncompile.compile_source("model N { input [8, 8, 16] Conv2D(4, 3) }")
    assert "im2col, tap-major" in few and "cols[b, h, w] is window" not in few
    assert "cols[b, h, w] is window" in many and "tap-major" not in many


# ---- random stacks ----


@st.composite
def _stacks(draw):
    h, w, c = draw(st.integers(3, 8)), draw(st.integers(3, 8)), draw(st.sampled_from([1, 2, 5, 16]))
    lines = []
    for index in range(draw(st.integers(1, 3))):
        kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        if draw(st.booleans()):
            padding, sh, sw = "same", 1, 1
        else:
            sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
            ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
            padding = draw(st.sampled_from([f"{ph}", f"[{ph}, {pw}]", "valid"]))
        args = f"{draw(st.integers(1, 6))}, [{kh}, {kw}], stride=[{sh}, {sw}], padding={padding}, dilation=[{dh}, {dw}]"
        args += draw(st.sampled_from(["", ", bias=false"]))
        lines.append(f"c{index} = Conv2D({args})")
        lines.append(draw(st.sampled_from(["ReLU", "Tanh"])))
    lines += ["Flatten", "head = Linear(3)"]
    return "\n ".join(lines), [h, w, c]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_stacks())
def test_random_conv2d_stacks_match_pytorch(stack):
    layers, shape = stack
    source = _source(layers, shape, "CrossEntropy", ADAM)
    try:
        nncompile.compile_source(source)
    except nncompile.CompileError as error:
        # The drawn kernel does not fit somewhere: that must be the reason.
        assert "is larger than the input" in str(error)
        return
    errors = oracle_errors(source, np.random.default_rng(0), batch=2)
    assert max(errors.values()) < TOLERANCE, (source, errors)
