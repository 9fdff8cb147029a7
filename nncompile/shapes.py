"""Shape inference: run each layer's shape rule along the graph and attach shapes and parameters to the nodes.

A shape error names the layer, what it received, and a note with the chain of shapes that led there, ending with
what the layer expects: `[64] → fc1 Linear → [128] → conv Conv1D expects [length, channels]`.
"""

from __future__ import annotations

import re

from .errors import Reporter
from .ir import MODEL_INPUT, Model, Node
from .registry import ShapeError, format_value

# Chains through more layers than this show their start and end around a '…'.
MAX_CHAIN_LAYERS = 5


def show(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def expectation(node: Node) -> str | None:
    """What the layer accepts, from the left side of its documented shape rule, with known arguments filled in.

    `[in] → [out]` for `Linear(in=32)` gives `[32]`; a rule without '→' gives None.
    """
    rule = node.kind.shape_rule
    if "→" not in rule:
        return None
    accepted, rest = rule.split("→", 1)

    def fill(match: re.Match) -> str:
        value = node.args.get(match.group(0))
        return format_value(value) if isinstance(value, int) and not isinstance(value, bool) else match.group(0)

    text = re.sub(r"[A-Za-z_][A-Za-z0-9_]*", fill, accepted.strip())
    # A condition written after the rule, as in "[length, chan] → [...]; needs k ≤ length".
    condition = rest.split(";", 1)[1].strip() if ";" in rest else ""
    return f"{text}, {condition}" if condition else text


def _chain(steps: list[str], last: str) -> str:
    """`steps` alternate shape, layer, shape, …; a long chain keeps its first layer and its last few."""
    if len(steps) > 2 * MAX_CHAIN_LAYERS + 1:
        steps = steps[:3] + ["…"] + steps[-2 * (MAX_CHAIN_LAYERS - 2) :]
    return " → ".join(steps + [last])


def infer(model: Model, reporter: Reporter) -> None:
    """Fill in_shape, out_shape and params of every node; report the first shape error of the model."""
    shapes = {MODEL_INPUT: model.input_shape}
    steps = [show(model.input_shape)]
    for node in model.nodes:
        in_shape = shapes[node.inputs[0]]
        try:
            out_shape = node.kind.output_shape(in_shape, node.args)
        except ShapeError as err:
            expects = expectation(node)
            last = f"{node.name} {node.kind.name} " + (
                f"expects {expects}" if expects else f"receives {show(in_shape)}"
            )
            reporter.error(f"shape error in layer '{node.name}': {err}", node.span, notes=[_chain(steps, last)])
            return
        node.in_shape, node.out_shape = tuple(in_shape), tuple(out_shape)
        node.params = node.kind.params(node.in_shape, node.out_shape, node.args)
        shapes[node.name] = node.out_shape
        steps += [f"{node.name} {node.kind.name}", show(out_shape)]
    if model.loss is not None:
        try:
            model.loss.kind.check_input(model.output_shape)
        except ShapeError as err:
            reporter.error(
                f"shape error in the loss: {err}",
                model.loss.span,
                notes=[_chain(steps, f"loss {model.loss.kind.name}")],
            )
