"""The train-step contenders of bench_train_step.py: generated, pytorch and gemm_floor.
Each builder returns a zero-argument callable that runs one full training step."""

import os

import numpy as np
import torch
from nn_spec import TracedLayer
from torch import nn


class Unavailable(Exception):
    """A contender cannot run here; the message says why."""


# ---------------------------------------------------------------- parameters


def init_params(traced: list[TracedLayer], seed: int) -> dict[str, np.ndarray]:
    """Fan-in scaled uniform weights, used when the compiled net is unavailable."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in expected_param_shapes(traced).items():
        if name.endswith(".weight"):
            bound = 1.0 / np.sqrt(np.prod(shape[:-1]))  # fan-in; a layer's bias follows its weight
        params[name] = rng.uniform(-bound, bound, shape).astype(np.float32)
    return params


def expected_param_shapes(traced: list[TracedLayer]) -> dict[str, tuple[int, ...]]:
    return {name: shape for layer in traced for name, shape in layer.params.items()}


# ---------------------------------------------------------------- generated


def load_generated(nn_path, class_name: str, traced: list[TracedLayer]):
    """Compile the .nn file with nncompile and return `Cls(seed=0)`, or raise Unavailable."""
    try:
        import nncompile

        module = nncompile.load(str(nn_path), dtype="float32")
        net = getattr(module, class_name)(seed=0)
    except Exception as exc:  # the compiler is still being written: report, don't crash
        raise Unavailable(describe_error(exc)) from exc
    _check_params(net.params, expected_param_shapes(traced))
    return net


def generated_step(net, x: np.ndarray, y: np.ndarray):
    return lambda: float(net.train_step(x, y))


def _check_params(params: dict, expected: dict) -> None:
    got = {name: tuple(np.shape(value)) for name, value in params.items()}
    if got != expected:
        raise Unavailable(f"net.params {got} differ from the expected {expected}")


def describe_error(exc: Exception, limit: int = 160) -> str:
    """`Type: first line of message`, shortened to fit a table cell."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- pytorch


def pytorch_step(traced, params, x, y, lr: float):
    """Eager nn.Sequential + CrossEntropyLoss + SGD, weights copied from `params`."""
    torch.set_num_threads(os.cpu_count())
    modules = [_torch_module(layer) for layer in traced]
    for layer, module in zip(traced, modules):
        _copy_weights(layer, module, params)
    model = nn.Sequential(*modules)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    xt = torch.from_numpy(_channels_first(x))
    yt = torch.from_numpy(y.astype(np.int64))

    def step() -> float:
        optimizer.zero_grad()
        loss = loss_fn(model(xt), yt)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def _channels_first(x: np.ndarray) -> np.ndarray:
    """(B, L, C) or (B, H, W, C) channels-last -> (B, C, L) or (B, C, H, W) as torch's convolutions want; 2-D input
    unchanged."""
    return np.ascontiguousarray(np.moveaxis(x, -1, 1) if x.ndim >= 3 else x)


def _torch_module(traced: TracedLayer) -> nn.Module:
    layer, kw = traced.layer, traced.layer.kwargs
    if layer.kind == "Linear":
        return nn.Linear(traced.in_shape[0], traced.out_shape[0], bias=kw.get("bias", True))
    if layer.kind == "Conv1D":
        chan_out, k = layer.args
        return nn.Conv1d(traced.in_shape[1], chan_out, k, stride=kw.get("stride", 1), bias=kw.get("bias", True))
    if layer.kind == "Conv2D":
        chan_out, k = layer.args
        return nn.Conv2d(
            traced.in_shape[2],
            chan_out,
            k,
            stride=kw.get("stride", 1),
            padding=kw.get("padding", 0),
            dilation=kw.get("dilation", 1),
            bias=kw.get("bias", True),
        )
    if layer.kind == "MaxPool1D":
        (k,) = layer.args
        return nn.MaxPool1d(k, stride=kw.get("stride", k))
    if layer.kind == "MaxPool2D":
        (k,) = layer.args
        return nn.MaxPool2d(k, stride=kw.get("stride", k))
    if layer.kind == "Flatten":
        return ChannelsLastFlatten() if len(traced.in_shape) >= 2 else nn.Identity()
    return nn.ReLU()


class ChannelsLastFlatten(nn.Module):
    """Flatten torch's (B, C, L) or (B, C, H, W) in the compiler's (L, C) or (H, W, C) row-major order."""

    def forward(self, x):
        return x.movedim(1, -1).flatten(1)


def _copy_weights(traced: TracedLayer, module: nn.Module, params: dict) -> None:
    for name in traced.params:
        value = params[name]
        if name.endswith(".weight"):
            # Linear (in, out) -> (out, in); Conv1D (k, cin, cout) -> (cout, cin, k);
            # Conv2D (kh, kw, cin, cout) -> (cout, cin, kh, kw)
            value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
        target = getattr(module, name.rsplit(".", 1)[1])
        if tuple(target.shape) != value.shape:
            raise ValueError(f"{name}: torch shape {tuple(target.shape)} vs {value.shape}")
        with torch.no_grad():
            target.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


# ---------------------------------------------------------------- gemm floor


def gemm_floor_step(traced: list[TracedLayer], batch: int, seed: int):
    """Only the training step's matrix products, on preallocated float32 arrays.

    Per parameter layer: forward, weight gradient and (except for the first
    layer) input gradient; a Conv1D or Conv2D counts as its im2col GEMM.
    """
    rng = np.random.default_rng(seed)
    gemms = []
    for index, layer in enumerate(layer for layer in traced if layer.params):
        rows, inner, cols = _gemm_dims(layer, batch)
        acts = _rand(rng, rows, inner)  # activations, im2col'ed for a conv
        weight = _rand(rng, inner, cols)
        grad_out = _rand(rng, rows, cols)
        acts_t, weight_t = _aligned((inner, rows)), _aligned((cols, inner))
        acts_t[...], weight_t[...] = acts.T, weight.T
        gemms.append((acts, weight, _aligned((rows, cols))))
        gemms.append((acts_t, grad_out, _aligned((inner, cols))))
        if index > 0:
            gemms.append((grad_out, weight_t, _aligned((rows, inner))))
    matmul = np.matmul

    def step() -> None:
        for a, b, out in gemms:
            matmul(a, b, out=out)

    return step


def _gemm_dims(layer: TracedLayer, batch: int) -> tuple[int, int, int]:
    """(rows, inner, cols) of the layer's forward GEMM."""
    if layer.layer.kind == "Conv1D":
        out_len, chan_out = layer.out_shape
        k = layer.layer.args[1]
        return batch * out_len, k * layer.in_shape[1], chan_out
    if layer.layer.kind == "Conv2D":
        out_h, out_w, chan_out = layer.out_shape
        k = layer.layer.args[1]
        return batch * out_h * out_w, k * k * layer.in_shape[2], chan_out
    return batch, layer.in_shape[0], layer.out_shape[0]


def _aligned(shape) -> np.ndarray:
    """An empty float32 array starting on a 64-byte boundary, as the generated code allocates its buffers:
    where an array starts changes small-array speed by up to ~40% on this machine, so the floor gets the same."""
    size = int(np.prod(shape)) * 4
    raw = np.empty(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + size].view(np.float32).reshape(shape)


def _rand(rng, *shape) -> np.ndarray:
    array = _aligned(shape)
    array[...] = rng.standard_normal(shape, dtype=np.float32)
    return array
