"""Exact reorderings of a shape-checked graph that make its generated code faster; lowering applies them.

A ReLU whose only reader is a max pool runs after the pool instead: max(relu(a), relu(b)) = relu(max(a, b)), and
the pool has fewer elements than its input (a quarter for MaxPool2D(2)), so both of ReLU's passes shrink with it.
"""

from __future__ import annotations

import dataclasses

from .ir import Model

# Pools whose output is the maximum of some of their input's elements (−∞ padding included).
MAX_POOLS = frozenset({"MaxPool1D", "MaxPool2D", "GlobalMaxPool"})


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
