"""PyTorch as an independent oracle for the layer catalogue, losses and optimizers (float64, rtol 1e-9).

For each model, the generated module's parameters are copied into the equivalent torch.nn model, built here from
the module's get_config(). Layouts differ and are converted explicitly:
  Linear weight: ours (in, out), torch (out, in).
  Conv1D weight: ours (k, chan_in, chan_out), torch (chan_out, chan_in, k).
  Signals: ours channels-last (batch, length, chan), torch (batch, chan, length): the torch model keeps our layout
  between layers and transposes around Conv1d and the pools; Flatten then flattens in our (length, chan) order.
Then forward output, loss, input gradient, every parameter gradient, and parameters after several training steps
(SGD with momentum and weight decay, Adam with weight decay) must agree.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import build, rel_error

nn = torch.nn

TOLERANCE = 1e-9
STEPS = 4


class ChannelsLast(nn.Module):
    """Run a torch (batch, chan, length) module on our (batch, length, chan) layout."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.transpose(1, 2)).transpose(1, 2)


def _torch_layer(layer: dict, in_shape):
    kind, args = layer["type"], layer["args"]
    if kind == "Linear":
        return nn.Linear(in_shape[0], args["out"], bias=args["bias"])
    if kind == "Conv1D":
        return ChannelsLast(nn.Conv1d(in_shape[1], args["out"], args["k"], stride=args["stride"], bias=args["bias"]))
    if kind in ("MaxPool1D", "AvgPool1D"):
        stride = args["stride"] or args["k"]
        pool = nn.MaxPool1d if kind == "MaxPool1D" else nn.AvgPool1d
        return ChannelsLast(pool(args["k"], stride=stride, padding=args.get("padding", 0)))
    simple = {
        "Flatten": nn.Flatten,
        "ReLU": nn.ReLU,
        "Sigmoid": nn.Sigmoid,
        "TanH": nn.Tanh,
        "Softplus": nn.Softplus,
        "Softmax": lambda: nn.Softmax(dim=-1),
        "LogSoftmax": lambda: nn.LogSoftmax(dim=-1),
        "LeakyReLU": lambda: nn.LeakyReLU(args["alpha"]),
    }
    return simple[kind]()


def _copy_params(layer: dict, module, params: dict) -> dict:
    """Copy our parameters into the torch layer; return our name → (torch parameter, to_ours) for comparisons."""
    name, kind = layer["name"], layer["type"]
    mapping = {}
    if kind == "Linear":
        mapping[f"{name}.weight"] = (module.weight, lambda t: t.T)
        if module.bias is not None:
            mapping[f"{name}.bias"] = (module.bias, lambda t: t)
    elif kind == "Conv1D":
        conv = module.inner
        mapping[f"{name}.weight"] = (conv.weight, lambda t: t.permute(2, 1, 0))
        if conv.bias is not None:
            mapping[f"{name}.bias"] = (conv.bias, lambda t: t)
    with torch.no_grad():
        for key, (tensor, to_ours) in mapping.items():
            # to_ours is a permutation, so it is its own inverse up to the order of axes: copy through it.
            to_ours(tensor).copy_(torch.from_numpy(params[key]))
    return mapping


def torch_twin(net):
    """The torch model equivalent to a generated model, with the same parameters, plus the name mapping."""
    config = net.get_config()
    layers, mapping = [], {}
    for layer in config["layers"]:
        module = _torch_layer(layer, layer["input_shapes"][0]).double()
        mapping.update(_copy_params(layer, module, net.params))
        layers.append(module)
    model = nn.Sequential(*layers)
    assert set(mapping) == set(net.params)
    return model, mapping, config


def _torch_loss(config):
    return {"MSE": nn.MSELoss, "CrossEntropy": nn.CrossEntropyLoss, "BCE": nn.BCELoss}[config["losses"][0]["type"]]()


def _torch_optimizer(config, parameters):
    kind, args = config["optimizer"]["type"], config["optimizer"]["args"]
    if kind == "SGD":
        return torch.optim.SGD(parameters, lr=args["lr"], momentum=args["momentum"], weight_decay=args["weight_decay"])
    return torch.optim.Adam(
        parameters,
        lr=args["lr"],
        betas=(args["beta1"], args["beta2"]),
        eps=args["eps"],
        weight_decay=args["weight_decay"],
    )


