"""The jax contender of bench_train_step.py: a workload's IR graph as one jax.jit-compiled training step (forward,
CrossEntropy, jax.grad, SGD update) with donated parameters, float32 on the CPU; optional, like JAX itself."""

from collections.abc import Callable
from functools import partial

import numpy as np
from contenders import GateMasks, Steps, Unavailable

from nncompile import ir

try:
    import jax
    import jax.numpy as jnp
    from jax import lax
except ImportError:
    jax = None
else:
    # On the CPU, where the other contenders run, even where JAX would pick a GPU.
    jax.config.update("jax_platforms", "cpu")


def jax_steps(graph: ir.Model, values: dict, x: np.ndarray, y: np.ndarray, lr: float, masks: GateMasks) -> Steps:
    """The jit-compiled step, compiled here (ahead of time) so that no timed call compiles; each call blocks until
    its results are computed. Raises Unavailable without JAX."""
    if jax is None:
        raise Unavailable("JAX not installed")
    trainable = {f"{node.name}.{p.name}" for node in graph.nodes for p in node.params if p.trainable}
    params = {name: jnp.asarray(value) for name, value in values.items() if name in trainable}
    state = {name: jnp.asarray(value) for name, value in values.items() if name not in trainable}
    dropouts = [node for node in graph.nodes if node.kind.name == "Dropout"]
    x, y = jnp.asarray(x), jnp.asarray(y.astype(np.int32))
    key = jax.random.key(0)

    def with_random_masks(params, state, key, x, y):
        key, *keys = jax.random.split(key, len(dropouts) + 1)
        params, state, loss = _sgd_step(graph, lr, [partial(_random_dropout, k) for k in keys], params, state, x, y)
        return params, state, key, loss

    def with_given_masks(params, state, scales, x, y):
        return _sgd_step(graph, lr, [partial(_scaled, scale) for scale in scales], params, state, x, y)

    # Donated: the step's new parameters and statistics reuse the buffers of the old ones, as in-place updates do.
    timed_step = jax.jit(with_random_masks, donate_argnums=(0, 1)).lower(params, state, key, x, y).compile()

    def step():
        nonlocal params, state, key
        params, state, key, loss = timed_step(params, state, key, x, y)
        return jax.block_until_ready(loss)

    if not dropouts:
        return Steps(step, step)

    shapes = [(x.shape[0], *node.in_shape) for node in dropouts]

    def gate_scales():
        return [jnp.asarray(masks.scale(shape, node.args["p"])) for shape, node in zip(shapes, dropouts)]

    # Compiled for the masks' shapes only: drawing masks here would shift the gate's draws by a step.
    scale_shapes = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes]
    gate_compiled = jax.jit(with_given_masks, donate_argnums=(0, 1)).lower(params, state, scale_shapes, x, y).compile()

    def gate_step():
        nonlocal params, state
        params, state, loss = gate_compiled(params, state, gate_scales(), x, y)
        return jax.block_until_ready(loss)

    return Steps(step, gate_step)


def _sgd_step(graph, lr, dropouts, params, state, x, y):
    """(new parameters, new running statistics, loss) of one SGD step; `dropouts` apply the Dropout layers in
    graph order."""

    def loss_of(params):
        z, new_state = _forward(graph, params, state, x, iter(dropouts))
        log_probs = jax.nn.log_softmax(z)
        return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1)), new_state

    (loss, new_state), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
    params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
    return params, new_state, loss


def _random_dropout(key, node, x):
    p = node.args["p"]
    keep = jax.random.bernoulli(key, 1 - p, x.shape)
    return jnp.where(keep, x * (1 / (1 - p)), 0)


def _scaled(scale, node, x):
    return x * scale


class _Trace:
    """What the layer functions read while the forward pass is traced: parameters, running statistics (and the
    new ones BatchNorm computes), and the Dropout functions still to apply."""

    def __init__(self, params, state, dropouts):
        self.params, self.state, self.dropouts = params, state, dropouts
        self.new_state = {}

    def param(self, node: ir.Node, name: str):
        return self.params[f"{node.name}.{name}"]


