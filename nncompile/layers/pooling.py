"""MaxPool1D and AvgPool1D: reduce each window of k positions of a channels-last signal, per channel.

Both loop over the k taps of the windows (strided slices), never over positions or batch.
"""

from __future__ import annotations

from ..registry import Arg, Buffer, Layer, positive, register
from .windows import check_signal, tap_slices, window_count


class _Pool1D(Layer):
    args = (
        Arg("k", "int", check=positive, doc="window length"),
        Arg("stride", "int", None, check=positive, default_text="k", doc="step between windows; k when not given"),
    )
    shape_rule = "[length, chan] → [(length - k) // stride + 1, chan]; needs k ≤ length"

    @classmethod
    def stride(cls, args) -> int:
        return args["k"] if args["stride"] is None else args["stride"]

    @classmethod
    def output_shape(cls, in_shape, args):
        length = check_signal(cls.name, in_shape, args["k"])
        return (window_count(length, args["k"], cls.stride(args)), in_shape[1])

    @classmethod
    def constants(cls, in_shape, out_shape, args):
        return tap_slices(in_shape[0], args["k"], cls.stride(args), out_shape[0])


@register
class MaxPool1D(_Pool1D):
    name = "MaxPool1D"
    template = "layers/maxpool1d.py.j2"
    summary = "Maximum over each window, per channel; the gradient goes to the window's first maximum."
    saves = frozenset({"input", "output"})
    forward_formula = "y[b, t, c] = max_j x[b, t·stride + j, c]"
    backward_formulas = (
        "dx[b, t·stride + j, c] += dy[b, t, c] for the first tap j with x[b, t·stride + j, c] = y[b, t, c]",
    )

    @classmethod
    def pairwise(cls, args) -> bool:
        """Two-tap windows that do not overlap (the common MaxPool1D(2)): forward records which tap won, so
        backward reads neither x nor y and touches each strided tap of dx once."""
        return args["k"] == 2 and cls.stride(args) >= 2

    @classmethod
    def saves_for(cls, args):
        return frozenset() if cls.pairwise(args) else cls.saves

    @classmethod
    def constants(cls, in_shape, out_shape, args):
        constants = super().constants(in_shape, out_shape, args)
        constants["pairwise"] = cls.pairwise(args)
        step = f" : {constants['stride']}" if constants["stride"] > 1 else ""
        constants["second_tap"] = f"1 : 1 + {constants['span']}{step}"
        # Positions after the last window get no gradient; with stride > k neither do the gaps between windows.
        covered = (out_shape[0] - 1) * constants["stride"] + args["k"]
        constants["gaps"] = constants["stride"] > args["k"]
        constants["zero_tail_from"] = covered if covered < in_shape[0] and not constants["gaps"] else None
        return constants

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        if cls.pairwise(args):
            return [Buffer("first_wins", out_shape, "bool"), Buffer("share", out_shape)]
        buffers = [Buffer("pending", out_shape, "bool"), Buffer("hit", out_shape, "bool")]
        if cls.stride(args) < args["k"]:
            # Overlapping windows add into dx, through this buffer.
            buffers.append(Buffer("routed", out_shape))
        return buffers


@register
class AvgPool1D(_Pool1D):
    name = "AvgPool1D"
    template = "layers/avgpool1d.py.j2"
    summary = "Mean over each window, per channel."
    saves = frozenset()
    forward_formula = "y[b, t, c] = (1/k) Σ_j x[b, t·stride + j, c]"
    backward_formulas = ("dx[b, t·stride + j, c] += dy[b, t, c] / k  (for every window t and tap j)",)

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        return [Buffer("share", out_shape)]
