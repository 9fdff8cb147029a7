"""Lowering: decide the generated code's variable names, workspace buffers and in-place reuse for each model.

Pure Python on the shape-inferred IR; the templates receive these views and only write them out.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import unicodedata
from dataclasses import dataclass, field

from .ir import DEFAULT_INPUT, Model, Node
from .registry import INITS, Buffer
from .reorder import pooled_convolutions, pools_before_relus, trimmed_convolutions

LINE_LENGTH = 120


def py_literal(value, indent: int = 0, beside: int = 0, _flat: dict | None = None) -> str:
    """A Python literal laid out as a formatter would: on one line if it fits, else one item per line.

    `beside` counts the other characters on the literal's first line (a dict key before it, a comma after it).
    """
    flat_of = {} if _flat is None else _flat  # id → one-line text of each container, each made once
    flat = _flat_literal(value, flat_of)
    if indent + beside + len(flat) <= LINE_LENGTH or not isinstance(value, (dict, list, tuple)) or not value:
        return flat
    inner = " " * (indent + 4)
    if isinstance(value, dict):
        keys = [_flat_literal(k, flat_of) for k in value]
        items = [f"{key}: {py_literal(v, indent + 4, len(key) + 3, flat_of)}" for key, v in zip(keys, value.values())]
    else:
        items = [py_literal(v, indent + 4, 1, flat_of) for v in value]
    opener, closer = {dict: "{}", list: "[]", tuple: "()"}[type(value)]
    body = "".join(f"{inner}{item},\n" for item in items)
    return f"{opener}\n{body}{' ' * indent}{closer}"


def _flat_literal(value, flat_of: dict) -> str:
    if isinstance(value, (dict, list, tuple)):
        known = flat_of.get(id(value))
        if known is None:
            known = flat_of[id(value)] = _flat_container(value, flat_of)
        return known
    if isinstance(value, float) and math.isinf(value):
        # A buffer's first value may be ±∞ (max pooling pads with −∞); repr() would give the bare name `inf`.
        return "np.inf" if value > 0 else "-np.inf"
    if isinstance(value, str):
        # JSON's escapes are Python's too: quotes, backslashes and control characters can never end the string.
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def _flat_container(value, flat_of: dict) -> str:
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{_flat_literal(k, flat_of)}: {_flat_literal(v, flat_of)}" for k, v in value.items()) + "}"
        )
    inner = ", ".join(_flat_literal(v, flat_of) for v in value)
    if isinstance(value, list):
        return f"[{inner}]"
    return f"({inner},)" if len(value) == 1 else f"({inner})"


def safe_text(text: str) -> str:
    """Text from outside (a file name) made safe to write into generated code, in a comment or a docstring: every
    character that is not printable, could end a line or a string, or reorders text (bidi controls) becomes
    `<U+XXXX>`, so nothing a user names a file can change what the module does."""
    out = []
    for char in text:
        category = unicodedata.category(char)
        if char in "\\\"'" or category[0] in "CZ" and char != " ":
            out.append(f"<U+{ord(char):04X}>")
        else:
            out.append(char)
    return "".join(out)


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
    batch_last: bool = False


@dataclass
class ParamView:
    key: str
    shape: tuple[int, ...]
    init_code: str
    init_note: str
    start: int
    stop: int


@dataclass
class InputGradient:
    """How one input of a layer gets its share of the gradient in backward.

    The template writes the share to `var`, or adds it there when `add` (another consumer of the same value
    wrote it first). Single-input templates always write: in add mode they write to `temp`, and the lowering
    adds `temp` to `var`. `alias` allows handing over dy itself (Add, when no later share can change it);
    `guarded` marks a model input, whose gradient is computed only when asked for.
    """

    index: int
    value: str
    var: str
    add: bool
    alias: bool
    guarded: bool
    temp: str | None = None
    note: str = ""


@dataclass
class LayerView:
    """What a layer template needs: its node, the names of its variables, and accessors for arrays."""

    node: Node
    location: str
    xs: list[str]
    y: str
    dy: str
    inplace: bool
    live: bool
    grads: list[InputGradient] = field(default_factory=list)
    buffers: list[BufferView] = field(default_factory=list)
    # Numbers the template writes out, from the entry's bind().
    const: dict = field(default_factory=dict)
    # Why the layer runs where it does, when that is not where the .nn file puts it (see reorder.py).
    note: str = ""

    @property
    def x(self) -> str:
        return self.xs[0]

    @property
    def dx(self) -> str:
        """Where a single-input template writes its input gradient."""
        grad = self.grads[0]
        return grad.temp or grad.var

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
    def in_shapes(self):
        return self.node.in_shapes

    @property
    def out_shape(self):
        return self.node.out_shape

    @property
    def forward_formula(self) -> str:
        return self.node.bound.forward_formula

    @property
    def backward_formulas(self) -> tuple[str, ...]:
        return self.node.bound.backward_formulas

    @property
    def header(self) -> str:
        shapes = ", ".join(shape_text(s) for s in self.in_shapes)
        inputs = "" if len(self.node.inputs) == 1 else f"({', '.join(self.node.inputs)}) -> "
        return (
            f"{self.node.name} = {inputs}{self.node.source}  ({self.location})  {shapes} -> "
            f"{shape_text(self.out_shape)}"
        )

    @property
    def numerics_label(self) -> str:
        """The layer as check_numerics names it: `fc2 = Linear(10) (model.nn:6)`."""
        return f"{self.node.name} = {self.node.source} ({self.location})"

    def p(self, param: str) -> str:
        return f'p["{self.node.name}.{param}"]'

    def g(self, param: str) -> str:
        return f'g["{self.node.name}.{param}"]'

    def state(self, name: str) -> str:
        """A non-trainable array of the layer (e.g. BatchNorm's running_mean), a view into model.buffers."""
        return f'state["{self.node.name}.{name}"]'

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
    """One loss term: the loss on `output` (variable `z`), times `scale`; `suffix` names its methods."""

    kind: type
    args: dict
    source: str
    location: str
    output: str
    index: int
    suffix: str
    scale: float
    z: str
    shape: tuple[int, ...]
    buffers: list[BufferView]
    const: dict = field(default_factory=dict)

    def key(self, buffer: str) -> str:
        return f"loss.{self.output}.{buffer}"

    def buf(self, buffer: str) -> str:
        return f'ws["{self.key(buffer)}"]'

    # Whether this is the model's only output (then the term is written as in the .nn file: `loss MSE`).
    only: bool = False

    @property
    def statement(self) -> str:
        scale = "" if self.scale == 1 else f"{py_literal(self.scale)} * "
        return f"{scale}{self.source}" if self.only else f"{self.output} -> {scale}{self.source}"


@dataclass
class OptimizerView:
    kind: type
    args: dict
    source: str
    slots: tuple[str, ...]
    # Extra scratch arrays of the parameters' size its update needs (not saved).
    work: tuple[str, ...] = ()

    @property
    def formula(self) -> str:
        return self.kind.formula(self.args)

    @property
    def clipped(self) -> bool:
        """Whether the update starts by clipping the gradients (clip_norm or clip_value given)."""
        return self.args.get("clip_norm") is not None or self.args.get("clip_value") is not None

    @property
    def attributes(self) -> dict:
        """The arguments the model keeps as checked attributes (hyperparameters): the numbers given a value; the
        switches (bool) and options not taken (None) are decided in the generated code."""
        specs = {arg.name: arg for arg in self.kind.args}
        return {
            name: value
            for name, value in self.args.items()
            if value is not None and specs[name].type in ("float", "int")
        }


@dataclass
class ScheduleView:
    """The learning-rate schedule: its template renders `_scheduled_lr(self, epoch, lr)`."""

    kind: type
    args: dict
    source: str
    location: str


@dataclass
class InputView:
    name: str
    shape: tuple[int, ...]
    var: str
    grad: str
    # False when no live layer reads it: its gradient is zeros.
    reached: bool = True
    # Integer inputs (indices) have no gradient: backward() gives None for them.
    integer: bool = False


@dataclass
class OutputView:
    name: str
    shape: tuple[int, ...]
    var: str
    grad: str


@dataclass
class ModelView:
    model: Model
    layers: list[LayerView]
    inputs: list[InputView]
    outputs: list[OutputView]
    params: list[ParamView]
    buffers: list[BufferView]
    losses: list[LossView]
    optimizer: OptimizerView
    schedule: ScheduleView | None
    saved: list[str]
    config: str
    param_count: int
    # When the model-input gradients come last in backward (most graphs), `if not need_dx: return None` goes
    # right before this first one of them; None: each is guarded on its own, and the return goes at the end.
    early_return_before: InputGradient | None
    # (key, matrix shape, start, stop) of parameters that layers use together, as "fc1.weight+bias".
    stacked: list = field(default_factory=list)
    # Non-trainable arrays (model.buffers), laid out like the parameters in a flat array of their own.
    state: list = field(default_factory=list)
    state_count: int = 0
    # Whether some layer reads the training mode, and whether some layer draws random numbers (Dropout).
    uses_mode: bool = False
    random: bool = False

    @property
    def name(self):
        return self.model.name

    def flat_arrays(self, names, beside: int) -> str:
        """Code for a dict name → a zeroed flat array of the parameters' size, laid out as the formatter would (it
        follows `beside` characters in a statement indented by 8)."""
        items = [f'"{name}": _aligned_full({self.param_count}, 0, DTYPE)' for name in names]
        flat = "{" + ", ".join(items) + "}"
        if 8 + beside + len(flat) <= LINE_LENGTH:
            return flat
        return "{\n" + "".join(f"            {item},\n" for item in items) + "        }"

    @property
    def integer_inputs(self) -> str:
        return py_literal(tuple(i.name for i in self.inputs if i.integer))

    @property
    def state_rows(self) -> list[str]:
        return [f'("{p.key}", {py_literal(p.shape)}, {p.start}, {p.stop})' for p in self.state]

    @property
    def title(self) -> str:
        """`Net: input [64] -> output [10].`, or with the names when there are several inputs or outputs."""
        if len(self.inputs) == 1:
            inputs = f"input {shape_text(self.inputs[0].shape)}"
        else:
            inputs = "inputs " + ", ".join(f"{i.name} {shape_text(i.shape)}" for i in self.inputs)
        if len(self.outputs) == 1:
            outputs = f"output {shape_text(self.outputs[0].shape)}"
        else:
            outputs = "outputs " + ", ".join(f"{o.name} {shape_text(o.shape)}" for o in self.outputs)
        return f"{self.name}: {inputs} -> {outputs}."

    @property
    def hyperparameters(self) -> str:
        """(name, type, rule) of each optimizer hyperparameter: the runtime checks values set on the model by the rule
        the compiler checked the .nn value with (the rule names of nncompile/registry.py's checks). With a schedule,
        lr may reach 0 (annealed to eta_min=0), and the schedule's base lr is one more."""
        specs = {arg.name: arg for arg in self.optimizer.kind.args}
        rows = [
            (name, specs[name].type, getattr(specs[name].check, "rule", None)) for name in self.optimizer.attributes
        ]
        if self.schedule is not None:
            rows = [(name, kind, "non_negative" if name == "lr" else rule) for name, kind, rule in rows]
            rows.append(("base_lr", "float", "positive"))
        return py_literal(tuple(rows), 4, len("_hyperparameters = "))

    @property
    def param_rows(self) -> list[str]:
        return [f'("{p.key}", {py_literal(p.shape)}, {p.start}, {p.stop})' for p in self.params]

    @property
    def stacked_rows(self) -> list[str]:
        return [f'("{key}", {py_literal(shape)}, {start}, {stop})' for key, shape, start, stop in self.stacked]

    @property
    def buffer_rows(self) -> list[str]:
        return _buffer_rows(b for b in self.buffers if not b.batch_last)

    @property
    def batch_last_buffer_rows(self) -> list[str]:
        return _buffer_rows(b for b in self.buffers if b.batch_last)

    @property
    def loss_term_rows(self) -> list[str]:
        rows = []
        for term in self.losses:
            metric = py_literal(term.kind.metric)
            rows.append(f'("{term.output}", {py_literal(term.scale)}, {metric}, {py_literal(term.kind.probabilities)})')
        return rows

    @property
    def input_shapes(self) -> str:
        return py_literal({i.name: i.shape for i in self.inputs})

    @property
    def output_shapes(self) -> str:
        return py_literal({o.name: o.shape for o in self.outputs})

    @property
    def live_layers(self) -> list[LayerView]:
        return [view for view in self.layers if view.live]


def _location(model: Model, span) -> str:
    name = safe_text(os.path.basename(model.filename))
    return f"{name}:{span.line}" if span else name


def _config(model: Model) -> dict:
    layers = []
    for node in model.nodes:
        layers.append(
            {
                "name": node.name,
                "type": node.kind.name,
                "args": dict(node.args),
                "inputs": list(node.inputs),
                "block": node.block,
                "input_shapes": [list(s) for s in node.in_shapes],
                "output_shape": list(node.out_shape),
                "params": {f"{node.name}.{p.name}": list(p.shape) for p in node.params},
            }
        )
    return {
        "name": model.name,
        "inputs": {i.name: list(i.shape) for i in model.inputs},
        "outputs": {name: list(shape) for name, shape in model.output_shapes.items()},
        "output_layers": dict(model.output_values),
        "blocks": dict(model.blocks),
        "layers": layers,
        "losses": [
            {"output": t.output, "scale": t.scale, "type": t.component.kind.name, "args": dict(t.component.args)}
            for t in model.losses
        ],
        "optimizer": {"type": model.optimizer.kind.name, "args": dict(model.optimizer.args)},
        "schedule": None
        if model.schedule is None
        else {"type": model.schedule.kind.name, "args": dict(model.schedule.args)},
    }


class _Names:
    """Variable names of the generated code, each given once. Layer values are `<stem>_y` (gradient `<stem>_dy`,
    scratch `<stem>_dx`) and inputs `x`/`x_<name>` (gradient `dx`/`dx_<name>`); template temporaries use none
    of these forms, so they never collide with a value."""

    def __init__(self):
        self.taken: set[str] = set()

    def stem(self, name: str) -> str:
        base = re.sub(r"\W", "_", name)
        stem, n = base, 1
        while {f"{stem}_y", f"{stem}_dy", f"{stem}_dx"} & self.taken:
            n += 1
            stem = f"{base}_{n}"
        self.taken |= {f"{stem}_y", f"{stem}_dy", f"{stem}_dx"}
        return stem

    def pair(self, var: str, grad: str) -> tuple[str, str]:
        base_var, base_grad, n = var, grad, 1
        while var in self.taken or grad in self.taken:
            n += 1
            var, grad = f"{base_var}_{n}", f"{base_grad}_{n}"
        self.taken |= {var, grad}
        return var, grad


def _live_nodes(model: Model) -> set[str]:
    """The nodes whose value reaches an output: only they take part in backward."""
    live = set(model.output_values.values())
    for node in reversed(model.nodes):
        if node.name in live:
            live.update(node.inputs)
    return {n.name for n in model.nodes if n.name in live}


def _may_overwrite(value: str, model: Model, consumers: dict, outputs: set) -> bool:
    """Whether the array of `value` may be overwritten by its one consumer: a layer's own buffer (not a model
    input, which is the caller's array, nor an output) that no one else reads and that its producer's backward
    does not read. A view layer (Flatten) aliases its input, so the check continues to the array it aliases."""
    while True:
        if value in model.input_shapes or value in outputs or len(consumers.get(value, ())) != 1:
            return False
        producer = model.node(value)
        if "output" in producer.bound.saves:
            return False
        if not producer.kind.view:
            return True
        value = producer.inputs[0]


def _pool_ordered_convolutions(model: Model, by_name: dict) -> None:
    """A convolution that reads a model input and is read only by a max pool of 2 taps and stride 2 over its whole
    output produces its rows in the pool's order: a Conv2D's row (p, q, b, t, u) is position (2t + p, 2u + q), a
    Conv1D's row (p, b, t) position 2t + p, so each of the pool's taps is one contiguous block instead of a view
    that steps over every other position (NumPy's loops over those run a channel's length at a time).
    A convolution whose input gradient training needs keeps its order: that gradient's strided adds, four per tap
    instead of one, cost more than the pool gains (train_step 1.01-1.03 times slower, measured on two CNNs)."""
    for name, pool_node in pooled_convolutions(model).items():
        view, pool = by_name[name], by_name[pool_node.name]
        if view.node.inputs[0] not in model.input_shapes or not pool.const.get("pairwise"):
            continue
        const = view.const
        if view.kind.name == "Conv2D":
            _, stride, padding = pool.kind.geometry(pool.args)
            fits = (
                stride == (2, 2)
                and padding == (0, 0)
                and const["stride"] == const["dilation"] == (1, 1)
                and const["height"] % 2 == const["width"] % 2 == 0
            )
        else:
            fits = (
                pool.kind.stride(pool.args) == 2
                and not pool.args["padding"]
                and const["stride"] == const["dilation"] == 1
                and not const["padded"]
                and const["windows"] % 2 == 0
            )
        if fits:
            const["pool_order"] = pool.name
            pool.const["pool_ordered_input"] = True


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def lower(model: Model, dtype: str = "float32") -> ModelView:
    described = model
    model, moved = pools_before_relus(model)
    model, trimmed = trimmed_convolutions(model)
    consumers = model.consumers()
    outputs = set(model.output_values.values())
    live = _live_nodes(model)
    names = _Names()

    var_of: dict[str, str] = {}
    grad_of: dict[str, str] = {}
    inputs = []
    for item in model.inputs:
        if item.name == DEFAULT_INPUT:
            var, grad = names.pair("x", "dx")
        else:
            var, grad = names.pair(f"x_{item.name}", f"dx_{item.name}")
        var_of[item.name], grad_of[item.name] = var, grad
        inputs.append(InputView(item.name, item.shape, var, grad, integer=item.dtype == "int"))

    offsets: dict[str, dict[str, tuple[int, int]]] = {}
    start = state_start = 0
    for node in model.nodes:
        for param in node.params:
            if param.trainable:
                stop = start + math.prod(param.shape)
                offsets.setdefault(node.name, {})[param.name] = (start, stop)
                start = stop
            else:
                stop = state_start + math.prod(param.shape)
                offsets.setdefault(node.name, {})[param.name] = (state_start, stop)
                state_start = stop

    views: list[LayerView] = []
    by_name: dict[str, LayerView] = {}
    for node in model.nodes:
        stem = names.stem(node.name)
        bound = node.bound
        single = node.kind.arity == (1, 1)
        inplace = (
            single
            and node.kind.elementwise
            and "input" not in bound.saves
            and _may_overwrite(node.inputs[0], model, consumers, outputs)
        )
        view = LayerView(
            node=node,
            location=_location(model, node.span),
            xs=[var_of[v] for v in node.inputs],
            y=f"{stem}_y",
            dy=f"{stem}_dy",
            inplace=inplace,
            live=node.name in live,
            const=dict(bound.constants),
        )
        if node.name in moved:
            view.note = (
                f"moved after {moved[node.name]}, its only reader: max commutes with ReLU, and leaves fewer values"
            )
        if node.name in trimmed:
            full = described.node(node.name).out_shape
            view.note = (
                f"computes only the {shape_text(node.out_shape[:-1])} of its {shape_text(full[:-1])} windows that "
                f"{trimmed[node.name]} reads: the others reach nothing"
            )
        if not inplace and not node.kind.view:
            view.buffers.append(BufferView(view.key("y"), node.out_shape, "float"))
        if single and view.live and not node.kind.elementwise and not node.kind.view:
            view.buffers.append(BufferView(view.key("dx"), node.in_shape, "float"))
        for extra in bound.buffers:
            view.buffers.append(_buffer(view.key(extra.name), extra))
        var_of[node.name] = view.y
        grad_of[node.name] = view.dy
        views.append(view)
        by_name[node.name] = view

    _pool_ordered_convolutions(model, by_name)

    integer_inputs = {i.name for i in model.inputs if i.dtype == "int"}
    # Backward, in reverse graph order: the first share of a value's gradient is written, later ones added.
    written = {model.output_values[name] for name in model.outputs}
    for view in reversed(views):
        if not view.live:
            continue
        node = view.node
        distinct = len(set(node.inputs)) == len(node.inputs)
        alias_given = False
        for index, value in enumerate(node.inputs):
            if value in integer_inputs:
                continue  # indices have no gradient
            add = value in written
            written.add(value)
            grad = InputGradient(
                index=index,
                value=value,
                var=grad_of[value],
                add=add,
                alias=distinct and not add and not alias_given,
                guarded=value in model.input_shapes,
            )
            alias_given = alias_given or grad.alias
            if add:
                readers = [c.name for c in consumers[value] if c.name in live]
                if value in outputs:
                    readers = ["the loss", *readers]
                grad.note = f"{value} feeds {_join(list(dict.fromkeys(readers)))}: their gradients add up"
                if node.kind.arity == (1, 1):
                    grad.temp = f"{view.y.removesuffix('_y')}_dx"
            view.grads.append(grad)
    for item in inputs:
        item.reached = item.name in written

    # The input gradients are last in backward for most graphs: then one early return spares them all.
    # Backward's code in order: each layer's parameter gradients (if it has parameters), then its input
    # gradients. The early return may only skip input gradients of model inputs, never a parameter gradient.
    events: list[InputGradient | None] = []  # None: parameter gradients, which need_dx=False never skips
    for view in reversed(views):
        if not view.live:
            continue
        if view.node.params:
            events.append(None)
        events += view.grads
    first = next((i for i, grad in enumerate(events) if grad is not None and grad.guarded), len(events))
    rest_skippable = all(grad is not None and grad.guarded for grad in events[first:])
    early_return_before = events[first] if first < len(events) and rest_skippable else None

    saved: dict[str, None] = {}  # an ordered set: a linear pass, however many layers
    for view in views:
        if not view.live:
            continue
        saves = view.node.bound.saves
        if "input" in saves:
            saved.update(dict.fromkeys(view.xs))
        if "output" in saves:
            saved[view.y] = None

    output_views = [
        OutputView(
            name,
            model.value_shape(model.output_values[name]),
            var_of[model.output_values[name]],
            grad_of[model.output_values[name]],
        )
        for name in model.outputs
    ]
    losses = []
    suffixes: set[str] = set()
    for term in model.losses:
        kind, args = term.component.kind, term.component.args
        index = model.outputs.index(term.output)
        shape = output_views[index].shape
        suffix = re.sub(r"\W", "_", term.output)
        while suffix in suffixes:
            suffix += "_"
        suffixes.add(suffix)
        loss = LossView(
            kind=kind,
            args=args,
            source=term.component.source,
            location=_location(model, term.span),
            output=term.output,
            index=index,
            suffix=suffix,
            scale=term.scale,
            z=output_views[index].var,
            shape=shape,
            buffers=[],
            const=kind.constants(shape, args, dtype),
            only=len(model.outputs) == 1,
        )
        # Every loss writes its gradient into dz, batch-first unless the loss declares its own.
        declared = kind.buffers(shape, args)
        default_dz = [] if any(b.name == "dz" for b in declared) else [BufferView(loss.key("dz"), shape, "float")]
        loss.buffers = default_dz + [_buffer(loss.key(b.name), b) for b in declared]
        losses.append(loss)

    params, state = [], []
    for node in model.nodes:
        for param in node.params:
            init = INITS[param.init]
            note = f"{node.name}.{param.name}: {init.name}, {init.formula}"
            if init.formula not in ("0", "1"):
                note += f", fan_in={param.fan_in}, fan_out={param.fan_out}"
            code = init.expression(param.shape, param.fan_in, param.fan_out)
            first, last = offsets[node.name][param.name]
            view = ParamView(f"{node.name}.{param.name}", param.shape, code, note, first, last)
            (params if param.trainable else state).append(view)

    optimizer = OptimizerView(
        kind=model.optimizer.kind,
        args=model.optimizer.args,
        source=model.optimizer.source,
        slots=model.optimizer.kind.slots(model.optimizer.args),
        work=model.optimizer.kind.work(model.optimizer.args),
    )
    schedule = None
    if model.schedule is not None:
        schedule = ScheduleView(
            kind=model.schedule.kind,
            args=model.schedule.args,
            source=model.schedule.source,
            location=_location(model, model.schedule.span),
        )
    stacked = []
    for node in model.nodes:
        for group, shape in node.bound.stacked.items():
            spans = [offsets[node.name][name] for name in group]
            if any(a[1] != b[0] for a, b in itertools.pairwise(spans)):
                raise ValueError(f"parameters {group} of {node.name} are not adjacent in the flat arrays")
            stacked.append((stacked_key(node.name, group), shape, spans[0][0], spans[-1][1]))
    buffers = [b for v in views for b in v.buffers] + [b for loss in losses for b in loss.buffers]
    return ModelView(
        model=described,
        layers=views,
        inputs=inputs,
        outputs=output_views,
        params=params,
        buffers=buffers,
        losses=losses,
        optimizer=optimizer,
        schedule=schedule,
        saved=list(saved),
        config=py_literal(_config(described), indent=8),
        param_count=start,
        early_return_before=early_return_before,
        stacked=stacked,
        state=state,
        state_count=state_start,
        uses_mode=any(n.kind.uses_mode for n in model.nodes),
        random=any(n.kind.random for n in model.nodes),
    )


def _buffer_rows(buffers) -> list[str]:
    """The workspace table's rows: (key, per-sample shape, dtype, initial value)."""
    rows = []
    for b in buffers:
        dtype = {"bool": "bool", "int": "np.intp"}.get(b.kind, "DTYPE")
        rows.append(f'("{b.key}", {py_literal(b.shape)}, {dtype}, {py_literal(b.fill)})')
    return rows


def _buffer(key: str, buffer: Buffer) -> BufferView:
    return BufferView(key, buffer.shape, buffer.kind, buffer.fill, buffer.batch_last)


__all__ = ["LayerView", "LossView", "ModelView", "lower", "py_literal", "safe_text", "shape_text"]
