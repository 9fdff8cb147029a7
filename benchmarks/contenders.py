"""The generated, pytorch and gemm_floor contenders of bench_train_step.py, built from nncompile's IR graph of a
workload; each builder returns callables that run one full training step."""

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from workload import aligned, aligned_normal, load_class

from nncompile import ir
from nncompile.layers.normalization import Dropout

# Layers whose forward pass is one GEMM (a convolution as its im2col GEMM): what the floor counts.
GEMM_LAYERS = ("Linear", "Conv1D", "Conv2D")


class Unavailable(Exception):
    """A contender cannot run here; the message says why."""


@dataclass
class Steps:
    """A contender's training step, and the one the loss gate runs: the same step, except that Dropout then uses
    the masks the generated net draws (see GateMasks)."""

    timed: Callable[[], object]
    gate: Callable[[], object]


def describe_error(exc: Exception, limit: int = 160) -> str:
    """`Type: first line of message`, shortened to fit a table cell."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- parameters and layouts


def param_shapes(graph: ir.Model) -> dict[str, tuple[int, ...]]:
    """Every parameter and running statistic of the graph ("layer.param" → shape), in the compiler's layout:
    Linear weight (in, out), Conv1D (k, chan_in, out), Conv2D (kh, kw, chan_in, out)."""
    return {f"{node.name}.{p.name}": tuple(p.shape) for node in graph.nodes for p in node.params}


def drawn_values(graph: ir.Model, seed: int) -> dict[str, np.ndarray]:
    """Starting values for when there is no generated net to copy them from: ones and zeros where the layer starts
    with them (BatchNorm), else N(0, 2 / fan_in)."""
    rng = np.random.default_rng(seed)
    values = {}
    for node in graph.nodes:
        for p in node.params:
            if p.init in ("ones", "zeros"):
                value = np.full(p.shape, 1.0 if p.init == "ones" else 0.0)
            else:
                value = rng.standard_normal(p.shape) * np.sqrt(2.0 / p.fan_in)
            values[f"{node.name}.{p.name}"] = value.astype(np.float32)
    return values


def channels_first(array: np.ndarray) -> np.ndarray:
    """A batch of channels-last signals (B, L, C) or images (B, H, W, C) as torch's convolutions want them,
    (B, C, L) or (B, C, H, W); a batch of vectors unchanged."""
    return np.ascontiguousarray(np.moveaxis(array, -1, 1) if array.ndim >= 3 else array)


def torch_weight_layout(value: np.ndarray) -> np.ndarray:
    """A Linear or convolution weight from the compiler's (taps..., in, out) to torch's (out, in, taps...)."""
    return value.transpose(value.ndim - 1, value.ndim - 2, *range(value.ndim - 2))


class GateMasks:
    """Dropout's scales (mask / (1 - p)) for the loss gate, drawn as the generated module draws them: per step, one
    array per Dropout layer in graph order, from a copy of the generator the generated net draws from: uniform 32-bit
    integers, two from each raw 64-bit draw (Dropout.DRAW_CHUNK at a time), an element kept where its integer is >=
    round(p·2³²). So all contenders drop the same elements while the gate runs."""

    def __init__(self, generator: np.random.Generator):
        self.generator = copy.deepcopy(generator)

    def scale(self, shape: tuple[int, ...], p: float) -> np.ndarray:
        """The channels-last scale array of one Dropout layer for one step."""
        count, chunk = math.prod(shape), Dropout.DRAW_CHUNK
        parts = []
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            parts.append(self.generator.bit_generator.random_raw((size + 1) // 2).view(np.uint32)[:size])
        scale = (np.concatenate(parts).reshape(shape) >= Dropout.threshold(p)).astype(np.float32)
        scale *= 1 / (1 - p)
        return scale


# ---------------------------------------------------------------- generated


def load_generated(workload, graph: ir.Model):
    """Compile the workload's .nn file with nncompile and return `Cls(seed=0)`, or raise Unavailable."""
    try:
        net = load_class(workload)(seed=0)
    except Exception as exc:  # the compiler is being changed meanwhile: report, don't crash
        raise Unavailable(describe_error(exc)) from exc
    got = {name: tuple(np.shape(value)) for name, value in {**net.params, **net.buffers}.items()}
    if got != param_shapes(graph):
        raise Unavailable(f"net.params and net.buffers {got} differ from the graph's {param_shapes(graph)}")
    return net


