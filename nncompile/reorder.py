"""Exact rewrites of a shape-checked graph that make its generated code faster; lowering applies them.

A ReLU whose only reader is a max pool runs after the pool instead: max(relu(a), relu(b)) = relu(max(a, b)), and
the pool has fewer elements than its input (a quarter for MaxPool2D(2)), so both of ReLU's passes shrink with it.
A convolution whose only reader is a max pool that never reads its last windows does not compute them.
"""

from __future__ import annotations

import dataclasses

from .ir import Model, Node

# Pools whose output is the maximum of some of their input's elements (−∞ padding included).
MAX_POOLS = frozenset({"MaxPool1D", "MaxPool2D", "GlobalMaxPool"})
# Each convolution and the max pool over the same positions.
_POOL_OF_CONVOLUTION = {"Conv1D": "MaxPool1D", "Conv2D": "MaxPool2D"}


def pools_before_relus(model: Model) -> tuple[Model, dict[str, str]]:
    """The model with every `ReLU -> max pool` pair, where the pool is the ReLU's only reader, run as
    `max pool -> ReLU` (the model itself when there is none), and each moved ReLU's pool.

    Values keep their meaning for the rest of the graph: the readers of the pool's value (and an output naming it)
    read the ReLU's value instead, which is now the same numbers. Gradients agree too: where a window's maximum is
    positive both orders route dy to its first maximum with a slope of 1, and where it is not, ReLU's slope of 0
    stops dy in both."""
    consumers = model.consumers()
    outputs = set(model.output_values.values())
    pairs = {}
    for node in model.nodes:
        readers = consumers.get(node.name, [])
        if (
            node.kind.name == "ReLU"
            and node.name not in outputs
            and len(readers) == 1
            and readers[0].kind.name in MAX_POOLS
            and readers[0].inputs == [node.name]
        ):
            pairs[readers[0].name] = node
    if not pairs:
        return model, {}
    renamed = {pool: relu.name for pool, relu in pairs.items()}  # readers of the pool now read the ReLU
    relus = {relu.name: pool for pool, relu in pairs.items()}
    nodes = []
    for node in model.nodes:
        if node.name in relus:  # the ReLU's place: its pool, reading the ReLU's input
            pool = model.node(relus[node.name])
            nodes.append(dataclasses.replace(pool, inputs=[renamed.get(value, value) for value in node.inputs]))
        elif node.name in pairs:  # the pool's place: the ReLU, reading the pool
            relu = pairs[node.name]
            shape = node.out_shape
            nodes.append(
                dataclasses.replace(
                    relu,
                    inputs=[node.name],
                    in_shapes=[shape],
                    out_shape=shape,
                    bound=relu.kind.bind(relu.args, [shape]),
                )
            )
        else:
            nodes.append(dataclasses.replace(node, inputs=[renamed.get(value, value) for value in node.inputs]))
    output_values = {name: renamed.get(value, value) for name, value in model.output_values.items()}
    return dataclasses.replace(model, nodes=nodes, output_values=output_values), relus


def pooled_convolutions(model: Model) -> dict[str, Node]:
    """{convolution: its pool} for every Conv1D or Conv2D, not an output, whose only reader is the max pool over the
    same positions (MaxPool1D or MaxPool2D): the pairs that trimming and lowering's pool order look at."""
    consumers = model.consumers()
    outputs = set(model.output_values.values())
    pairs = {}
    for node in model.nodes:
        readers = consumers.get(node.name, [])
        if node.kind.name not in _POOL_OF_CONVOLUTION or node.name in outputs or len(readers) != 1:
            continue
        if readers[0].kind.name == _POOL_OF_CONVOLUTION[node.kind.name]:
            pairs[node.name] = readers[0]
    return pairs


def trimmed_convolutions(model: Model) -> tuple[Model, dict[str, str]]:
    """The model with every Conv1D or Conv2D (stride 1, no padding) whose only reader is an unpadded max pool that
    leaves its last windows unread (MaxPool2D(2) over 11 × 11 windows reads 10 × 10) computing only the windows the
    pool reads, and each trimmed convolution's pool.

    The trimmed windows' values reach nothing and their gradient is zero, so dropping them changes no value and no
    gradient (but the rounding of sums over windows): the convolution's node keeps its input shape (its input
    gradient covers the whole input, zero where no computed window reads) and gets the smaller output shape, which
    the pool reads as its input."""
    cropped: dict[str, tuple[int, ...]] = {}  # convolution -> the input shape it is bound to
    pools = {}
    for name, pool in pooled_convolutions(model).items():
        read = _pool_reads(pool)
        shape = None if read is None else _cropped_input(model.node(name), read)
        if shape is not None:
            cropped[name], pools[name] = shape, pool.name
    if not cropped:
        return model, {}
    convolution_of = {pool: conv for conv, pool in pools.items()}
    nodes, out_shapes = [], {}
    for node in model.nodes:
        if node.name in cropped:
            bound = node.kind.bind(node.args, [cropped[node.name]])
            out_shapes[node.name] = bound.out_shape
            nodes.append(dataclasses.replace(node, out_shape=bound.out_shape, bound=bound))
        elif node.name in convolution_of:
            shape = out_shapes[convolution_of[node.name]]
            bound = node.kind.bind(node.args, [shape])
            assert bound.out_shape == node.out_shape, (node.name, bound.out_shape, node.out_shape)
            nodes.append(dataclasses.replace(node, in_shapes=[shape], bound=bound))
        else:
            nodes.append(node)
    return dataclasses.replace(model, nodes=nodes), pools


def _pool_reads(pool) -> tuple[int, ...] | None:
    """How many leading positions per axis an unpadded max pool reads; None for a padded pool."""
    if pool.kind.name == "MaxPool2D":
        k, stride, padding = pool.kind.geometry(pool.args)
        if any(padding):
            return None
        return tuple((out - 1) * s + n for out, s, n in zip(pool.out_shape[:2], stride, k))
    if pool.args["padding"]:
        return None
    return ((pool.out_shape[0] - 1) * pool.kind.stride(pool.args) + pool.args["k"],)


def _cropped_input(conv, read) -> tuple[int, ...] | None:
    """The leading part of the convolution's input that its first `read` windows per axis cover, when that leaves
    windows out (stride 1, no padding); None otherwise."""
    in_shape = conv.in_shapes[0]
    axes = conv.kind.axes(in_shape, conv.args) if conv.kind.name == "Conv2D" else (conv.kind.axis(in_shape, conv.args),)
    if any(axis.stride != 1 or axis.before or axis.after for axis in axes):
        return None
    windows = tuple(min(axis.out, n) for axis, n in zip(axes, read))
    if windows == tuple(axis.out for axis in axes):
        return None
    return (*(n + axis.extent - 1 for n, axis in zip(windows, axes)), in_shape[-1])
