"""Small reader for the benchmark workload `.nn` files, with shape tracing.
Lets the PyTorch and GEMM-floor contenders be built from the same file the compiler reads."""

import math
import re
from dataclasses import dataclass, field

PARAM_KINDS = ("Linear", "Conv1D", "Conv2D")
KNOWN_KINDS = PARAM_KINDS + ("ReLU", "MaxPool1D", "MaxPool2D", "Flatten")

_MODEL_RE = re.compile(r"model\s+(\w+)\s*\{(.*)\}", re.DOTALL)
_LAYER_RE = re.compile(r"(?:(\w+)\s*=\s*)?(\w+)\s*(?:\((.*)\))?")


@dataclass(frozen=True)
class Layer:
    kind: str
    name: str | None = None
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    loss: str
    optimizer: str


@dataclass(frozen=True)
class TracedLayer:
    """A layer with its per-sample input/output shapes and its parameter shapes.

    Parameter shapes use the compiler's layout: Linear weight (in, out),
    Conv1D weight (k, chan_in, chan_out), Conv2D weight (k, k, chan_in, chan_out); activations are channels-last.
    """

    layer: Layer
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: dict[str, tuple[int, ...]]


def parse_nn(text: str) -> ModelSpec:
    match = _MODEL_RE.search(_strip_comments(text))
    if not match:
        raise ValueError("no `model Name { ... }` block found")
    name, body = match.groups()
    input_shape, loss, optimizer, layers = None, None, None, []
    for line in (part.strip() for part in body.splitlines()):
        if not line:
            continue
        keyword, _, rest = line.partition(" ")
        if keyword == "input":
            input_shape = tuple(int(v) for v in rest.strip(" []").split(","))
        elif keyword == "loss":
            loss = rest.strip()
        elif keyword == "optimizer":
            optimizer = rest.strip()
        else:
            layers.append(_parse_layer(line))
    if input_shape is None or loss is None:
        raise ValueError(f"model {name}: needs an `input` and a `loss` line")
    return ModelSpec(name, input_shape, tuple(layers), loss, optimizer or "")


def trace(spec: ModelSpec) -> list[TracedLayer]:
    traced, shape = [], spec.input_shape
    for layer in spec.layers:
        out_shape, params = _layer_shapes(layer, shape)
        traced.append(TracedLayer(layer, shape, out_shape, params))
        shape = out_shape
    return traced


def _strip_comments(text: str) -> str:
    return re.sub(r"(#|//).*", "", text)


def _parse_layer(line: str) -> Layer:
    match = _LAYER_RE.fullmatch(line)
    if not match or match.group(2) not in KNOWN_KINDS:
        raise ValueError(f"unsupported layer line: {line!r}")
    name, kind, arg_text = match.groups()
    args, kwargs = [], {}
    for item in filter(None, (a.strip() for a in (arg_text or "").split(","))):
        key, eq, value = item.partition("=")
        if eq:
            kwargs[key.strip()] = _parse_value(value.strip())
        else:
            args.append(_parse_value(item))
    if kind in PARAM_KINDS and name is None:
        raise ValueError(f"a {kind} layer needs a name: {line!r}")
    return Layer(kind, name, tuple(args), kwargs)


def _parse_value(text: str):
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        return float(text)


def _layer_shapes(layer: Layer, shape: tuple[int, ...]):
    """Return (per-sample output shape, {param name: shape}) of one layer."""
    kind, kw = layer.kind, layer.kwargs
    if kind == "Linear":
        if len(shape) != 1:
            raise ValueError(f"{layer.name}: Linear needs a flat input, got {shape}")
        (out,) = layer.args
        params = {"weight": (shape[0], out)}
        return (out,), _with_bias(layer, params, out)
    if kind == "Conv1D":
        length, chan_in = shape
        chan_out, k = layer.args
        out_len = (length - k) // kw.get("stride", 1) + 1
        params = {"weight": (k, chan_in, chan_out)}
        return (out_len, chan_out), _with_bias(layer, params, chan_out)
    if kind == "Conv2D":
        # Square kernels, integer stride/padding/dilation: what the workloads use.
        height, width, chan_in = shape
        chan_out, k = layer.args
        stride, padding, dilation = kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1)
        out_h, out_w = ((n + 2 * padding - dilation * (k - 1) - 1) // stride + 1 for n in (height, width))
        params = {"weight": (k, k, chan_in, chan_out)}
        return (out_h, out_w, chan_out), _with_bias(layer, params, chan_out)
    if kind == "MaxPool1D":
        length, chans = shape
        (k,) = layer.args
        return ((length - k) // kw.get("stride", k) + 1, chans), {}
    if kind == "MaxPool2D":
        height, width, chans = shape
        (k,) = layer.args
        stride = kw.get("stride", k)
        return ((height - k) // stride + 1, (width - k) // stride + 1, chans), {}
    if kind == "Flatten":
        return (math.prod(shape),), {}
    return shape, {}  # ReLU


def _with_bias(layer: Layer, params: dict, size: int) -> dict:
    if layer.kwargs.get("bias", True):
        params["bias"] = (size,)
    return {f"{layer.name}.{key}": value for key, value in params.items()}