CNN = """
    conv1 = Conv1D(4, 3, bias=true)
    ReLU
    MaxPool1D(2)
    conv2 = Conv1D(3, 2, stride=2, init=he_uniform)
    Softplus
    AvgPool1D(2, stride=1)
    Flatten
    head = Linear(5)
"""
SIGNAL_SOFTMAX = """
    conv = Conv1D(4, 3, stride=2, bias=true, init=xavier_uniform)
    LeakyReLU(0.2)
    MaxPool1D(3, stride=2)
    Softmax
    Flatten
    Linear(3, bias=false)
    TanH
"""
MLP = """
    Linear(8, init=xavier_uniform)
    LeakyReLU
    Linear(6, init=he_uniform)
    Softplus
    Linear(4)
    StableSigmoid
"""
LOG_SOFTMAX = """
    Linear(6)
    Tanh
    Linear(5)
    LogSoftmax
"""

SGD = "SGD(lr=0.05, momentum=0.9, weight_decay=0.01)"
ADAM = "Adam(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05)"

# name: (layers, input shape, loss, optimizer)
MODELS = {
    "cnn_ce_sgd": (CNN, [16, 2], "CrossEntropy", SGD),
    "cnn_ce_adam": (CNN, [16, 2], "CrossEntropy", ADAM),
    "cnn_ce_adam_defaults": (CNN, [16, 2], "CrossEntropy", "Adam"),
    "signal_softmax_mse_adam": (SIGNAL_SOFTMAX, [15, 3], "MSE", ADAM),
    "signal_softmax_mse_sgd": (SIGNAL_SOFTMAX, [15, 3], "MSE", SGD),
    "mlp_bce_adam": (MLP, [5], "BCE", ADAM),
    "mlp_bce_sgd": (MLP, [5], "BCE", SGD),
    "log_softmax_mse_adam": (LOG_SOFTMAX, [4], "MSE", ADAM),
}


def _source(layers, shape, loss, optimizer):
    return f"model Net {{\n input {shape}\n{layers}\n loss {loss}\n optimizer {optimizer}\n}}\n"


def _batch(net, loss, rng, batch=6):
    x = rng.standard_normal((batch, *net.input_shape))
    if loss == "CrossEntropy":
        return x, rng.integers(0, net.output_shape[0], batch)
    if loss == "BCE":
        return x, rng.random((batch, *net.output_shape))
    return x, rng.standard_normal((batch, *net.output_shape))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_matches_pytorch(name, rng):
    layers, shape, loss, optimizer = MODELS[name]
    net = build(_source(layers, shape, loss, optimizer), seed=3)
    model, mapping, config = torch_twin(net)
    criterion = _torch_loss(config)
    x, t = _batch(net, loss, rng)
    t_torch = torch.from_numpy(t)

    # One forward and backward: output, loss, input gradient and every parameter gradient.
    x_torch = torch.from_numpy(x.copy()).requires_grad_(True)
    out = model(x_torch)
    torch_loss = criterion(out, t_torch)
    torch_loss.backward()
    np.testing.assert_array_less(rel_error(net.forward(x), out.detach().numpy()), TOLERANCE)
    value = net.loss(x, t)
    assert abs(value - torch_loss.item()) <= TOLERANCE * abs(torch_loss.item())
    net.zero_grad()
    dx = net.backward()
    assert rel_error(dx, x_torch.grad.numpy()) < TOLERANCE, "input gradient"
    for key, (tensor, to_ours) in mapping.items():
        assert rel_error(net.grads[key], to_ours(tensor.grad).numpy()) < TOLERANCE, key

    # Several training steps on fresh batches: parameters must track torch.optim step for step.
    optimizer_torch = _torch_optimizer(config, model.parameters())
    for _ in range(STEPS):
        x, t = _batch(net, loss, rng)
        optimizer_torch.zero_grad()
        torch_loss = criterion(model(torch.from_numpy(x)), torch.from_numpy(t))
        torch_loss.backward()
        optimizer_torch.step()
        value = net.train_step(x, t)
        assert abs(value - torch_loss.item()) <= TOLERANCE * abs(torch_loss.item())
    for key, (tensor, to_ours) in mapping.items():
        assert rel_error(net.params[key], to_ours(tensor.detach()).numpy()) < TOLERANCE, key