def net_values(net) -> dict[str, np.ndarray]:
    """Copies of the generated net's parameters and running statistics, the other contenders' starting point."""
    return {name: np.array(value, dtype=np.float32) for name, value in {**net.params, **net.buffers}.items()}


def dropout_generator(net) -> np.random.Generator:
    """The generator the generated net draws its Dropout masks from (a fixed one without a net: pytorch and jax
    then only need the same masks as each other). A net without Dropout has none and needs none."""
    generator = getattr(net, "_rng", None)
    return generator if generator is not None else np.random.default_rng(0)


def generated_steps(net, x: np.ndarray, y: np.ndarray) -> Steps:
    def step() -> float:
        return float(net.train_step(x, y))

    return Steps(step, step)


# ---------------------------------------------------------------- pytorch


def pytorch_steps(graph: ir.Model, values: dict, x: np.ndarray, y: np.ndarray, lr: float, masks: GateMasks) -> Steps:
    """Eager TorchGraph + CrossEntropyLoss + SGD on all cores, starting from `values`."""
    torch.set_num_threads(os.cpu_count())
    model = TorchGraph(graph, values)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    xt = torch.from_numpy(channels_first(x))
    yt = torch.from_numpy(y.astype(np.int64))

    def step() -> float:
        optimizer.zero_grad()
        loss = loss_fn(model(xt), yt)
        loss.backward()
        optimizer.step()
        return loss.item()

    def gate_step() -> float:
        model.use_gate_masks(masks)
        try:
            return step()
        finally:
            model.use_gate_masks(None)

    return Steps(step, gate_step)


# Layer type → a function making the torch module of one IR node; values of rank 2 or more per sample (signals,
# images) are held channels-first, as torch's convolutions, pools and batch norms want them.
TORCH_LAYERS: dict[str, Callable[[ir.Node], nn.Module]] = {}


def torch_layer(kind: str):
    def register(function):
        TORCH_LAYERS[kind] = function
        return function

    return register


class TorchGraph(nn.Module):
    """An IR graph evaluated in topological order by one torch module per node, in float32, its parameters and
    running statistics copied from `values` (the compiler's layouts). Takes its input channels-first."""

    def __init__(self, graph: ir.Model, values: dict[str, np.ndarray]):
        super().__init__()
        self.layers = nn.ModuleList(TORCH_LAYERS[node.kind.name](node) for node in graph.nodes)
        self.order = [(node.name, node.inputs) for node in graph.nodes]
        self.input_name = graph.inputs[0].name
        self.output_value = graph.output_values[graph.outputs[0]]
        self.dropouts = [layer for layer in self.layers if isinstance(layer, GateDropout)]
        for node, layer in zip(graph.nodes, self.layers):
            _copy_values(node, layer, values)

    def use_gate_masks(self, masks: GateMasks | None) -> None:
        """Dropout draws from `masks` (the loss gate) or, with None, as torch does."""
        for layer in self.dropouts:
            layer.masks = masks

    def forward(self, x):
        values = {self.input_name: x}
        for (name, reads), layer in zip(self.order, self.layers):
            values[name] = layer(*(values[value] for value in reads))
        return values[self.output_value]


def _copy_values(node: ir.Node, layer: nn.Module, values: dict) -> None:
    for p in node.params:
        value = values[f"{node.name}.{p.name}"]
        if node.kind.name in GEMM_LAYERS and p.name == "weight":
            value = torch_weight_layout(value)
        target = getattr(layer, p.name)  # weight, bias, running_mean, running_var: torch's names too
        if tuple(target.shape) != value.shape:
            raise ValueError(f"{node.name}.{p.name}: torch shape {tuple(target.shape)} vs {value.shape}")
        with torch.no_grad():
            target.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


@torch_layer("Linear")
def _linear(node):
    return nn.Linear(node.in_shape[0], node.out_shape[0], bias=node.args["bias"])


def _conv(conv_class, node, axes):
    """nn.Conv1d/Conv2d with the node's geometry; 'same' keeps torch's own split of an odd total padding (the extra
    zero after), which is the compiler's."""
    padding = "same" if node.args["padding"] == "same" else tuple(a.before for a in axes)
    return conv_class(
        node.in_shape[-1],
        node.args["out"],
        tuple(a.k for a in axes),
        stride=tuple(a.stride for a in axes),
        padding=padding,
        dilation=tuple(a.dilation for a in axes),
        bias=node.args["bias"],
    )


