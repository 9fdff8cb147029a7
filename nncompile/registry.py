"""The registry: one entry per layer, loss, optimizer and initializer, holding everything the compiler knows about it.

An entry declares its argument schema, shape rule, parameters, workspace buffers, template and gradient formulas.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from .ast import format_value  # re-exported: entries write argument values in messages and signatures

REQUIRED = object()


class ShapeError(Exception):
    """A layer cannot accept the shape it receives; the message names the layer's requirement."""


@dataclass(frozen=True)
class Arg:
    """One argument of an entry: its name, type, default and value check.

    Types: 'int', 'float', 'bool', 'name' (a bare word; `choices` lists the allowed ones, if limited), 'pair'
    (an int or a list of `length` ints, given to the entry as a tuple), 'ints' (a list of ints, as a tuple) and
    'padding' (like 'pair', or one of the names in `choices`, e.g. valid/same). `check` tests one number.
    A default of None means "not given" (the entry then derives the value, e.g. from the input shape); `none` is no
    value a .nn file can write, so `default_text` says in the docs and signatures what not giving it means.
    """

    name: str
    type: str
    default: object = REQUIRED
    check: Callable[[object], str | None] | None = None
    doc: str = ""
    choices: tuple[str, ...] = ()
    length: int = 2
    default_text: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def shown_default(self) -> str:
        """The default as the docs and signatures show it."""
        return self.default_text or format_value(self.default)


def rule(name: str):
    """Give a value check the name generated modules know it by: they check optimizer hyperparameters set at run
    time by the same rule (the runtime's _RULES, nncompile/runtime.py), so a check used for an optimizer argument
    needs one."""

    def mark(check):
        check.rule = name
        return check

    return mark


@rule("positive")
def positive(value) -> str | None:
    return None if value > 0 else "must be positive"


@rule("non_negative")
def non_negative(value) -> str | None:
    return None if value >= 0 else "must not be negative"


@rule("in_unit_interval")
def in_unit_interval(value) -> str | None:
    return None if 0 <= value < 1 else "must be in [0, 1)"


def in_closed_unit_interval(value) -> str | None:
    return None if 0 <= value <= 1 else "must be in [0, 1]"


def in_half_open_unit_interval(value) -> str | None:
    return None if 0 < value <= 1 else "must be in (0, 1]"


@dataclass(frozen=True)
class Param:
    """An array a layer keeps between batches: `name` is the suffix after the layer name (`weight` →
    `fc1.weight`). Trainable ones are the optimizer's; the others (running statistics) are state the layer
    updates itself, saved with the model but never touched by an optimizer (PyTorch's buffers)."""

    name: str
    shape: tuple[int, ...]
    init: str
    fan_in: int
    fan_out: int
    trainable: bool = True


@dataclass(frozen=True)
class Buffer:
    """A per-batch workspace array a layer writes into: shape per sample, 'float', 'bool' or 'int' (np.intp, for
    indices such as an argmax), and its first value (may be ±inf). The batch is its first axis, or with batch_last
    its last: (*shape, batch), e.g. a loss's class-major arrays (classes × batch)."""

    name: str
    shape: tuple[int, ...]
    kind: str = "float"
    fill: float = 0
    batch_last: bool = False


