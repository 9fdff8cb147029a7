"""Conv1D, and what it shares with Conv2D: the geometry of one convolved axis (kernel, stride, dilation, padding).

Conv1D is a 1-D convolution (cross-correlation, as in PyTorch) over a channels-last signal.
Forward is im2col + one GEMM: the windows of x are copied into `cols` (batch, length_out, k·chan_in), and
cols (batch·length_out, k·chan_in) · W (k·chan_in, chan_out) gives y. With a bias, each row of cols ends in a 1 and
the GEMM uses [W; b] (b is stored right after W in the flat parameter array), so the bias costs no extra pass.
Backward is one GEMM for [dW; db] and, per tap j, a GEMM dy · W[j]ᵀ added onto the positions that tap read
(a loop over the k taps, never over positions or batch). Padding copies x into the middle of a zero-bordered
workspace array first (its border is never written); the input gradient is then gathered in a padded array too,
and its middle is copied out.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Arg, Buffer, Layer, Param, ShapeError, format_value, non_negative, positive, register
from .windows import tap_slices

PADDING_DOC = (
    "zeros added on each side: an int, valid (none) or same (the output keeps the input's size: dilation·(k - 1) "
    "zeros, the odd one after, as PyTorch; stride 1 only)"
)


@dataclass(frozen=True)
class Axis:
    """One convolved axis: input size, kernel size, stride, dilation and the zeros padded before and after.

    Window t starts at t·stride of the padded axis and its tap j reads position t·stride + j·dilation; there are
    (padded - extent) // stride + 1 windows, extent = dilation·(k - 1) + 1. Tap j of every window is the strided
    slice [j·dilation : j·dilation + span : stride] with span = stride·(windows - 1) + 1.
    """

    size: int
    k: int
    stride: int
    dilation: int
    before: int
    after: int

    @classmethod
    def of(cls, size: int, k: int, stride: int, dilation: int, padding) -> Axis:
        """`padding` is an int, 'valid' (no padding) or 'same' (PyTorch's split: the odd zero goes after)."""
        if padding == "valid":
            before = after = 0
        elif padding == "same":
            total = dilation * (k - 1)
            before, after = total // 2, total - total // 2
        else:
            before = after = padding
        return cls(size, k, stride, dilation, before, after)

    @property
    def extent(self) -> int:
        return self.dilation * (self.k - 1) + 1

    @property
    def padded(self) -> int:
        return self.size + self.before + self.after

    @property
    def fits(self) -> bool:
        return self.extent <= self.padded

    @property
    def out(self) -> int:
        return (self.padded - self.extent) // self.stride + 1

    @property
    def span(self) -> int:
        return self.stride * (self.out - 1) + 1

    @property
    def inside(self) -> str:
        """Slice text of the input's own positions in the padded axis."""
        return f"{self.before or ''}:{self.before + self.size}"

    def tap(self, var: str) -> str:
        """Slice text (formatted as ruff formats slices) of tap `var` of every window, in the padded axis."""
        start = var if self.dilation == 1 else f"{var} * {self.dilation}"
        return f"{start} : {start} + {self.span}" + (f" : {self.stride}" if self.stride > 1 else "")

    @property
    def first_tap(self) -> str:
        return f":{self.span}" + (f":{self.stride}" if self.stride > 1 else "")

    def index(self, position: str, tap: str) -> str:
        """Formula text of the input position that window `position` reads at tap `tap`, e.g. 2·t + j - 1."""
        text = (position if self.stride == 1 else f"{self.stride}·{position}") + " + "
        text += tap if self.dilation == 1 else f"{self.dilation}·{tap}"
        return text + (f" - {self.before}" if self.before else "")

    def covered(self) -> tuple[bool, bool]:
        """(whether no two taps of any windows read the same padded position, whether every position is read)."""
        reads = [t * self.stride + j * self.dilation for t in range(self.out) for j in range(self.k)]
        return len(set(reads)) == len(reads), len(set(reads)) == self.padded


def conv_padding(value, axis: int):
    """The padding of one axis from a 'padding' argument: a default int, a tuple (one int per axis) or a name."""
    return value[axis] if isinstance(value, tuple) else value


def same_needs_stride_1(args: dict) -> list[tuple[str, str]]:
    strides = args["stride"] if isinstance(args["stride"], tuple) else (args["stride"],)
    if args["padding"] == "same" and any(s != 1 for s in strides):
        return [
            ("padding", f"can be 'same' only with stride 1, as in PyTorch (stride is {format_value(args['stride'])})")
        ]
    return []


@register
class Conv1D(Layer):
    name = "Conv1D"
    args = (
        Arg("out", "int", check=positive, doc="output channels"),
        Arg("k", "int", check=positive, doc="kernel size: positions per window"),
        Arg("stride", "int", 1, check=positive, doc="step between windows"),
        Arg("padding", "padding", 0, check=non_negative, doc=PADDING_DOC, choices=("valid", "same"), length=1),
        Arg("dilation", "int", 1, check=positive, doc="step between the taps of a window"),
        Arg("bias", "bool", False, doc="add a learned bias per output channel"),
        Arg("init", "name", "xavier_normal", doc="initializer of the weight"),
    )
    positional_forms = ((), ("out",), ("out", "k"), ("out", "k", "stride"))
    template = "layers/conv1d.py.j2"
    # Backward reads the im2col copy of the input kept in the workspace, not the input itself.
    saves = frozenset()
    summary = (
        "One-dimensional convolution (cross-correlation, as in PyTorch) over a channels-last signal, with zero "
        "padding and dilation; positions after the last whole window are not used."
    )
    shape_rule = (
        "[length, chan_in] → [(length + 2·padding - dilation·(k - 1) - 1) // stride + 1, out] (same: [length, out]); "
        "needs dilation·(k - 1) + 1 ≤ length + 2·padding"
    )
    param_layout = (
        "`weight` (k, chan_in, out), drawn by `init` with fan_in = k·chan_in and fan_out = k·out; `bias` (out,), zeros"
    )
    forward_formula = (
        "y[b, t, o] = Σ_{j, c} x[b, t·stride + j·dilation - pad_before, c] · W[j, c, o] + bias[o]  "
        "(x is 0 outside the signal)"
    )
    backward_formulas = (
        "dW[j, c, o] = Σ_{b, t} x[b, t·stride + j·dilation - pad_before, c] · dy[b, t, o]",
        "db[o] = Σ_{b, t} dy[b, t, o]",
        (
            "dx[b, t·stride + j·dilation - pad_before, c] += Σ_o dy[b, t, o] · W[j, c, o]  "
            "(for every window t and tap j inside the signal)"
        ),
    )
    # The formulas of an unpadded, undilated Conv1D, as version 1 wrote them.
    valid_formulas = (
        "y[b, t, o] = Σ_{j, c} x[b, t·stride + j, c] · W[j, c, o] + bias[o]",
        (
            "dW[j, c, o] = Σ_{b, t} x[b, t·stride + j, c] · dy[b, t, o]",
            "db[o] = Σ_{b, t} dy[b, t, o]",
            "dx[b, t·stride + j, c] += Σ_o dy[b, t, o] · W[j, c, o]  (for every window t and tap j)",
        ),
    )

    @classmethod
    def check_args(cls, args):
        return same_needs_stride_1(args)

    @staticmethod
    def plain(args) -> bool:
        """No padding and no dilation: version 1's Conv1D, whose code and formulas stay as they were."""
        return conv_padding(args["padding"], 0) in (0, "valid") and args["dilation"] == 1

    @classmethod
    def formulas(cls, args):
        if cls.plain(args):
            forward, backward = cls.valid_formulas
        else:
            axis = Axis.of(0, args["k"], args["stride"], args["dilation"], conv_padding(args["padding"], 0))
            index = axis.index("t", "j")
            padded = axis.before or axis.after
            forward = f"y[b, t, o] = Σ_{{j, c}} x[b, {index}, c] · W[j, c, o] + bias[o]"
            forward += "  (x is 0 outside the signal)" if padded else ""
            inside = " inside the signal" if padded else ""
            backward = (
                f"dW[j, c, o] = Σ_{{b, t}} x[b, {index}, c] · dy[b, t, o]",
                "db[o] = Σ_{b, t} dy[b, t, o]",
                f"dx[b, {index}, c] += Σ_o dy[b, t, o] · W[j, c, o]  (for every window t and tap j{inside})",
            )
        if args["bias"]:
            return forward, backward
        return forward.replace(" + bias[o]", ""), tuple(f for f in backward if not f.startswith("db"))

    @classmethod
    def axis(cls, in_shape, args) -> Axis:
        """The signal's axis; raise ShapeError unless the input is [length, channels] and the window fits."""
        if len(in_shape) != 2:
            hint = f"; a one-channel signal of length {in_shape[0]} is [{in_shape[0]}, 1]" if len(in_shape) == 1 else ""
            raise ShapeError(f"Conv1D expects a signal [length, channels], got {list(in_shape)}{hint}")
        axis = Axis.of(in_shape[0], args["k"], args["stride"], args["dilation"], conv_padding(args["padding"], 0))
        if not axis.fits:
            window = f"window k={args['k']}"
            if args["dilation"] > 1:
                window += f" with dilation {args['dilation']} (extent {axis.extent})"
            signal = f"length {axis.size}"
            if axis.padded != axis.size:
                signal += f", {axis.padded} with padding"
            raise ShapeError(f"Conv1D {window} is longer than the signal ({signal})")
        return axis

    @classmethod
    def output_shape(cls, in_shape, args):
        return (cls.axis(in_shape, args).out, args["out"])

    @classmethod
    def params(cls, in_shape, out_shape, args):
        k, chan_in, chan_out = args["k"], in_shape[1], args["out"]
        fan_in, fan_out = k * chan_in, k * chan_out
        params = [Param("weight", (k, chan_in, chan_out), args["init"], fan_in, fan_out)]
        if args["bias"]:
            params.append(Param("bias", (chan_out,), "zeros", fan_in, fan_out))
        return params

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        row = args["k"] * in_shape[1]
        if args["bias"]:
            # Each im2col row ends in a 1 (the buffer starts as ones; forward fills only the window part).
            cols = Buffer("cols", (out_shape[0], row + 1), fill=1)
        else:
            cols = Buffer("cols", (out_shape[0], row))
        buffers = [cols, Buffer("tap_grad", (out_shape[0], in_shape[1]))]
        axis = cls.axis(in_shape, args)
        if axis.padded != axis.size:
            # The padded input (its zero border is never written) and the input gradient over the padded signal.
            buffers += [Buffer("padded", (axis.padded, in_shape[1])), Buffer("padded_grad", (axis.padded, in_shape[1]))]
        return buffers

    @classmethod
    def stacked(cls, in_shape, out_shape, args):
        rows = args["k"] * in_shape[1] + 1
        return {("weight", "bias"): (rows, out_shape[1])} if args["bias"] else {}

    @classmethod
    def constants(cls, in_shape, out_shape, args):
        axis = cls.axis(in_shape, args)
        if cls.plain(args):
            taps = tap_slices(in_shape[0], args["k"], args["stride"], out_shape[0])
        else:
            disjoint, covered = axis.covered()
            taps = {
                "k": axis.k,
                "stride": axis.stride,
                "span": axis.span,
                "disjoint": disjoint,
                "zero_dx": not (disjoint and covered),
                "first_tap": axis.first_tap,
                "tap": axis.tap("j"),
            }
        return {
            **taps,
            "chan_out": out_shape[1],
            # One im2col row: the k·chan_in inputs of a window (and a 1 for the bias).
            "row": args["k"] * in_shape[1],
            "cols_width": args["k"] * in_shape[1] + (1 if args["bias"] else 0),
            "windows": out_shape[0],
            "chan_in": in_shape[1],
            # Memory step from one window to the next, in terms of the input's position stride.
            "window_offset": "step_position" if args["stride"] == 1 else f"{args['stride']} * step_position",
            # With stride 1 and overlapping taps, tap 0 covers positions [0, windows) contiguously.
            "tap0_covers_head": args["stride"] == 1 and args["k"] > 1,
            "dilation": axis.dilation,
            "tap_offset": "step_position" if axis.dilation == 1 else f"{axis.dilation} * step_position",
            "padded": axis.padded != axis.size,
            "pad_before": axis.before,
            "pad_after": axis.after,
            "inside": axis.inside,
            # The name of the MaxPool1D(2) whose order the output rows come in, when lowering chooses it.
            "pool_order": None,
        }
