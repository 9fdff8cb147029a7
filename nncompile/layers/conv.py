"""Conv1D: a "valid" 1-D convolution (cross-correlation, as in PyTorch) over a channels-last signal.

Forward is im2col + one GEMM: the windows of x are copied into `cols` (batch, length_out, k, chan_in), and
cols (batch·length_out, k·chan_in) · W (k·chan_in, chan_out) gives y. Backward is two GEMMs plus a scatter-add of
the window gradients back onto the positions, one strided slice per tap (a loop over k, never over positions).
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
        windows = (out_shape[0], args["k"], in_shape[1])
        return [Buffer("cols", windows), Buffer("dcols", windows)]

    @classmethod
    def constants(cls, in_shape, out_shape, args):
        return {
            **tap_slices(in_shape[0], args["k"], args["stride"], out_shape[0]),
            "chan_out": out_shape[1],
            # One im2col row: the k·chan_in inputs of a window.
            "row": args["k"] * in_shape[1],
        }