@torch_layer("Conv1D")
def _conv1d(node):
    return _conv(nn.Conv1d, node, [node.kind.axis(node.in_shape, node.args)])


@torch_layer("Conv2D")
def _conv2d(node):
    return _conv(nn.Conv2d, node, node.kind.axes(node.in_shape, node.args))


@torch_layer("MaxPool1D")
def _maxpool1d(node):
    return nn.MaxPool1d(node.args["k"], stride=node.kind.stride(node.args), padding=node.args["padding"])


@torch_layer("MaxPool2D")
def _maxpool2d(node):
    k, stride, padding = node.kind.geometry(node.args)
    return nn.MaxPool2d(k, stride=stride, padding=padding)


@torch_layer("ReLU")
def _relu(node):
    return nn.ReLU()


class ChannelsLastFlatten(nn.Module):
    """Flatten torch's (B, C, L) or (B, C, H, W) in the compiler's (L, C) or (H, W, C) row-major order."""

    def forward(self, x):
        return x.movedim(1, -1).flatten(1)


@torch_layer("Flatten")
def _flatten(node):
    return ChannelsLastFlatten() if len(node.in_shape) >= 2 else nn.Identity()


class AddInputs(nn.Module):
    """x₁ + x₂ + … from the left, as the generated module adds them."""

    def forward(self, *xs):
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total


@torch_layer("Add")
def _add(node):
    return AddInputs()


@torch_layer("BatchNorm")
def _batchnorm(node):
    # Over every axis but the channels: BatchNorm1d for (B, C) and (B, C, L), BatchNorm2d for (B, C, H, W).
    norm = nn.BatchNorm2d if len(node.in_shape) == 3 else nn.BatchNorm1d
    args = node.args
    return norm(node.in_shape[-1], eps=args["eps"], momentum=args["momentum"], affine=args["affine"])


class GateDropout(nn.Module):
    """Inverted dropout: torch's own, or, while `masks` is set (the loss gate), the generated net's masks."""

    def __init__(self, p: float, shape: tuple[int, ...]):
        super().__init__()
        self.p, self.shape = p, shape
        self.masks: GateMasks | None = None

    def forward(self, x):
        if self.masks is None:
            return nn.functional.dropout(x, self.p, training=True)
        scale = self.masks.scale((x.shape[0], *self.shape), self.p)
        return x * torch.from_numpy(channels_first(scale))


@torch_layer("Dropout")
def _dropout(node):
    return GateDropout(node.args["p"], node.in_shape)


# ---------------------------------------------------------------- gemm floor


def gemm_floor_step(graph: ir.Model, batch: int, seed: int) -> Steps:
    """Only the training step's matrix products, on preallocated float32 arrays.

    Per Linear or convolution node: forward, weight gradient and (unless it reads a model input, whose gradient a
    training step does not need) input gradient; a Conv1D or Conv2D counts as its im2col GEMM.
    """
    rng = np.random.default_rng(seed)
    model_inputs = {item.name for item in graph.inputs}
    gemms = []
    for node in graph.nodes:
        if node.kind.name not in GEMM_LAYERS:
            continue
        rows, inner, cols = _gemm_dims(node, batch)
        acts = aligned_normal(rng, rows, inner)  # activations, im2col'ed for a conv
        weight = aligned_normal(rng, inner, cols)
        grad_out = aligned_normal(rng, rows, cols)
        acts_t, weight_t = aligned((inner, rows)), aligned((cols, inner))
        acts_t[...], weight_t[...] = acts.T, weight.T
        gemms.append((acts, weight, aligned((rows, cols))))
        gemms.append((acts_t, grad_out, aligned((inner, cols))))
        if node.inputs[0] not in model_inputs:
            gemms.append((grad_out, weight_t, aligned((rows, inner))))
    matmul = np.matmul

    def step() -> None:
        for a, b, out in gemms:
            matmul(a, b, out=out)

    return Steps(step, step)


def _gemm_dims(node: ir.Node, batch: int) -> tuple[int, int, int]:
    """(rows, inner, cols) of the node's forward GEMM: a convolution's rows are the batch's output positions and
    its inner size the taps times the input channels."""
    *positions, chan_out = node.out_shape
    weight = next(p.shape for p in node.params if p.name == "weight")  # (taps..., chan_in, out)
    return batch * math.prod(positions), math.prod(weight[:-1]), chan_out
