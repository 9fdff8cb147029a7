"""Introspection of shape-inferred models: a Keras-like summary table and a JSON form of the IR for tools.

Pure functions on `nncompile.ir.Model`s (as `compile_models` returns them); the CLI only prints their results.
"""

from __future__ import annotations

import json
import math

from .errors import Span
from .ir import Model, Node
from .shapes import show

IR_FORMAT = "nncompile-ir"
IR_VERSION = 2
ITEMSIZE = {"float32": 4, "float64": 8}


def parameter_count(node: Node) -> int:
    return sum(math.prod(p.shape) for p in node.params)


def model_parameter_count(model: Model, trainable: bool | None = None) -> int:
    """All parameters, or only the trainable (True) or the non-trainable (False) ones."""
    return sum(
        math.prod(p.shape) for n in model.nodes for p in n.params if trainable is None or p.trainable == trainable
    )


def activation_count(model: Model, batch: int = 1) -> int:
    """Values held by the forward pass for a batch: the inputs and every layer's output."""
    per_sample = sum(math.prod(i.shape) for i in model.inputs) + sum(math.prod(n.out_shape) for n in model.nodes)
    return per_sample * batch


def human_bytes(count: int) -> str:
    """1536 → '1.50 KiB'; plain bytes below 1 KiB."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.2f} {unit}"
    raise AssertionError("unreachable")


def _table(rows: list[tuple[str, ...]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


def summary(models: list[Model], batch: int = 1, dtype: str = "float32") -> str:
    """One table per model: layer name and type, output shape (per sample), parameter count; then totals."""
    if batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")
    itemsize = ITEMSIZE[dtype]
    blocks = []
    for model in models:
        header = ("Layer (type)", "Output shape", "Param #", "Connected to")
        rows = [(f"{i.name} (Input)", show(i.shape), "0", "") for i in model.inputs]
        for node in model.nodes:
            rows.append(
                (
                    f"{node.name} ({node.kind.name})",
                    show(node.out_shape),
                    f"{parameter_count(node):,}",
                    ", ".join(node.inputs),
                )
            )
        lines = _table([header, *rows], right={2})
        width = max(len(line) for line in lines)
        params = model_parameter_count(model)
        trainable = model_parameter_count(model, trainable=True)
        frozen = params - trainable
        activations = activation_count(model, batch)
        size = human_bytes(params * itemsize)
        out = [
            f"Model: {model.name} ({dtype})",
            "─" * width,
            lines[0],
            "═" * width,
            *lines[1:],
            "═" * width,
            f"Total params: {params:,} ({size})",
            f"Trainable params: {trainable:,} ({human_bytes(trainable * itemsize)})",
            f"Non-trainable params: {frozen:,} ({human_bytes(frozen * itemsize)})",
            f"Activations for batch {batch}: {activations:,} values ({human_bytes(activations * itemsize)}), "
            + f"the input{'s' if len(model.inputs) > 1 else ''} and every layer's output",
            *_blocks(model),
            *_outputs_and_losses(model),
            f"Optimizer: {model.optimizer.source}" + (" (the default)" if model.optimizer.span is None else ""),
            *([f"Schedule: {model.schedule.source}"] if model.schedule is not None else []),
        ]
        blocks.append("\n".join(out))
    return "\n\n".join(blocks) + "\n"


def _blocks(model: Model) -> list[str]:
    if not model.blocks:
        return []
    return ["Block instances: " + ", ".join(f"{path} ({name})" for path, name in model.blocks.items())]


def _outputs_and_losses(model: Model) -> list[str]:
    lines = []
    if len(model.outputs) > 1 or model.outputs[0] != model.output_values[model.outputs[0]]:
        lines.append(
            "Outputs: "
            + ", ".join(
                f"{name} ({model.output_values[name]})" if name != model.output_values[name] else name
                for name in model.outputs
            )
        )
    if not model.losses:
        return [*lines, "Loss: none"]
    if len(model.losses) == 1 and len(model.outputs) == 1 and model.losses[0].scale == 1:
        return [*lines, f"Loss: {model.losses[0].component.source}"]
    terms = [f"{'' if t.scale == 1 else f'{t.scale:g} * '}{t.component.source} on {t.output}" for t in model.losses]
    return [*lines, "Loss: " + " + ".join(terms)]


def _span(span: Span | None) -> dict | None:
    if span is None:
        return None
    return {"line": span.line, "column": span.column, "end_line": span.end_line, "end_column": span.end_column}


def _node(node: Node) -> dict:
    return {
        "name": node.name,
        "type": node.kind.name,
        "source": node.source,
        "args": dict(node.args),
        "inputs": list(node.inputs),
        "block": node.block,
        "input_shapes": [list(shape) for shape in node.in_shapes],
        "output_shape": list(node.out_shape),
        "params": [
            {
                "name": f"{node.name}.{p.name}",
                "shape": list(p.shape),
                "count": math.prod(p.shape),
                "init": p.init,
                "trainable": p.trainable,
                "fan_in": p.fan_in,
                "fan_out": p.fan_out,
            }
            for p in node.params
        ],
        "parameter_count": parameter_count(node),
        "span": _span(node.span),
    }


def _component(component) -> dict | None:
    if component is None:
        return None
    return {
        "type": component.kind.name,
        "source": component.source,
        "args": dict(component.args),
        "span": _span(component.span),
    }


def ir_dict(models: list[Model], filename: str = "<string>", dtype: str = "float32") -> dict:
    """The shape-inferred IR as plain JSON-serialisable data."""
    return {
        "format": IR_FORMAT,
        "version": IR_VERSION,
        "file": filename,
        "dtype": dtype,
        "models": [
            {
                "name": model.name,
                "span": _span(model.span),
                "inputs": [{"name": i.name, "shape": list(i.shape), "span": _span(i.span)} for i in model.inputs],
                "outputs": [
                    {"name": name, "value": model.output_values[name], "shape": list(shape)}
                    for name, shape in model.output_shapes.items()
                ],
                "parameter_count": model_parameter_count(model),
                "blocks": [{"instance": path, "block": name} for path, name in model.blocks.items()],
                "nodes": [_node(n) for n in model.nodes],
                "losses": [{"output": t.output, "scale": t.scale, **_component(t.component)} for t in model.losses],
                "optimizer": _component(model.optimizer),
                "schedule": _component(model.schedule),
            }
            for model in models
        ],
    }


def ir_json(models: list[Model], filename: str = "<string>", dtype: str = "float32") -> str:
    """`ir_dict` as indented JSON, with short flat lists and objects (shapes, spans, args) kept on one line."""
    return _dumps(ir_dict(models, filename, dtype), 0) + "\n"


def _dumps(value, indent: int) -> str:
    flat = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, (dict, list)) or (_depth(value) <= 2 and indent + len(flat) <= 120):
        return flat
    inner = " " * (indent + 2)
    if isinstance(value, dict):
        body = [f"{inner}{json.dumps(k)}: {_dumps(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(body) + "\n" + " " * indent + "}"
    body = [inner + _dumps(v, indent + 2) for v in value]
    return "[\n" + ",\n".join(body) + "\n" + " " * indent + "]"


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0
