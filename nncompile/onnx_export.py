"""ONNX export: a compiled model's graph (from the IR) and its parameter values as an ONNX model.

The ONNX model keeps the interface of the generated module's `predict`: the same input and output names, the
channels-last layouts and the floating-point type, with a symbolic batch axis named `batch`. ONNX's Conv and pools
are channels-first, so the exporter transposes around them inside the graph; a run of layers that keeps the
channels-first layout (a convolution, an activation, a pool) is transposed only at its ends. Inference semantics:
Dropout is left out, BatchNorm uses the running statistics, losses are not part of the graph.

Each layer type maps to ONNX operators through one small function in `MAPPINGS`; a layer without one is a located
error. The numbers come from a weights file written by the module's `save()`, or are drawn as `Model(seed=...)`
draws them (by compiling the module in memory). `onnx` is an optional dependency, imported only here.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Callable, Mapping

from ._threads import import_numpy_with_signals_for_the_main_thread

import_numpy_with_signals_for_the_main_thread()

import numpy as np  # after the call above: NumPy's first import, if nothing imported it yet

from . import codegen
from .compiler import DTYPES, compile_models, is_path, read_source, run_module
from .errors import CompileError, Diagnostic
from .ir import Model, Node
from .layers.activations import GELU_TANH_BETA, GELU_TANH_KAPPA
from .lower import lower

DEFAULT_OPSET = 17
# Opset 13 is the oldest with today's Softmax over one axis; LayerNormalization needs 17 (composed below that).
MIN_OPSET = 13
PRODUCER = "nncompile"
INSTALL_HINT = "pip install 'nncompile[onnx]'"
# Entries of a save() file that are not parameter values: the optimizer's state and Dropout's generator.
IGNORED_PREFIX = "optimizer/"
IGNORED_KEYS = frozenset({"buffers/rng"})


class OnnxMissing(ImportError):
    """The onnx package is not installed (or cannot be imported)."""

    def __init__(self) -> None:
        super().__init__(f"ONNX export needs the onnx package: {INSTALL_HINT}")


class OpsetError(ValueError):
    """An opset outside the range the exporter and the installed onnx support."""


def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise OnnxMissing() from None
    return onnx, helper, numpy_helper


# ---- the graph under construction ------------------------------------------------------------------------------


class _Graph:
    """ONNX nodes and initializers being collected, with unique value names and the layer they come from."""

    def __init__(self, helper, numpy_helper, opset: int, dtype: str, filename: str):
        self.helper = helper
        self.numpy_helper = numpy_helper
        self.opset = opset
        self.dtype = np.dtype(dtype)
        self.filename = filename
        self.nodes: list = []
        self.initializers: list = []
        self.names: set[str] = set()
        self.node_names: set[str] = set()
        # A channels-last value → the same values channels-first, where the graph already has them.
        self.channels_first: dict[str, str] = {}
        self.layer: Node | None = None

    def name(self, wanted: str, taken: set[str] | None = None) -> str:
        """`wanted`, or `wanted_2`, `wanted_3`, ... if it is taken; reserved from now on."""
        taken = self.names if taken is None else taken
        name, count = wanted, 1
        while name in taken:
            count += 1
            name = f"{wanted}_{count}"
        taken.add(name)
        return name

    def const(self, suffix: str, value, dtype=None) -> str:
        """An initializer named after the current layer (`fc1.weight`, `conv/kernel`)."""
        array = np.asarray(value, dtype=self.dtype if dtype is None else dtype)
        name = self.name(f"{self.layer.name}{suffix}" if self.layer is not None else suffix.lstrip("/."))
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def scalar(self, value: float) -> str:
        return self.const(f"/{_number_name(value)}", value)

    def ints(self, suffix: str, values) -> str:
        return self.const(suffix, np.asarray(values, dtype=np.int64), dtype=np.int64)

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attributes) -> str:
        """Append a node of the current layer; its one output is `output`, the layer's own value name (which
        must be free), or else a fresh name."""
        layer = self.layer
        if output is None:
            out = self.name(f"{layer.name}/{op_type}")
        elif output in self.names:
            raise AssertionError(f"value name {output!r} is taken")  # the IR's names are unique
        else:
            out = output
            self.names.add(out)
        name = self.name(f"{layer.name}/{op_type}", self.node_names)
        self.nodes.append(
            self.helper.make_node(op_type, inputs, [out], name=name, doc_string=self.doc(layer), **attributes)
        )
        return out

    def doc(self, layer: Node) -> str:
        where = f"{self.filename}:{layer.span.line}:{layer.span.column}"
        block = f" (in block instance {layer.block})" if layer.block else ""
        return f"{where}: {layer.name} = {layer.source}{block}"

    def output_name(self) -> str:
        """The name of the current layer's channels-last output: the layer's own name."""
        return self.layer.name

    # Layouts: a channels-last value of rank r (batch first) and its channels-first form.
    def to_channels_first(self, x: str, rank: int) -> str:
        if x not in self.channels_first:
            perm = [0, rank - 1, *range(1, rank - 1)]
            self.channels_first[x] = self.op("Transpose", [x], f"{self.layer.name}/channels_first", perm=perm)
        return self.channels_first[x]

    def from_channels_first(self, y: str, rank: int) -> str:
        perm = [0, *range(2, rank), 1]
        out = self.op("Transpose", [y], self.output_name(), perm=perm)
        self.channels_first[out] = y
        return out

    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: int, output: str | None = None) -> str:
        """ReduceMean/ReduceMax: axes as an attribute up to opset 17, as an input from opset 18 on."""
        if self.opset >= 18:
            return self.op(op_type, [x, self.ints("/axes", axes)], output, keepdims=keepdims)
        return self.op(op_type, [x], output, axes=axes, keepdims=keepdims)


def _number_name(value: float) -> str:
    return ("const_" + f"{value:g}").replace("-", "minus_").replace(".", "_")


# ---- one function per layer type -------------------------------------------------------------------------------

# Each takes the graph, the IR node and the ONNX names of its inputs (channels-last) and returns the ONNX name of its
# output (channels-last, named after the layer unless the layer is left out, e.g. Dropout).
LayerMapping = Callable[[_Graph, Node, list[str], dict], str]
MAPPINGS: dict[str, LayerMapping] = {}
# Layer type → the ONNX operators it becomes, for docs/onnx.md and the tests.
OPERATORS: dict[str, str] = {}


def maps(layer: str, operators: str):
    def register(function: LayerMapping) -> LayerMapping:
        MAPPINGS[layer] = function
        OPERATORS[layer] = operators
        return function

    return register


def _param(g: _Graph, node: Node, name: str, values: dict[str, np.ndarray], transform=None) -> str:
    array = values[f"{node.name}.{name}"]
    return g.const(f".{name}", array if transform is None else transform(array))


def _rank(node: Node, index: int = 0) -> int:
    """The rank of an input with the batch axis."""
    return len(node.in_shapes[index]) + 1


@maps("Linear", "Gemm (weight (in, out) as B)")
def _linear(g, node, xs, values):
    inputs = [xs[0], _param(g, node, "weight", values)]
    if node.args["bias"]:
        inputs.append(_param(g, node, "bias", values))
    return g.op("Gemm", inputs, g.output_name())


def _conv(g, node, xs, values, axes, kernel_perm):
    """Conv over the channels-first input: our weight (taps..., cin, out) becomes ONNX's (out, cin, taps...); each
    convolved axis (an `Axis` of nncompile/layers/conv.py) gives its kernel size, stride, dilation and zeros before
    and after ('same' puts the odd one after, as PyTorch does)."""
    rank = _rank(node)
    x = g.to_channels_first(xs[0], rank)
    inputs = [x, _param(g, node, "weight", values, lambda w: np.transpose(w, kernel_perm))]
    if node.args["bias"]:
        inputs.append(_param(g, node, "bias", values))
    y = g.op(
        "Conv",
        inputs,
        kernel_shape=[a.k for a in axes],
        strides=[a.stride for a in axes],
        dilations=[a.dilation for a in axes],
        pads=[a.before for a in axes] + [a.after for a in axes],
    )
    return g.from_channels_first(y, rank)


@maps("Conv1D", "Transpose, Conv (weight as (out, cin, k)), Transpose")
def _conv1d(g, node, xs, values):
    return _conv(g, node, xs, values, [node.kind.axis(node.in_shapes[0], node.args)], (2, 1, 0))


@maps("Conv2D", "Transpose, Conv (weight as (out, cin, kh, kw)), Transpose")
def _conv2d(g, node, xs, values):
    return _conv(g, node, xs, values, node.kind.axes(node.in_shapes[0], node.args), (3, 2, 0, 1))


def _pool(g, node, xs, op_type, kernel, strides, pads, **extra):
    rank = _rank(node)
    x = g.to_channels_first(xs[0], rank)
    # pads: the starts of every spatial axis, then their ends.
    y = g.op(op_type, [x], kernel_shape=list(kernel), strides=list(strides), pads=[*pads, *pads], **extra)
    return g.from_channels_first(y, rank)


def _pool1d(g, node, xs, op_type, **extra):
    k, padding = node.args["k"], node.args["padding"]
    return _pool(g, node, xs, op_type, [k], [node.kind.stride(node.args)], [padding], **extra)


def _pool2d(g, node, xs, op_type, **extra):
    k, stride, padding = node.kind.geometry(node.args)
    return _pool(g, node, xs, op_type, k, stride, padding, **extra)


@maps("MaxPool1D", "Transpose, MaxPool, Transpose")
def _maxpool1d(g, node, xs, values):
    return _pool1d(g, node, xs, "MaxPool")


@maps("AvgPool1D", "Transpose, AveragePool (count_include_pad=1), Transpose")
def _avgpool1d(g, node, xs, values):
    return _pool1d(g, node, xs, "AveragePool", count_include_pad=1)


@maps("MaxPool2D", "Transpose, MaxPool, Transpose")
def _maxpool2d(g, node, xs, values):
    return _pool2d(g, node, xs, "MaxPool")


@maps("AvgPool2D", "Transpose, AveragePool (count_include_pad=1), Transpose")
def _avgpool2d(g, node, xs, values):
    return _pool2d(g, node, xs, "AveragePool", count_include_pad=1)


def _global_pool(g, node, xs, op_type):
    axes = list(range(1, _rank(node) - 1))
    return g.reduce(op_type, xs[0], axes, keepdims=0, output=g.output_name())


@maps("GlobalAvgPool", "ReduceMean (over the positions)")
def _global_avgpool(g, node, xs, values):
    return _global_pool(g, node, xs, "ReduceMean")


@maps("GlobalMaxPool", "ReduceMax (over the positions)")
def _global_maxpool(g, node, xs, values):
    return _global_pool(g, node, xs, "ReduceMax")


@maps("Flatten", "Flatten (axis=1)")
def _flatten(g, node, xs, values):
    return g.op("Flatten", [xs[0]], g.output_name(), axis=1)


@maps("Reshape", "Reshape (to [batch, *shape])")
def _reshape(g, node, xs, values):
    # 0 keeps the batch size; the per-sample sizes are the inferred ones (no -1 left).
    return g.op("Reshape", [xs[0], g.ints("/shape", [0, *node.out_shape])], g.output_name())


@maps("Permute", "Transpose (batch axis first)")
def _permute(g, node, xs, values):
    return g.op("Transpose", [xs[0]], g.output_name(), perm=[0, *(a + 1 for a in node.args["axes"])])


@maps("Concat", "Concat (axis + 1, after the batch axis)")
def _concat(g, node, xs, values):
    axis = node.args["axis"] % len(node.in_shapes[0]) + 1
    return g.op("Concat", xs, g.output_name(), axis=axis)


def _fold(g, op_type, xs):
    """x₁ op x₂ op … from the left, as the generated module computes it."""
    y = xs[0]
    for i, x in enumerate(xs[1:], 2):
        y = g.op(op_type, [y, x], g.output_name() if i == len(xs) else None)
    return y


@maps("Add", "Add (one per further input)")
def _add(g, node, xs, values):
    return _fold(g, "Add", xs)


@maps("Multiply", "Mul (one per further input)")
def _multiply(g, node, xs, values):
    return _fold(g, "Mul", xs)


# Elementwise layers work on any layout: where the input also exists channels-first (after a Conv or a pool),
# they run there too, so that a following Conv or pool needs no transposes (the unused ones are dropped at the end).
def elementwise(layer: str, operators: str):
    def register(function):
        def mapping(g, node, xs, values):
            x = xs[0]
            if x not in g.channels_first:
                return function(g, node, x, g.output_name())
            y = function(g, node, g.channels_first[x], None)
            return g.from_channels_first(y, _rank(node))

        return maps(layer, operators)(mapping)

    return register


@elementwise("ReLU", "Relu")
def _relu(g, node, x, out):
    return g.op("Relu", [x], out)


@elementwise("LeakyReLU", "LeakyRelu")
def _leaky_relu(g, node, x, out):
    return g.op("LeakyRelu", [x], out, alpha=float(node.args["alpha"]))


@elementwise("Sigmoid", "Sigmoid")
def _sigmoid(g, node, x, out):
    return g.op("Sigmoid", [x], out)


@elementwise("TanH", "Tanh")
def _tanh(g, node, x, out):
    return g.op("Tanh", [x], out)


@elementwise("Softplus", "Softplus")
def _softplus(g, node, x, out):
    return g.op("Softplus", [x], out)


@elementwise("ELU", "Elu")
def _elu(g, node, x, out):
    return g.op("Elu", [x], out, alpha=float(node.args["alpha"]))


@elementwise("SiLU", "Sigmoid, Mul")
def _silu(g, node, x, out):
    return g.op("Mul", [x, g.op("Sigmoid", [x])], out)


@elementwise(
    "GELU",
    "opset ≥ 20: Gelu; below: Mul, Erf, Add, Mul, Mul (exact) or Mul, Mul, Add, Mul, Sigmoid, Mul (tanh: x·sigmoid(2u))",
)
def _gelu(g, node, x, out):
    approximate = node.args["approximate"]
    if g.opset >= 20:
        return g.op("Gelu", [x], out, approximate=approximate)
    if approximate == "tanh":
        # x·(1 + tanh u)/2 = x·sigmoid(2u), 2u = 2√(2/π)·(x + 0.044715 x³) = x·(a + b x²): no cancellation at the tails
        square = g.op("Mul", [x, x])
        inner = g.op(
            "Add", [g.scalar(2 * GELU_TANH_BETA), g.op("Mul", [square, g.scalar(2 * GELU_TANH_BETA * GELU_TANH_KAPPA)])]
        )
        return g.op("Mul", [x, g.op("Sigmoid", [g.op("Mul", [x, inner])])], out)
    # x·Φ(x) = x·(1 + erf(x/√2))/2
    erf = g.op("Erf", [g.op("Mul", [x, g.scalar(1 / math.sqrt(2))])])
    half = g.op("Mul", [g.op("Add", [erf, g.scalar(1.0)]), g.scalar(0.5)])
    return g.op("Mul", [x, half], out)


@maps("Dropout", "none (the identity in inference)")
def _dropout(g, node, xs, values):
    return xs[0]


@maps("Softmax", "Softmax (axis=-1)")
def _softmax(g, node, xs, values):
    return g.op("Softmax", [xs[0]], g.output_name(), axis=-1)


@maps("LogSoftmax", "LogSoftmax (axis=-1)")
def _log_softmax(g, node, xs, values):
    return g.op("LogSoftmax", [xs[0]], g.output_name(), axis=-1)


@maps("BatchNorm", "Sub, Mul, then Mul, Add when affine (the running statistics as constants)")
def _batchnorm(g, node, xs, values):
    # As the module computes inference: (x - running_mean) · (1 / √(running_var + eps)) · weight + bias, with the
    # same roundings (the reciprocal square root computed here in the model's type, as the module does). After a
    # Conv or a pool it runs on their channels-first output, its constants shaped (C, 1, ...) to broadcast there.
    x, rank = xs[0], _rank(node)
    first = x in g.channels_first and rank > 2
    if first:
        x = g.channels_first[x]
    shape = (-1, *(1,) * (rank - 2)) if first else (-1,)
    out = None if first else g.output_name()

    def constant(suffix, value):
        return g.const(suffix, np.reshape(value, shape))

    mean = values[f"{node.name}.running_mean"]
    var = values[f"{node.name}.running_var"]
    inv_std = np.reciprocal(np.sqrt(np.add(var, node.args["eps"], dtype=g.dtype)))
    y = g.op("Sub", [x, constant(".running_mean", mean)])
    affine = node.args["affine"]
    y = g.op("Mul", [y, constant("/inv_std", inv_std)], None if affine else out)
    if affine:
        y = g.op("Mul", [y, constant(".weight", values[f"{node.name}.weight"])])
        y = g.op("Add", [y, constant(".bias", values[f"{node.name}.bias"])], out)
    return g.from_channels_first(y, rank) if first else y


@maps(
    "LayerNorm",
    "LayerNormalization (axis=-1); below opset 17: ReduceMean, Sub, Mul, ReduceMean, Add, Sqrt, Div, Mul, Add",
)
def _layernorm(g, node, xs, values):
    x, channels, eps = xs[0], node.in_shapes[0][-1], float(node.args["eps"])
    affine = node.args["affine"]
    if g.opset >= 17:
        scale = _param(g, node, "weight", values) if affine else g.const("/scale", np.ones(channels))
        inputs = [x, scale, _param(g, node, "bias", values)] if affine else [x, scale]
        return g.op("LayerNormalization", inputs, g.output_name(), axis=-1, epsilon=eps)
    last = _rank(node) - 1
    centered = g.op("Sub", [x, g.reduce("ReduceMean", x, [last], keepdims=1)])
    var = g.reduce("ReduceMean", g.op("Mul", [centered, centered]), [last], keepdims=1)
    std = g.op("Sqrt", [g.op("Add", [var, g.scalar(eps)])])
    y = g.op("Div", [centered, std], None if affine else g.output_name())
    if not affine:
        return y
    y = g.op("Mul", [y, _param(g, node, "weight", values)])
    return g.op("Add", [y, _param(g, node, "bias", values)], g.output_name())


@maps("Embedding", "Gather (axis=0) on an int64 input")
def _embedding(g, node, xs, values):
    return g.op("Gather", [_param(g, node, "weight", values), xs[0]], g.output_name(), axis=0)


# ---- parameter values -----------------------------------------------------------------------------------------


def state_key(node: Node, param) -> str:
    """The entry of a save() file that holds a parameter: params/… (trainable) or buffers/… (running statistics)."""
    return f"{'params' if param.trainable else 'buffers'}/{node.name}.{param.name}"


def _expected_entries(model: Model) -> dict[str, tuple[int, ...]]:
    return {state_key(node, p): tuple(p.shape) for node in model.nodes for p in node.params}


def _weights_error(where: str, message: str, helps=()) -> CompileError:
    return CompileError([Diagnostic(message, helps=list(helps))], where)


def _read_weights(weights, where: str) -> Mapping:
    if isinstance(weights, Mapping):
        return weights
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise _weights_error(where, "no such weights file")
    if os.path.isdir(path):
        raise _weights_error(where, "is a directory, not a weights file written by save()")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise _weights_error(where, f"cannot read as an .npz file written by save(): {err}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _weights_error(where, "holds one array (.npy), not an .npz file written by save()")
    with archive:
        try:
            return {key: archive[key] for key in archive.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise _weights_error(where, f"cannot read as an .npz file written by save(): {err}") from None


def weights_values(model: Model, weights, dtype: str, where: str) -> dict[str, np.ndarray]:
    """Every parameter of the model ("layer.param" → array of `dtype`) from a save() file or a state_dict().

    The entries must be exactly the model's parameters and running statistics (optimizer entries and the random
    generator's state are ignored), each of its shape and holding real numbers that fit `dtype`; the first mismatch
    is a CompileError located at the weights file."""
    state = _read_weights(weights, where)
    expected = _expected_entries(model)
    relevant = [str(k) for k in state if not (str(k).startswith(IGNORED_PREFIX) or k in IGNORED_KEYS)]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in relevant if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(
                f"is missing '{missing[0]}'" + (f" ({len(missing)} missing in all)" if len(missing) > 1 else "")
            )
        if unexpected:
            more = f" ({len(unexpected)} in all)" if len(unexpected) > 1 else ""
            parts.append(f"has an unexpected entry '{unexpected[0]}'{more}")
        raise _weights_error(
            where,
            f"the weights do not fit model {model.name}: the file {' and '.join(parts)}",
            helps=["export with the weights file that this model's save() wrote"],
        )
    values = {}
    for key, shape in expected.items():
        value = np.asarray(state[key])
        if value.dtype.kind not in "iuf":
            raise _weights_error(where, f"entry '{key}' holds {value.dtype}; expected real numbers")
        if value.shape != shape:
            raise _weights_error(
                where, f"entry '{key}' has shape {value.shape}, but model {model.name} expects {shape}"
            )
        with np.errstate(over="ignore"):
            converted = value.astype(dtype)
        if not np.array_equal(np.isfinite(converted), np.isfinite(value)):
            raise _weights_error(where, f"entry '{key}' has values beyond the range of {dtype}")
        values[key.split("/", 1)[1]] = converted
    return values


def seed_values(model: Model, seed: int, dtype: str) -> dict[str, np.ndarray]:
    """The parameters exactly as `Model(seed=seed)` of the generated module draws them (the module generated from
    this model's IR and run in memory)."""
    code = codegen.render([lower(model, dtype)], model.filename, dtype)
    instance = getattr(run_module(code, model.filename, "nncompiled"), model.name)(seed=seed)
    return {**instance.params, **instance.buffers}


# ---- the export ----------------------------------------------------------------------------------------------


def _select(models: list[Model], name: str | None, filename: str, source: str) -> Model:
    names = [m.name for m in models]
    if name is not None:
        if name not in names:
            raise CompileError([Diagnostic(f"no model named '{name}'; the file has {', '.join(names)}")], filename)
        return models[names.index(name)]
    if len(models) > 1:
        raise CompileError(
            [
                Diagnostic(
                    f"the file has {len(models)} models ({', '.join(names)}); an ONNX file holds one",
                    helps=["choose one with --model NAME (model= in Python)"],
                )
            ],
            filename,
        )
    return models[0]


def _unmapped(model: Model, filename: str, source: str) -> None:
    diagnostics = [
        Diagnostic(
            f"layer {node.kind.name} has no ONNX mapping yet",
            node.span,
            helps=[f"layers with one: {', '.join(sorted(MAPPINGS))}"],
        )
        for node in model.nodes
        if node.kind.name not in MAPPINGS
    ]
    if diagnostics:
        raise CompileError(diagnostics[:1], filename, source)


def _prune(nodes: list, outputs: list[str]) -> list:
    """The nodes some graph output depends on, in order (drops transposes nobody reads)."""
    live = set(outputs)
    kept = []
    for node in reversed(nodes):
        if any(o in live for o in node.output):
            kept.append(node)
            live.update(node.input)
    return kept[::-1]


def export_model(
    model: Model,
    values: dict[str, np.ndarray],
    opset: int = DEFAULT_OPSET,
    dtype: str = "float32",
    source: str = "",
    provenance: str = "",
):
    """The ONNX ModelProto of one shape-inferred IR model with these parameter values ("layer.param" → array)."""
    onnx, helper, numpy_helper = _import_onnx()
    from . import __version__

    _unmapped(model, model.filename, source)
    float_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    g = _Graph(helper, numpy_helper, opset, dtype, os.path.basename(model.filename))
    g.names.update(i.name for i in model.inputs)
    # Output names that are not a node's own name (`h = x -> A -> B`, `output (h)`) become Identity nodes.
    g.names.update(name for name in model.outputs if model.output_values[name] != name)
    graph_inputs = []
    for item in model.inputs:
        elem = onnx.TensorProto.INT64 if item.dtype == "int" else float_type
        graph_inputs.append(helper.make_tensor_value_info(item.name, elem, ["batch", *item.shape]))
    onnx_value = {i.name: i.name for i in model.inputs}
    for node in model.nodes:
        g.layer = node
        onnx_value[node.name] = MAPPINGS[node.kind.name](g, node, [onnx_value[v] for v in node.inputs], values)
    graph_outputs = []
    for name in model.outputs:
        value = onnx_value[model.output_values[name]]
        if value != name:
            g.layer = model.node(model.output_values[name])
            g.nodes.append(
                helper.make_node(
                    "Identity", [value], [name], name=g.name(f"{name}/output", g.node_names), doc_string=g.doc(g.layer)
                )
            )
        graph_outputs.append(helper.make_tensor_value_info(name, float_type, ["batch", *model.output_shapes[name]]))
    nodes = _prune(g.nodes, list(model.outputs))
    used = {i for n in nodes for i in n.input}
    initializers = [t for t in g.initializers if t.name in used]
    graph = helper.make_graph(
        nodes,
        model.name,
        graph_inputs,
        graph_outputs,
        initializer=initializers,
        doc_string=f"model {model.name} of {model.filename}",
    )
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(
        graph,
        producer_name=PRODUCER,
        producer_version=__version__,
        opset_imports=opsets,
        doc_string=f"{model.name} from {model.filename}, exported by {PRODUCER} {__version__}",
    )
    proto.ir_version = helper.find_min_ir_version_for(opsets)
    metadata = {"source_file": model.filename, "model": model.name, "dtype": dtype}
    if provenance:
        metadata["parameters"] = provenance
    helper.set_model_props(proto, metadata)
    return proto


def export_onnx(
    source_or_path,
    weights=None,
    seed: int | None = None,
    opset: int = DEFAULT_OPSET,
    *,
    model: str | None = None,
    dtype: str = "float32",
    filename: str | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> bytes:
    """Export a model of a .nn file (a path) or of .nn source text as a serialized ONNX model.

    The parameter values come from `weights` (the path of an .npz file written by the module's save(), or a dict
    as its state_dict() returns) or are drawn as `Model(seed=seed)` draws them; give exactly one. `model` names the
    model of a file that holds several. `dtype` is the floating-point type of the ONNX model, as of the module;
    `filename` names source text in messages and in the model's metadata. Whether the first argument is a path is
    decided as `nncompile.load` decides it: a path object, or a one-line string without '{'. Warnings go to
    `on_warning` (by default Python warnings), as for `compile_models`.
    Raises CompileError for problems with the file or the weights (located, as the compiler reports them),
    OnnxMissing without the onnx package, OpsetError for an opset out of range.
    """
    if is_path(source_or_path, "nncompile.export_onnx"):
        path = os.fsdecode(source_or_path)
        _check_options(weights, seed, opset, dtype)  # before reading the file: the same order as below
        return export_source(
            read_source(path), path, weights, seed, opset, model=model, dtype=dtype, on_warning=on_warning
        )
    return export_source(
        source_or_path, filename or "<string>", weights, seed, opset, model=model, dtype=dtype, on_warning=on_warning
    )


def _check_options(weights, seed, opset, dtype) -> None:
    onnx, _, _ = _import_onnx()
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise OpsetError(
            f"the ONNX opset must be an integer from {MIN_OPSET} to {newest} (the newest this onnx knows), got {opset!r}"
        )
    if (weights is None) == (seed is None):
        raise ValueError(
            "export_onnx needs exactly one of weights= (a file written by the module's save(), or a state_dict()) "
            "and seed= (fresh parameters, as Model(seed=...) draws them)"
        )


def export_source(
    source: str,
    filename: str,
    weights=None,
    seed: int | None = None,
    opset: int = DEFAULT_OPSET,
    *,
    model: str | None = None,
    dtype: str = "float32",
    on_warning: Callable[[str], None] | None = None,
) -> bytes:
    """`export_onnx` for source text read from `filename` (as the command reads it), without guessing whether a
    string is a path."""
    _check_options(weights, seed, opset, dtype)
    chosen = _select(compile_models(source, filename, on_warning), model, filename, source)
    _unmapped(chosen, filename, source)
    if weights is not None:
        where = "<weights>" if isinstance(weights, Mapping) else os.fspath(weights)
        values = weights_values(chosen, weights, dtype, where)
        provenance = f"weights {os.path.basename(where)}"
    else:
        values = seed_values(chosen, seed, dtype)
        provenance = f"seed {seed}"
    proto = export_model(chosen, values, opset, dtype, source, provenance)
    return proto.SerializeToString()


def operator_table() -> str:
    """The Markdown table of docs/onnx.md: each layer of the catalogue and the ONNX operators it becomes."""
    from .registry import LAYERS, canonical, load_all

    load_all()
    lines = ["| layer | ONNX operators |", "|---|---|"]
    for layer in canonical(LAYERS):
        lines.append(f"| {layer.name} | {OPERATORS.get(layer.name, '**no mapping yet**')} |")
    return "\n".join(lines) + "\n"