def _forward(graph: ir.Model, params, state, x, dropouts):
    """The output and BatchNorm's updated running statistics; values stay channels-last, as in the compiler."""
    trace = _Trace(params, state, dropouts)
    values = {graph.inputs[0].name: x}
    for node in graph.nodes:
        values[node.name] = JAX_LAYERS[node.kind.name](trace, node, [values[v] for v in node.inputs])
    return values[graph.output_values[graph.outputs[0]]], {**state, **trace.new_state}


# Layer type → a function (trace, node, input values) → output value, traced under jax.jit.
JAX_LAYERS: dict[str, Callable] = {}


def jax_layer(kind: str):
    def register(function):
        JAX_LAYERS[kind] = function
        return function

    return register


def _bias(trace, node, y):
    return y + trace.param(node, "bias") if node.args["bias"] else y


@jax_layer("Linear")
def _linear(trace, node, xs):
    return _bias(trace, node, xs[0] @ trace.param(node, "weight"))


def _conv(trace, node, x, axes, layouts):
    # The compiler's weight (taps..., chan_in, out) is what XLA calls WIO / HWIO: no transposes.
    y = lax.conv_general_dilated(
        x,
        trace.param(node, "weight"),
        window_strides=[a.stride for a in axes],
        padding=[(a.before, a.after) for a in axes],
        rhs_dilation=[a.dilation for a in axes],
        dimension_numbers=layouts,
    )
    return _bias(trace, node, y)


@jax_layer("Conv1D")
def _conv1d(trace, node, xs):
    return _conv(trace, node, xs[0], [node.kind.axis(node.in_shape, node.args)], ("NWC", "WIO", "NWC"))


@jax_layer("Conv2D")
def _conv2d(trace, node, xs):
    return _conv(trace, node, xs[0], node.kind.axes(node.in_shape, node.args), ("NHWC", "HWIO", "NHWC"))


def _max_pool(x, k, stride, padding):
    """Max over windows of the positions (the axes between batch and channels), padding with -inf as torch does."""
    return lax.reduce_window(
        x,
        -jnp.inf,
        lax.max,
        window_dimensions=(1, *k, 1),
        window_strides=(1, *stride, 1),
        padding=((0, 0), *((p, p) for p in padding), (0, 0)),
    )


@jax_layer("MaxPool1D")
def _maxpool1d(trace, node, xs):
    return _max_pool(xs[0], [node.args["k"]], [node.kind.stride(node.args)], [node.args["padding"]])


@jax_layer("MaxPool2D")
def _maxpool2d(trace, node, xs):
    return _max_pool(xs[0], *node.kind.geometry(node.args))


@jax_layer("ReLU")
def _relu(trace, node, xs):
    return jax.nn.relu(xs[0])  # gradient 0 at 0, as torch and the compiler


@jax_layer("Flatten")
def _flatten(trace, node, xs):
    return xs[0].reshape(xs[0].shape[0], -1)


@jax_layer("Add")
def _add(trace, node, xs):
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    return total


@jax_layer("BatchNorm")
def _batchnorm(trace, node, xs):
    # Training: the batch's statistics (biased variance) over every axis but the channels; the running ones are
    # updated as torch does (unbiased variance), so the step does the work the other contenders do.
    x, args = xs[0], node.args
    axes = tuple(range(x.ndim - 1))
    count = x.size // x.shape[-1]
    mean = x.mean(axes)
    centered = x - mean
    var = jnp.square(centered).mean(axes)
    y = centered * lax.rsqrt(var + args["eps"])
    if args["affine"]:
        y = y * trace.param(node, "weight") + trace.param(node, "bias")
    momentum, running = args["momentum"], f"{node.name}.running_"
    trace.new_state[running + "mean"] = (1 - momentum) * trace.state[running + "mean"] + momentum * mean
    unbiased = var * (count / (count - 1))
    trace.new_state[running + "var"] = (1 - momentum) * trace.state[running + "var"] + momentum * unbiased
    return y


@jax_layer("Dropout")
def _dropout(trace, node, xs):
    return next(trace.dropouts)(node, xs[0])
