"""Conv2D: a 2-D convolution (cross-correlation, as in PyTorch) over a channels-last image [height, width, channels].

Forward is im2col + one GEMM. The windows of the (zero-padded) image are copied into `cols`, whose rows pair the
kh·kw·chan_in inputs of a window with the weight's rows (kh, kw, chan_in); cols · W gives y for the whole batch.
With a bias each im2col row ends in a 1 and the GEMM uses [W; b] (b is stored right after W), so the bias costs no
extra pass. Two layouts of cols, chosen by which copy is faster:
  - window-major (batch·H'·W', width): one strided copy of a 6-D window view; fast when a window row is a long
    contiguous run (kw·chan_in values with dilation 1, else chan_in);
  - tap-major (width, batch·H'·W'): one copy per tap (i, j), each a plain strided image slice; fast for few
    channels (a one-channel first layer), where the window-major copy moves runs of only a few values.
Backward: one GEMM for [dW; db]; for dx, per tap (i, j) a GEMM dy · W[i, j]ᵀ added onto the positions that tap
read (a loop over the kh·kw taps, never over positions or batch). Padding copies x into the middle of a zero
border kept in the workspace (the border is never written); dx is then gathered over the padded image and its
middle copied out.
"""

from __future__ import annotations

import math
from dataclasses import replace

from ..registry import Arg, Buffer, Layer, Param, ShapeError, format_value, non_negative, positive, register
from .conv import PADDING_DOC, Axis, conv_padding, same_needs_stride_1

# A window row of at least this many contiguous values copies faster window-major than tap by tap (measured on
# 3×3 kernels: 0.59 vs 0.51 ns per value at 12 values, 0.36 vs 0.56 at 18).
CONTIGUOUS_RUN = 16


def pair(value) -> tuple[int, int]:
    """A 'pair' argument as a tuple: the default is a plain int that stands for both axes."""
    return value if isinstance(value, tuple) else (value, value)


