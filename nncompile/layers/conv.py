"""Conv1D: a "valid" 1-D convolution (cross-correlation, as in PyTorch) over a channels-last signal.

Forward is im2col + one GEMM: the windows of x are copied into `cols` (batch, length_out, k·chan_in), and
cols (batch·length_out, k·chan_in) · W (k·chan_in, chan_out) gives y. With a bias, each row of cols ends in a 1 and
the GEMM uses [W; b] (b is stored right after W in the flat parameter array), so the bias costs no extra pass.
Backward is one GEMM for [dW; db] and, per tap j, a GEMM dy · W[j]ᵀ added onto the positions that tap read
(a loop over the k taps, never over positions or batch).
"""

from __future__ import annotations

from ..registry import Arg, Buffer, Layer, Param, positive, register
from .windows import check_signal, tap_slices, window_count


@register
class Conv1D(Layer):
    name = "Conv1D"
    args = (
        Arg("out", "int", check=positive, doc="output channels"),
        Arg("k", "int", check=positive, doc="kernel size: positions per window"),
        Arg("stride", "int", 1, check=positive, doc="step between windows"),
        Arg("bias", "bool", False, doc="add a learned bias per output channel"),
        Arg("init", "name", "xavier_normal", doc="initializer of the weight"),
    )
    positional_forms = ((), ("out",), ("out", "k"), ("out", "k", "stride"))
    template = "layers/conv1d.py.j2"
    # Backward reads the im2col copy of the input kept in the workspace, not the input itself.
    saves = frozenset()
    summary = (
        'One-dimensional "valid" convolution (cross-correlation, as in PyTorch) over a channels-last signal; '
        "positions after the last whole window are not used."
    )
    shape_rule = "[length, chan_in] → [(length - k) // stride + 1, out]; needs k ≤ length"
    param_layout = (
        "`weight` (k, chan_in, out), drawn by `init` with fan_in = k·chan_in and fan_out = k·out; `bias` (out,), zeros"
    )
    forward_formula = "y[b, t, o] = Σ_{j, c} x[b, t·stride + j, c] · W[j, c, o] + bias[o]"
    backward_formulas = (
        "dW[j, c, o] = Σ_{b, t} x[b, t·stride + j, c] · dy[b, t, o]",
        "db[o] = Σ_{b, t} dy[b, t, o]",
        "dx[b, t·stride + j, c] += Σ_o dy[b, t, o] · W[j, c, o]  (for every window t and tap j)",
    )

    @classmethod
    def formulas(cls, args):
        if args["bias"]:
            return cls.forward_formula, cls.backward_formulas
        forward = cls.forward_formula.removesuffix(" + bias[o]")
        return forward, tuple(f for f in cls.backward_formulas if not f.startswith("db"))

    @classmethod
    def output_shape(cls, in_shape, args):
        length = check_signal("Conv1D", in_shape, args["k"])
        return (window_count(length, args["k"], args["stride"]), args["out"])

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
        return [cols, Buffer("tap_grad", (out_shape[0], in_shape[1]))]

    @classmethod
    def stacked(cls, in_shape, out_shape, args):
        rows = args["k"] * in_shape[1] + 1
        return {("weight", "bias"): (rows, out_shape[1])} if args["bias"] else {}

    @classmethod
    def constants(cls, in_shape, out_shape, args):
        return {
            **tap_slices(in_shape[0], args["k"], args["stride"], out_shape[0]),
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
        }
