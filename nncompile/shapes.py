"""Shape inference: bind each layer to its input shapes in graph order and attach shapes and parameters to the nodes.

A shape error names the layer, what it received, and a note with the chain of shapes that led there, ending with
what the layer expects: `[64] → fc1 Linear → [128] → conv Conv1D expects [length, channels]`.
"""

from __future__ import annotations

import math
import re

from .errors import Reporter
from .ir import Model, Node
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


def _steps_to(value: str, model: Model, inputs: dict[str, tuple[int, ...]]) -> list[str]:
    """The shapes and layers that led to a value, following each layer's first input back to a model input."""
    steps: list[str] = []
    # Enough layers for the chain shown (its start is the model input, found by walking the whole way back).
    while value not in inputs:
        node = model.node(value)
        steps[:0] = [f"{node.name} {node.kind.name}", show(node.out_shape)]
        value = node.inputs[0]
    return [show(inputs[value]), *steps]


# A model whose parameters or per-sample activations exceed these cannot be allocated on any machine we target.
MAX_PARAMETERS = 2**34
MAX_SAMPLE_VALUES = 2**32


def infer(model: Model, reporter: Reporter) -> None:
    """Fill in_shapes, out_shape, params and bound of every node; report the first shape error of the model."""
    inputs = dict(model.input_shapes)
    shapes = dict(inputs)
    parameters = 0
    activations = sum(math.prod(s) for s in inputs.values())
    integers = {i.name for i in model.inputs if i.dtype == "int"}
    for node in model.nodes:
        in_shapes = [shapes[v] for v in node.inputs]
        for value in node.inputs:
            if (value in integers) != (node.kind.input_dtype == "int"):
                if value in integers:
                    problem = f"input '{value}' holds integers, and {node.kind.name} takes float values"
                    help_text = "integers are indices: start with Embedding, e.g. 'tokens -> Embedding(1000, 16)'"
                else:
                    problem = f"{node.kind.name} takes integer indices, and '{value}' holds float values"
                    help_text = f"declare the input as integers: 'input {value} [...] int'"
                reporter.error(f"layer '{node.name}': {problem}", node.span, helps=[help_text])
                return
        try:
            bound = node.kind.bind(node.args, in_shapes)
        except ShapeError as err:
            if len(node.inputs) == 1:
                expects = expectation(node)
                last = f"{node.name} {node.kind.name} " + (
                    f"expects {expects}" if expects else f"receives {show(in_shapes[0])}"
                )
                notes = [_chain(_steps_to(node.inputs[0], model, inputs), last)]
            else:
                notes = [
                    f"input {i + 1}, {model.label(value)}: "
                    f"{_chain(_steps_to(value, model, inputs)[:-1], show(shapes[value]))}"
                    for i, value in enumerate(node.inputs)
                ]
            reporter.error(f"shape error in layer '{node.name}': {err}", node.span, notes=notes)
            return
        node.in_shapes = [tuple(s) for s in in_shapes]
        node.out_shape = tuple(bound.out_shape)
        node.params = list(bound.params)
        node.bound = bound
        shapes[node.name] = node.out_shape
        parameters += sum(math.prod(p.shape) for p in node.params)
        activations += math.prod(node.out_shape)
        if parameters > MAX_PARAMETERS or activations > MAX_SAMPLE_VALUES:
            what = "parameters" if parameters > MAX_PARAMETERS else "per-sample activation values"
            count = parameters if parameters > MAX_PARAMETERS else activations
            limit = MAX_PARAMETERS if parameters > MAX_PARAMETERS else MAX_SAMPLE_VALUES
            reporter.error(
                f"layer '{node.name}' brings the model to {count:,} {what}, more than can be allocated",
                node.span,
                notes=[f"the limit is {limit:,}; shapes so far: {_chain(_steps_to(node.name, model, inputs), '')}"],
            )
            return
    for term in model.losses:
        shape = shapes[model.output_values[term.output]]
        try:
            term.component.kind.check_input(shape)
        except ShapeError as err:
            chain = _chain(
                _steps_to(model.output_values[term.output], model, inputs), f"loss {term.component.kind.name}"
            )
            reporter.error(f"shape error in the loss: {err}", term.span, notes=[chain])


def lint(model: Model, reporter: Reporter) -> None:
    """Warn about legal models that are almost surely wrong: a loss that undoes or misreads the layer before it,
    and arguments written in another library's order."""
    for term in model.losses:
        value = model.output_values[term.output]
        if value in model.input_shapes:
            continue
        node = model.node(value)
        loss = term.component.kind.name
        if loss == "CrossEntropy" and node.kind.name in ("Softmax", "LogSoftmax"):
            reporter.warning(
                f"CrossEntropy applies log-softmax itself; the {node.kind.name} '{node.name}' before it applies a "
                "second one",
                term.span,
                helps=[f"remove {node.kind.name} and give CrossEntropy the logits"],
                notes=[f"'{node.name}' is at {node.span}"],
            )
        if loss == "BCE" and node.kind.name not in ("Sigmoid", "Softmax"):
            reporter.warning(
                f"BCE takes probabilities, but its input '{node.name}' is a {node.kind.name} output, not a Sigmoid (or Softmax)",
                term.span,
                helps=[
                    "use BCEWithLogits instead: it takes logits and applies the sigmoid itself, stably",
                    "or add Sigmoid before the loss, so the outputs are in (0, 1)",
                ],
            )
        if loss == "BCEWithLogits" and node.kind.name in ("Sigmoid", "Softmax"):
            reporter.warning(
                f"BCEWithLogits applies the sigmoid itself; the {node.kind.name} '{node.name}' before it makes it "
                "see probabilities as logits",
                term.span,
                helps=[f"remove {node.kind.name} and give BCEWithLogits the logits, or use BCE on the probabilities"],
                notes=[f"'{node.name}' is at {node.span}"],
            )
    for node in model.nodes:
        if node.kind.name == "Conv1D" and node.positional == 3:
            out, k, stride = node.args["out"], node.args["k"], node.args["stride"]
            if out == node.in_shape[1] and k > stride:
                reporter.warning(
                    f"Conv1D({out}, {k}, {stride}) reads as out={out}, k={k}, stride={stride}; these look like "
                    "PyTorch's (in_channels, out_channels, kernel_size)",
                    node.span,
                    helps=[f"if you meant {k} output channels and a kernel of {stride}, write Conv1D({k}, {stride})"],
                    notes=["Conv1D takes (out, k, stride); the input channels come from the input shape"],
                )
