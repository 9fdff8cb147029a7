"""Lowering: decide the generated code's variable names, workspace buffers and in-place reuse for each model.

Pure Python on the shape-inferred IR; the templates receive these views and only write them out.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field

from .ir import MODEL_INPUT, Model, Node
from .registry import INITS, Buffer

LINE_LENGTH = 120


def py_literal(value, indent: int = 0, beside: int = 0) -> str:
    """A Python literal laid out as a formatter would: on one line if it fits, else one item per line.

    `beside` counts the other characters on the literal's first line (a dict key before it, a comma after it).
    """
    flat = _flat_literal(value)
    if indent + beside + len(flat) <= LINE_LENGTH or not isinstance(value, (dict, list, tuple)) or not value:
        return flat
    inner = " " * (indent + 4)
    if isinstance(value, dict):
        keys = [_flat_literal(k) for k in value]
        items = [f"{key}: {py_literal(v, indent + 4, len(key) + 3)}" for key, v in zip(keys, value.values())]
    else:
        items = [py_literal(v, indent + 4, 1) for v in value]
    opener, closer = {dict: "{}", list: "[]", tuple: "()"}[type(value)]
    body = "".join(f"{inner}{item},\n" for item in items)
    return f"{opener}\n{body}{' ' * indent}{closer}"


def _flat_literal(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_flat_literal(k)}: {_flat_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flat_literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(_flat_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def stacked_key(layer: str, params) -> str:
    return f"{layer}.{'+'.join(params)}"


def shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


@dataclass
class BufferView:
    key: str
    shape: tuple[int, ...]
    kind: str
    fill: float = 0


@dataclass
class ParamView:
    key: str
    shape: tuple[int, ...]
    init_code: str
    init_note: str
    start: int
    stop: int


@dataclass
class LayerView:
    """What a layer template needs: its node, the names of its variables, and accessors for arrays."""

    node: Node
    location: str
    x: str
    y: str
    dy: str
    dx: str
    first: bool
    inplace: bool
    buffers: list[BufferView] = field(default_factory=list)
    # Numbers the template writes out, from the entry's `constants` hook.
    const: dict = field(default_factory=dict)

    @property
    def name(self):
        return self.node.name

    @property
    def args(self):
        return self.node.args

    @property
    def kind(self):
        return self.node.kind

    @property
    def in_shape(self):
        return self.node.in_shape

    @property
    def out_shape(self):
        return self.node.out_shape

    @property
    def header(self) -> str:
        return f"{self.node.name} = {self.node.source}  ({self.location})  {shape_text(self.in_shape)} -> {shape_text(self.out_shape)}"

    def p(self, param: str) -> str:
        return f'p["{self.node.name}.{param}"]'

    def g(self, param: str) -> str:
        return f'g["{self.node.name}.{param}"]'

    def key(self, buffer: str) -> str:
        return f"{self.node.name}.{buffer}"

    def buf(self, buffer: str) -> str:
        return f'ws["{self.key(buffer)}"]'

    def stacked_p(self, *params: str) -> str:
        """Adjacent parameters as one matrix (e.g. [W; b]): a view of the flat parameter array made in __init__."""
        return f'self._stacked_params["{stacked_key(self.node.name, params)}"]'

    def stacked_g(self, *params: str) -> str:
        """The gradients of adjacent parameters as one matrix, a view of the flat gradient array."""
        return f'self._stacked_grads["{stacked_key(self.node.name, params)}"]'


@dataclass
class LossView:
    kind: type
    args: dict
    source: str
    location: str
    z: str
    dz: str
    shape: tuple[int, ...]
    buffers: list[BufferView]
    const: dict = field(default_factory=dict)

    def buf(self, buffer: str) -> str:
        return f'ws["loss.{buffer}"]'


@dataclass
class OptimizerView:
    kind: type
    args: dict
    source: str
    slots: tuple[str, ...]


@dataclass
class ModelView:
    model: Model
    layers: list[LayerView]
    params: list[ParamView]
    buffers: list[BufferView]
    loss: LossView | None
    optimizer: OptimizerView
    saved: list[str]
    output: str
    config: str
    param_count: int
    # (key, matrix shape, start, stop) of parameters that layers use together, as "fc1.weight+bias".
    stacked: list = field(default_factory=list)

    @property
    def name(self):
        return self.model.name

    @property
    def hyperparameters(self) -> str:
        return py_literal(tuple(self.optimizer.args))

    @property
    def param_rows(self) -> list[str]:
        return [f'("{p.key}", {py_literal(p.shape)}, {p.start}, {p.stop})' for p in self.params]

    @property
    def stacked_rows(self) -> list[str]:
        return [f'("{key}", {py_literal(shape)}, {start}, {stop})' for key, shape, start, stop in self.stacked]

    @property
    def buffer_rows(self) -> list[str]:
        rows = []
        for b in self.buffers:
            dtype = "bool" if b.kind == "bool" else "DTYPE"
            rows.append(f'("{b.key}", {py_literal(b.shape)}, {dtype}, {py_literal(b.fill)})')
        return rows

    @property
    def input_shape(self):
        return self.model.input_shape

    @property
    def output_shape(self):
        return self.model.output_shape


def _location(model: Model, span) -> str:
    return f"{os.path.basename(model.filename)}:{span.line}" if span else os.path.basename(model.filename)


def _config(model: Model) -> dict:
    layers = []
    for node in model.nodes:
        layers.append(
            {
                "name": node.name,
                "type": node.kind.name,
                "args": dict(node.args),
                "input_shape": list(node.in_shape),
                "output_shape": list(node.out_shape),
                "params": {f"{node.name}.{p.name}": list(p.shape) for p in node.params},
            }
        )
    config = {
        "name": model.name,
        "input_shape": list(model.input_shape),
        "output_shape": list(model.output_shape),
        "layers": layers,
        "loss": {"type": model.loss.kind.name, "args": dict(model.loss.args)} if model.loss else None,
        "optimizer": {"type": model.optimizer.kind.name, "args": dict(model.optimizer.args)},
    }
    return config


def _may_overwrite(source: str, by_name: dict[str, Node], consumers: dict[str, int]) -> bool:
    """Whether the array named `source` may be overwritten by its one consumer: it must be a layer's own buffer
    (not the model input, which is the caller's array) that its producer's backward does not read. A view layer
    (Flatten) aliases its input, so the check continues through it to the array it aliases."""
    while True:
        producer = by_name.get(source)
        if producer is None or consumers.get(source, 0) != 1 or "output" in producer.kind.saves_for(producer.args):
            return False
        if not producer.kind.view:
            return True
        source = producer.inputs[0]


def lower(model: Model, dtype: str = "float32") -> ModelView:
    consumers: dict[str, int] = {}
    for node in model.nodes:
        for source in node.inputs:
            consumers[source] = consumers.get(source, 0) + 1
    by_name = {node.name: node for node in model.nodes}

    offsets: dict[str, dict[str, tuple[int, int]]] = {}
    start = 0
    for node in model.nodes:
        for param in node.params:
            stop = start + math.prod(param.shape)
            offsets.setdefault(node.name, {})[param.name] = (start, stop)
            start = stop

    views: list[LayerView] = []
    var_of = {MODEL_INPUT: "x"}
    for index, node in enumerate(model.nodes):
        source = node.inputs[0]
        # An elementwise layer overwrites its input only if its own backward does not read that input either.
        inplace = (
            node.kind.elementwise
            and "input" not in node.kind.saves_for(node.args)
            and _may_overwrite(source, by_name, consumers)
        )
        first = index == 0
        view = LayerView(
            node=node,
            location=_location(model, node.span),
            x=var_of[source],
            y=f"{node.name}_y",
            dy=f"{node.name}_dy",
            dx="dx" if first else f"{source}_dy",
            first=first,
            inplace=inplace,
            const=node.kind.constants(node.in_shape, node.out_shape, node.args),
        )
        if not inplace and not node.kind.view:
            view.buffers.append(BufferView(view.key("y"), node.out_shape, "float"))
        if not node.kind.elementwise and not node.kind.view:
            view.buffers.append(BufferView(view.key("dx"), node.in_shape, "float"))
        for extra in node.kind.buffers(node.in_shape, node.out_shape, node.args):
            view.buffers.append(_buffer(view.key(extra.name), extra))
        var_of[node.name] = view.y
        views.append(view)

    saved: list[str] = []
    for view in views:
        saves = view.kind.saves_for(view.args)
        if "input" in saves and view.x not in saved:
            saved.append(view.x)
        if "output" in saves and view.y not in saved:
            saved.append(view.y)

    output = views[-1].y if views else "x"
    loss = None
    if model.loss is not None:
        kind = model.loss.kind
        shape = model.output_shape
        loss = LossView(
            kind=kind,
            args=model.loss.args,
            source=model.loss.source,
            location=_location(model, model.loss.span),
            z=output,
            dz=views[-1].dy if views else "dz",
            shape=shape,
            buffers=[BufferView("loss.dz", shape, "float")]
            + [_buffer(f"loss.{b.name}", b) for b in kind.buffers(shape, model.loss.args)],
            const=kind.constants(shape, model.loss.args, dtype),
        )

    params = []
    for node in model.nodes:
        for param in node.params:
            init = INITS[param.init]
            note = f"{node.name}.{param.name}: {init.name}, {init.formula}"
            if init.formula not in ("0", "1"):
                note += f", fan_in={param.fan_in}, fan_out={param.fan_out}"
            code = init.expression(param.shape, param.fan_in, param.fan_out)
            first, last = offsets[node.name][param.name]
            params.append(ParamView(f"{node.name}.{param.name}", param.shape, code, note, first, last))

    optimizer = OptimizerView(
        kind=model.optimizer.kind,
        args=model.optimizer.args,
        source=model.optimizer.source,
        slots=model.optimizer.kind.slots(model.optimizer.args),
    )
    stacked = []
    for node in model.nodes:
        for group, shape in node.kind.stacked(node.in_shape, node.out_shape, node.args).items():
            spans = [offsets[node.name][name] for name in group]
            if any(a[1] != b[0] for a, b in itertools.pairwise(spans)):
                raise ValueError(f"parameters {group} of {node.name} are not adjacent in the flat arrays")
            stacked.append((stacked_key(node.name, group), shape, spans[0][0], spans[-1][1]))
    buffers = [b for v in views for b in v.buffers] + (loss.buffers if loss else [])
    return ModelView(
        model=model,
        layers=views,
        params=params,
        buffers=buffers,
        loss=loss,
        optimizer=optimizer,
        saved=saved,
        output=output,
        config=py_literal(_config(model), indent=8),
        param_count=start,
        stacked=stacked,
    )


def _buffer(key: str, buffer: Buffer) -> BufferView:
    return BufferView(key, buffer.shape, buffer.kind, buffer.fill)


__all__ = ["LayerView", "LossView", "ModelView", "lower", "py_literal", "shape_text"]