@register
class Conv2D(Layer):
    name = "Conv2D"
    args = (
        Arg("out", "int", check=positive, doc="output channels"),
        Arg("k", "pair", check=positive, doc="kernel size: an int or [height, width]"),
        Arg("stride", "pair", 1, check=positive, doc="step between windows: an int or [down, across]"),
        Arg(
            "padding",
            "padding",
            0,
            check=non_negative,
            doc=PADDING_DOC + "; or [rows, columns] per side",
            choices=("valid", "same"),
        ),
        Arg("dilation", "pair", 1, check=positive, doc="step between the taps of a window: an int or [down, across]"),
        Arg("bias", "bool", True, doc="add a learned bias per output channel"),
        Arg("init", "name", "he_normal", doc="initializer of the weight"),
    )
    positional_forms = ((), ("out",), ("out", "k"), ("out", "k", "stride"))
    template = "layers/conv2d.py.j2"
    # Backward reads the im2col copy of the input kept in the workspace, not the input itself.
    saves = frozenset()
    summary = (
        "Two-dimensional convolution (cross-correlation, as in PyTorch) over a channels-last image, with zero "
        "padding, stride and dilation per axis; rows and columns after the last whole window are not used."
    )
    shape_rule = (
        "[H, W, chan_in] → [H', W', out] with, per axis, n' = (n + 2·padding - dilation·(k - 1) - 1) // stride + 1 "
        "(same: n' = n); needs dilation·(k - 1) + 1 ≤ n + 2·padding on each axis"
    )
    param_layout = (
        "`weight` (kh, kw, chan_in, out), drawn by `init` with fan_in = kh·kw·chan_in and fan_out = kh·kw·out; "
        "`bias` (out,), zeros"
    )
    forward_formula = (
        "y[b, h, w, o] = Σ_{i, j, c} x[b, h·stride_h + i·dilation_h - pad_top, w·stride_w + j·dilation_w - pad_left, c]"
        " · W[i, j, c, o] + bias[o]  (x is 0 outside the image)"
    )
    backward_formulas = (
        (
            "dW[i, j, c, o] = Σ_{b, h, w} x[b, h·stride_h + i·dilation_h - pad_top, w·stride_w + j·dilation_w - pad_left, "
            "c] · dy[b, h, w, o]"
        ),
        "db[o] = Σ_{b, h, w} dy[b, h, w, o]",
        (
            "dx[b, h·stride_h + i·dilation_h - pad_top, w·stride_w + j·dilation_w - pad_left, c] += "
            "Σ_o dy[b, h, w, o] · W[i, j, c, o]  (for every window (h, w) and tap (i, j) inside the image)"
        ),
    )

    @classmethod
    def check_args(cls, args):
        return same_needs_stride_1({**args, "stride": pair(args["stride"])})

    @classmethod
    def axes(cls, in_shape, args) -> tuple[Axis, Axis]:
        """The rows and columns axes; raise ShapeError unless the input is an image the kernel fits in."""
        if len(in_shape) != 3:
            raise ShapeError(
                f"Conv2D expects an image [height, width, channels], got {list(in_shape)}{_hint(in_shape)}"
            )
        (kh, kw), (sh, sw), (dh, dw) = pair(args["k"]), pair(args["stride"]), pair(args["dilation"])
        rows = Axis.of(in_shape[0], kh, sh, dh, conv_padding(args["padding"], 0))
        columns = Axis.of(in_shape[1], kw, sw, dw, conv_padding(args["padding"], 1))
        if not (rows.fits and columns.fits):
            kernel = f"{kh}×{kw}"
            if (dh, dw) != (1, 1):
                kernel += f" with dilation {format_value((dh, dw))} (extent {rows.extent}×{columns.extent})"
            image = f"{rows.size}×{columns.size}"
            if (rows.padded, columns.padded) != (rows.size, columns.size):
                image += f" padded to {rows.padded}×{columns.padded}"
            raise ShapeError(f"Conv2D kernel {kernel} is larger than the input {image}")
        return rows, columns

    @classmethod
    def formulas(cls, args):
        # Window (h, w), tap (i, j), with this layer's own numbers.
        rows = Axis.of(0, *(pair(args[a])[0] for a in ("k", "stride", "dilation")), conv_padding(args["padding"], 0))
        columns = Axis.of(0, *(pair(args[a])[1] for a in ("k", "stride", "dilation")), conv_padding(args["padding"], 1))
        x = f"x[b, {rows.index('h', 'i')}, {columns.index('w', 'j')}, c]"
        padded = any((rows.before, rows.after, columns.before, columns.after))
        forward = f"y[b, h, w, o] = Σ_{{i, j, c}} {x} · W[i, j, c, o]" + (" + bias[o]" if args["bias"] else "")
        forward += "  (x is 0 outside the image)" if padded else ""
        inside = " inside the image" if padded else ""
        backward = [
            f"dW[i, j, c, o] = Σ_{{b, h, w}} {x} · dy[b, h, w, o]",
            "db[o] = Σ_{b, h, w} dy[b, h, w, o]",
            f"d{x} += Σ_o dy[b, h, w, o] · W[i, j, c, o]  (for every window (h, w) and tap (i, j){inside})",
        ]
        if not args["bias"]:
            del backward[1]
        return forward, tuple(backward)

    @classmethod
    def output_shape(cls, in_shape, args):
        rows, columns = cls.axes(in_shape, args)
        return (rows.out, columns.out, args["out"])

    @classmethod
    def params(cls, in_shape, out_shape, args):
        (kh, kw), chan_in, chan_out = pair(args["k"]), in_shape[2], args["out"]
        fan_in, fan_out = kh * kw * chan_in, kh * kw * chan_out
        params = [Param("weight", (kh, kw, chan_in, chan_out), args["init"], fan_in, fan_out)]
        if args["bias"]:
            params.append(Param("bias", (chan_out,), "zeros", fan_in, fan_out))
        return params

    @classmethod
    def tap_major(cls, in_shape, args) -> bool:
        """Whether cols is stored tap-major: when a window row's contiguous runs are short."""
        (_, kw), (_, dw) = pair(args["k"]), pair(args["dilation"])
        run = kw * in_shape[2] if dw == 1 else in_shape[2]
        return run < CONTIGUOUS_RUN

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        (kh, kw), chan_in = pair(args["k"]), in_shape[2]
        width = kh * kw * chan_in + (1 if args["bias"] else 0)
        # With a bias the buffer starts as ones and forward fills all but the last column (or row, tap-major).
        fill = 1 if args["bias"] else 0
        if cls.tap_major(in_shape, args):
            # Tap-major, the batch's matrix (width, batch·H'·W') is one block: the per-sample shape only sizes it.
            cols = Buffer("cols", (width * out_shape[0] * out_shape[1],), fill=fill)
        else:
            cols = Buffer("cols", (out_shape[0], out_shape[1], width), fill=fill)
        buffers = [cols, Buffer("tap_grad", (out_shape[0], out_shape[1], chan_in))]
        rows, columns = cls.axes(in_shape, args)
        padded_shape = (rows.padded, columns.padded, chan_in)
        if padded_shape != tuple(in_shape):
            # The padded input (its zero border is never written) and the input gradient over the padded image.
            buffers += [Buffer("padded", padded_shape), Buffer("padded_grad", padded_shape)]
        return buffers

    @classmethod
    def stacked(cls, in_shape, out_shape, args):
        rows = math.prod(pair(args["k"])) * in_shape[2] + 1
        return {("weight", "bias"): (rows, args["out"])} if args["bias"] else {}

    @classmethod
    def constants(cls, in_shape, out_shape, args):
        rows, columns = cls.axes(in_shape, args)
        chan_in, chan_out = in_shape[2], args["out"]
        row = rows.k * columns.k * chan_in
        rows_disjoint, rows_covered = rows.covered()
        columns_disjoint, columns_covered = columns.covered()
        disjoint = rows_disjoint and columns_disjoint
        stride_1 = rows.stride == columns.stride == 1
        return {
            "height": rows.out,
            "width": columns.out,
            "chan_in": chan_in,
            "chan_out": chan_out,
            "kh": rows.k,
            "kw": columns.k,
            "taps": rows.k * columns.k,
            # One im2col row: the kh·kw·chan_in inputs of a window (and a 1 for the bias).
            "row": row,
            "cols_width": row + (1 if args["bias"] else 0),
            "tap_major": cls.tap_major(in_shape, args),
            # Memory steps of the window view: window to window, then tap to tap, per axis.
            "window_rows": _steps(rows.stride, "step_row"),
            "window_columns": _steps(columns.stride, "step_column"),
            "tap_rows": _steps(rows.dilation, "step_row"),
            "tap_columns": _steps(columns.dilation, "step_column"),
            # Tap (i, j) of every window, as slices of the (padded) image.
            "rows_tap": rows.tap("i"),
            "columns_tap": columns.tap("j"),
            "dilation": (rows.dilation, columns.dilation),
            "stride": (rows.stride, columns.stride),
            "padded": (rows.padded, columns.padded) != (rows.size, columns.size),
            "pads": (rows.before, rows.after, columns.before, columns.after),
            "inside": f"{rows.inside}, {columns.inside}",
            # The position tap (i, j) of window (h, w) reads in the padded image, for comments.
            "grad_index": f"{replace(rows, before=0).index('h', 'i')}, {replace(columns, before=0).index('w', 'j')}",
            # Backward: taps that never read the same position write dx instead of adding to it; dx needs zeros
            # first where taps add, or where no tap reads.
            "disjoint": disjoint,
            "zero_dx": not (disjoint and rows_covered and columns_covered),
            # With stride 1 and several taps, tap (0, 0) covers [:H', :W'] and writes it; the rest is zeroed.
            "tap0_covers_corner": stride_1 and rows.k * columns.k > 1,
            "rows_below": rows.out < rows.padded,
            "columns_beside": columns.out < columns.padded,
            # The name of the MaxPool2D(2) whose order the output rows come in, when lowering chooses it.
            "pool_order": None,
        }


def _steps(count: int, step: str) -> str:
    return step if count == 1 else f"{count} * {step}"


def _hint(in_shape) -> str:
    if len(in_shape) == 1:
        side = math.isqrt(in_shape[0])
        if side * side == in_shape[0] and side > 1:
            shape = f"[{side}, {side}, 1]"
            return f"; {side}×{side} pixels of one channel are {shape}: declare `input {shape}` or add Reshape({shape})"
        return "; give it as [height, width, channels], e.g. with Reshape"
    if len(in_shape) == 2:
        return f"; a one-channel image of {in_shape[0]}×{in_shape[1]} is [{in_shape[0]}, {in_shape[1]}, 1]"
    return ""