class Entry:
    """What every registry entry has: a name, aliases, arguments, a template, formulas and a one-line summary."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    args: ClassVar[tuple[Arg, ...]] = ()
    # Accepted positional forms, each a tuple of argument names; default: any prefix of `args`.
    positional_forms: ClassVar[tuple[tuple[str, ...], ...] | None] = None
    template: ClassVar[str]
    summary: ClassVar[str] = ""
    forward_formula: ClassVar[str] = ""
    backward_formulas: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_args(cls, args: dict) -> list[tuple[str, str]]:
        """Checks that involve several arguments: (argument name, message) pairs."""
        return []

    @classmethod
    def forms(cls) -> tuple[tuple[str, ...], ...]:
        if cls.positional_forms is not None:
            return cls.positional_forms
        names = tuple(a.name for a in cls.args)
        return tuple(names[:n] for n in range(len(names) + 1))

    @classmethod
    def signature(cls) -> str:
        parts = []
        for a in cls.args:
            parts.append(a.name if a.required else f"{a.name}={a.shown_default}")
        return f"{cls.name}({', '.join(parts)})" if parts else cls.name


@dataclass(frozen=True)
class Bound:
    """A layer entry bound to its actual arguments and input shapes: everything later stages need from it.

    `saves` says what backward reads from the forward pass ('input', 'output'); `constants` are numbers the
    template writes out (read as `L.const`); `stacked` maps groups of adjacent parameters used as one matrix
    (e.g. [W; b]) to that matrix's shape; the formulas are those of these arguments.
    """

    out_shape: tuple[int, ...]
    params: tuple[Param, ...]
    buffers: tuple[Buffer, ...]
    stacked: dict
    constants: dict
    saves: frozenset
    forward_formula: str
    backward_formulas: tuple[str, ...]


class Layer(Entry):
    """A layer: maps its per-sample input shapes to an output shape, maybe with parameters.

    `bind(args, in_shapes)` is what the compiler calls. Single-input layers implement it through the hooks below,
    which receive their one input shape; layers with several inputs (`arity` above 1) override `bind`.
    """

    # (fewest, most) inputs the layer takes; most None: any number.
    arity: ClassVar[tuple[int, int | None]] = (1, 1)
    # What its inputs hold: "float", or "int" for indices (Embedding); its output is always float.
    input_dtype: ClassVar[str] = "float"
    # Whether it behaves differently in training and inference (Dropout, BatchNorm): its template then reads
    # `training`, and the model draws from its own random generator if `random` is set too.
    uses_mode: ClassVar[bool] = False
    random: ClassVar[bool] = False

    # Forward may overwrite its input and backward may overwrite dy (elementwise layers).
    elementwise: ClassVar[bool] = False
    # Forward returns a view of its input (a reshape) and backward a view of dy: the layer gets no output or dx
    # buffer, and in-place reuse looks through it to the array it aliases.
    view: ClassVar[bool] = False
    # What backward reads from the forward pass: 'input', 'output' or both.
    saves: ClassVar[frozenset[str]] = frozenset({"input"})
    # For the reference docs: the shape rule and the parameter layout, in words.
    shape_rule: ClassVar[str] = ""
    param_layout: ClassVar[str] = ""

    @classmethod
    def bind(cls, args: dict, in_shapes: list[tuple[int, ...]]) -> Bound:
        """Output shape, parameters, buffers, constants and formulas for these arguments and input shapes.

        Raises ShapeError when the inputs do not fit."""
        (in_shape,) = in_shapes
        out_shape = tuple(cls.output_shape(in_shape, args))
        forward, backward = cls.formulas(args)
        return Bound(
            out_shape=out_shape,
            params=tuple(cls.params(in_shape, out_shape, args)),
            buffers=tuple(cls.buffers(in_shape, out_shape, args)),
            stacked=cls.stacked(in_shape, out_shape, args),
            constants=cls.constants(in_shape, out_shape, args),
            saves=cls.saves_for(args),
            forward_formula=forward,
            backward_formulas=backward,
        )

    @classmethod
    def formulas(cls, args: dict) -> tuple[str, tuple[str, ...]]:
        """The forward formula and the backward formulas for these arguments (e.g. without a bias term)."""
        return cls.forward_formula, cls.backward_formulas

    @classmethod
    def arity_text(cls) -> str:
        low, high = cls.arity
        if low == high:
            return f"{low} input" + ("s" if low != 1 else "")
        return f"{low} or more inputs" if high is None else f"{low} to {high} inputs"

    @classmethod
    def saves_for(cls, args: dict) -> frozenset[str]:
        """What backward reads for these arguments; `saves` unless the code differs by argument."""
        return cls.saves

    @classmethod
    def output_shape(cls, in_shape: tuple[int, ...], args: dict) -> tuple[int, ...]:
        raise NotImplementedError

    @classmethod
    def params(cls, in_shape, out_shape, args) -> list[Param]:
        return []

    @classmethod
    def buffers(cls, in_shape, out_shape, args) -> list[Buffer]:
        """Workspace arrays beyond the output `y` and the input gradient `dx`, which every layer gets."""
        return []

    @classmethod
    def stacked(cls, in_shape, out_shape, args) -> dict[tuple[str, ...], tuple[int, ...]]:
        """Adjacent parameters used as one matrix (e.g. [W; b]): parameter names → the matrix shape."""
        return {}

    @classmethod
    def constants(cls, in_shape, out_shape, args) -> dict:
        """Numbers the template writes out (window spans, reshape sizes, scale factors), computed here so the
        template only renders them; the template reads them as `L.const`."""
        return {}


class Loss(Entry):
    """A loss on the last layer's output; `targets` describes the accepted target shapes."""

    targets: ClassVar[str] = ""
    # A metric fit() and evaluate() report beside the loss: None, or "accuracy" when outputs map to classes.
    # Then `predicted_classes` and `true_classes` are code over `z` (the last layer's output, batch first) and
    # `target` (as the loss's check_target returns it); accuracy is the fraction of their elements that are equal.
    metric: ClassVar[str | None] = None
    # What predict_proba() gives for its output: None (it names no classes), "softmax", "sigmoid" or "identity" (the
    # output is already a probability), each a function of the runtime (nncompile/runtime.py's _PROBABILITIES).
    probabilities: ClassVar[str | None] = None
    predicted_classes: ClassVar[str] = ""
    true_classes: ClassVar[str] = ""

    @classmethod
    def check_input(cls, shape: tuple[int, ...]) -> None:
        """Raise ShapeError when the loss cannot follow an output of this per-sample shape."""

    @classmethod
    def buffers(cls, shape, args) -> list[Buffer]:
        return []

    @classmethod
    def constants(cls, shape, args, dtype: str) -> dict:
        """Numbers the template writes out, which may depend on the generated dtype; read as `L.const`."""
        return {}


