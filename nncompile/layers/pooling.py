"""MaxPool1D and AvgPool1D: reduce each window of k positions of a channels-last signal, per channel.

Both loop over the k taps of the windows (strided slices), never over positions or batch. With `padding` the
signal is first copied into a workspace array with `padding` positions on each side (−∞ for the max, 0 for the
mean, as PyTorch pads; the border is written once, when the workspace is made), and backward writes the gradient
of that padded signal before copying its interior out.
"""

from __future__ import annotations

from ..registry import Arg, Buffer, Layer, ShapeError, non_negative, positive, register
from .windows import check_signal, tap_slices, window_count


def check_padding(k: int, padding: int) -> str | None:
    """PyTorch's rule: padding may be at most half the window, so every window holds at least one real value."""
    if 2 * padding > k:
        return f"must be at most half the window k={k} (PyTorch refuses more), got {padding}"
    return None


class _Pool1D(Layer):
    args = (
        Arg("k", "int", check=positive, doc="window length"),
        Arg("stride", "int", None, check=positive, default_text="k", doc="step between windows; k when not given"),
        Arg("padding", "int", 0, check=non_negative, doc="positions added on each side of the signal; at most k/2"),
    )
    shape_rule = "[length, chan] → [(length + 2·padding - k) // stride + 1, chan]; needs k ≤ length + 2·padding"
    # What the padding holds (MaxPool1D: −∞, AvgPool1D: 0).
    pad_value = 0

    @classmethod
    def stride(cls, args) -> int:
        return args["k"] if args["stride"] is None else args["stride"]

    @classmethod
    def check_args(cls, args):
        problem = check_padding(args["k"], args["padding"])
        return [("padding", problem)] if problem else []

    @classmethod
    def output_shape(cls, in_shape, args):
        k, padding = args["k"], args["padding"]
        if not padding:
            length = check_signal(cls.name, in_shape, k)
        else:
            length = check_signal(cls.name, in_shape, 1)
            if k > length + 2 * padding:
                raise ShapeError(
                    f"{cls.name} window k={k} is longer than the padded signal (length {length} + 2·{padding})"
                )
        return (window_count(length + 2 * padding, k, cls.stride(args)), in_shape[1])

    @classmethod
    def constants(cls, in_shape, out_shape, args):
        padding = args["padding"]
        constants = tap_slices(in_shape[0] + 2 * padding, args["k"], cls.stride(args), out_shape[0])
        constants["padding"] = padding
        # The signal's positions inside the padded workspace array.
        constants["interior"] = f"{padding}:{padding + in_shape[0]}"
        return constants

    @classmethod
    def padding_buffers(cls, in_shape, args) -> list[Buffer]:
        if not args["padding"]:
            return []
        shape = (in_shape[0] + 2 * args["padding"], in_shape[1])
        return [Buffer("padded", shape, fill=cls.pad_value), Buffer("padded_dx", shape)]

    @classmethod
    def formulas(cls, args):
        if not args["padding"]:
            return cls.forward_formula, cls.backward_formulas
        note = "; xp: x padded with " + ("−∞" if cls.pad_value else "0")
        forward = cls.forward_formula.replace("x[", "xp[") + note
        backward = tuple(f.replace("x[", "xp[") for f in cls.backward_formulas)  # dx[ too
        return forward, (*backward, "dx = dxp without the padding")


@register
class MaxPool1D(_Pool1D):
    name = "MaxPool1D"
    template = "layers/maxpool1d.py.j2"
    summary = (
        "Maximum over each window, per channel; padding holds −∞. The gradient goes to the window's first maximum."
    )
    saves = frozenset({"input", "output"})
    pad_value = float("-inf")
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
        if cls.pairwise(args):
            return frozenset()
        # With padding, backward reads the padded copy in the workspace rather than the input.
        return frozenset({"output"}) if args["padding"] else cls.saves

    @classmethod
    def constants(cls, in_shape, out_shape, args):
        constants = super().constants(in_shape, out_shape, args)
        constants["pairwise"] = cls.pairwise(args)
        step = f" : {constants['stride']}" if constants["stride"] > 1 else ""
        constants["second_tap"] = f"1 : 1 + {constants['span']}{step}"
        # Positions after the last window get no gradient; with stride > k neither do the gaps between windows.
        covered = (out_shape[0] - 1) * constants["stride"] + args["k"]
        constants["gaps"] = constants["stride"] > args["k"]
        length = in_shape[0] + 2 * args["padding"]
        constants["zero_tail_from"] = covered if covered < length and not constants["gaps"] else None
        # The input arrives with each tap's positions in one block (lowering decides; see the Conv1D feeding it).
        constants["pool_ordered_input"] = False
        return constants

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        padding = cls.padding_buffers(in_shape, args)
        if cls.pairwise(args):
            return [Buffer("first_wins", out_shape, "bool"), Buffer("share", out_shape), *padding]
        buffers = [Buffer("pending", out_shape, "bool"), Buffer("hit", out_shape, "bool")]
        if cls.stride(args) < args["k"]:
            # Overlapping windows add into dx, through this buffer.
            buffers.append(Buffer("routed", out_shape))
        return buffers + padding


@register
class AvgPool1D(_Pool1D):
    name = "AvgPool1D"
    template = "layers/avgpool1d.py.j2"
    summary = "Mean over each window, per channel; padding counts as zeros in the mean (count_include_pad=True)."
    saves = frozenset()
    forward_formula = "y[b, t, c] = (1/k) Σ_j x[b, t·stride + j, c]"
    backward_formulas = ("dx[b, t·stride + j, c] += dy[b, t, c] / k  (for every window t and tap j)",)

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        return [Buffer("share", out_shape), *cls.padding_buffers(in_shape, args)]
