"""Shape inference: run each layer's shape rule along the graph and attach shapes and parameters to the nodes.

A shape error names the layer, the shape it receives, and the chain of shapes that led there.
"""

from __future__ import annotations

from .errors import Reporter
from .ir import MODEL_INPUT, Model
from .registry import ShapeError


def _show(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def infer(model: Model, reporter: Reporter) -> None:
    """Fill in_shape, out_shape and params of every node; report the first shape error of the model."""
    shapes = {MODEL_INPUT: model.input_shape}
    chain = [_show(model.input_shape)]
    for node in model.nodes:
        in_shape = shapes[node.inputs[0]]
        try:
            out_shape = node.kind.output_shape(in_shape, node.args)
        except ShapeError as err:
            note = " → ".join(chain + [f"{node.name} {node.kind.name} receives {_show(in_shape)}"])
            reporter.error(f"shape error in layer '{node.name}': {err}", node.span, notes=[note])
            return
        node.in_shape, node.out_shape = tuple(in_shape), tuple(out_shape)
        node.params = node.kind.params(node.in_shape, node.out_shape, node.args)
        shapes[node.name] = node.out_shape
        chain += [f"{node.name} {node.kind.name}", _show(out_shape)]
    if model.loss is not None:
        try:
            model.loss.kind.check_input(model.output_shape)
        except ShapeError as err:
            note = " → ".join(chain + [f"loss {model.loss.kind.name}"])
            reporter.error(f"shape error in the loss: {err}", model.loss.span, notes=[note])