class Optimizer(Entry):
    """An update rule; `slots` are the per-parameter state arrays it keeps (e.g. a momentum buffer).

    Its float arguments are hyperparameters the generated model keeps as checked attributes (changeable between
    steps), except those left at a default of None (an option not taken, such as clip_norm: its code is not even
    generated); its bool arguments choose code at compile time (nesterov, amsgrad)."""

    # The update formula of each bool option when it is on, for the docs: (argument, formula).
    option_formulas: ClassVar[tuple[tuple[str, str], ...]] = ()

    @classmethod
    def slots(cls, args: dict) -> tuple[str, ...]:
        return ()

    @classmethod
    def work(cls, args: dict) -> tuple[str, ...]:
        """Scratch arrays of the parameters' size the update needs beyond the one every model has (not saved)."""
        return ()

    @classmethod
    def formula(cls, args: dict) -> str:
        """The update formula for these arguments: the forward formula, with that of each option switched on."""
        options = [text for name, text in cls.option_formulas if args.get(name)]
        return "; ".join([cls.forward_formula, *options])


class Schedule(Entry):
    """A learning-rate schedule, stepped once per epoch as torch.optim.lr_scheduler's schedulers are; its template
    renders `_scheduled_lr(self, epoch, lr)`: the lr for the epoch count `epoch` given the lr in force (PyTorch's
    chainable form), called with epoch 0 when the model is made."""


class Init(Entry):
    """A weight initializer; `expression` is the code that makes the array, drawing from `rng`, of dtype DTYPE."""

    formula: ClassVar[str] = ""

    @classmethod
    def expression(cls, shape: tuple[int, ...], fan_in: int, fan_out: int) -> str:
        raise NotImplementedError


LAYERS: dict[str, type[Layer]] = {}
LOSSES: dict[str, type[Loss]] = {}
OPTIMIZERS: dict[str, type[Optimizer]] = {}
SCHEDULES: dict[str, type[Schedule]] = {}
INITS: dict[str, type[Init]] = {}

_TABLES = {Layer: LAYERS, Loss: LOSSES, Optimizer: OPTIMIZERS, Schedule: SCHEDULES, Init: INITS}


def register(entry):
    """Class decorator: add an entry (and its aliases) to the table of its kind."""
    table = next(t for base, t in _TABLES.items() if issubclass(entry, base))
    for key in (entry.name, *entry.aliases):
        if key in table:
            raise ValueError(f"{key!r} is registered twice")
        table[key] = entry
    return entry


def canonical(table: dict) -> list:
    """The entries of a table without their aliases, in registration order."""
    seen = []
    for entry in table.values():
        if entry not in seen:
            seen.append(entry)
    return seen


def load_all() -> None:
    """Import every module that registers entries (the import registers them)."""
    from . import (  # noqa: F401
        inits,
        layers,
        losses,
        optimizers,
        schedules,
    )
