"""MaxPool2D and AvgPool2D over a channels-last image [height, width, chan], and the global pools over every axis
but the channels.

The 2-D pools loop over the kh·kw taps of the windows in row-major order (tap (i, j) of every window is one
strided slice, `x[:, i : i + span_h : sh, j : j + span_w : sw]`), never over positions or batch. Window (t, u)
covers rows t·sh … t·sh + kh - 1 and columns u·sw … u·sw + kw - 1 of the input padded with `padding` rows and
columns on each side (−∞ for the max, 0 for the mean, as PyTorch pads); with padding, forward copies x into a
workspace array whose border is written once, and backward writes the padded gradient before copying its interior
out. As in PyTorch (ceil_mode=False), windows that would run past the padded input are dropped, so every window
divides by kh·kw (count_include_pad=True).
"""

from __future__ import annotations

import math

from ..registry import Arg, Buffer, Layer, ShapeError, format_value, non_negative, positive, register


def pair(value) -> tuple[int, int]:
    """An int or pair argument as (rows, columns)."""
    return tuple(value) if isinstance(value, tuple) else (value, value)


def _text(values: tuple[int, int]) -> str:
    """A pair as the user would write it: one int when both are equal."""
    return format_value(values[0] if values[0] == values[1] else values)


def _image(layer: str, in_shape) -> tuple[int, int]:
    if len(in_shape) != 3:
        hint = ""
        if len(in_shape) == 2:
            hint = f"; a one-channel {in_shape[0]}×{in_shape[1]} image is [{in_shape[0]}, {in_shape[1]}, 1]"
        elif len(in_shape) == 1:
            hint = "; Reshape turns a vector into an image, e.g. [64] → Reshape([8, 8, 1])"
        raise ShapeError(f"{layer} expects an image [height, width, channels], got {list(in_shape)}{hint}")
    return in_shape[0], in_shape[1]


def _slice(start: int, span: int, stride: int) -> str:
    """`start:start + span:stride` as ruff formats a slice of numbers (no spaces, no empty parts written)."""
    step = f":{stride}" if stride > 1 else ""
    return f"{start or ''}:{start + span}{step}"


def _tap(index: str, span: int, stride: int) -> str:
    """The slice of tap `index` (a loop variable), as ruff formats a slice with expressions."""
    return f"{index} : {index} + {span}" + (f" : {stride}" if stride > 1 else "")


class _Pool2D(Layer):
    args = (
        Arg("k", "pair", check=positive, doc="window size: an int, or [rows, columns]"),
        Arg(
            "stride",
            "pair",
            None,
            check=positive,
            default_text="k",
            doc="step between windows, int or pair; k when not given",
        ),
        Arg("padding", "pair", 0, check=non_negative, doc="rows and columns added on each side, at most k/2"),
    )
    positional_forms = ((), ("k",), ("k", "stride"), ("k", "stride", "padding"))
    shape_rule = (
        "[height, width, chan] → [(height + 2·ph - kh) // sh + 1, (width + 2·pw - kw) // sw + 1, chan]; "
        "needs the window to fit the padded image"
    )
    pad_value = 0

    @classmethod
    def signature(cls) -> str:
        return f"{cls.name}(k, stride=k, padding=0)"

    @classmethod
    def geometry(cls, args):
        """(kh, kw), (sh, sw), (ph, pw)."""
        k = pair(args["k"])
        stride = k if args["stride"] is None else pair(args["stride"])
        return k, stride, pair(args["padding"])

    @classmethod
    def check_args(cls, args):
        k, _, padding = cls.geometry(args)
        if any(2 * p > n for p, n in zip(padding, k)):
            most = tuple(n // 2 for n in k)
            problem = (
                f"must be at most half the window k={_text(k)}, i.e. at most {_text(most)} (PyTorch refuses more), "
                f"got {_text(padding)}"
            )
            return [("padding", problem)]
        return []

    @classmethod
    def output_shape(cls, in_shape, args):
        size = _image(cls.name, in_shape)
        k, stride, padding = cls.geometry(args)
        padded = [n + 2 * p for n, p in zip(size, padding)]
        if any(w > n for w, n in zip(k, padded)):
            if any(padding):
                where = f"the padded image ({size[0]} + 2·{padding[0]}) × ({size[1]} + 2·{padding[1]})"
            else:
                where = f"the image ({size[0]} × {size[1]})"
            raise ShapeError(f"{cls.name} window {k[0]} × {k[1]} is larger than {where}")
        return (*((n - w) // s + 1 for n, w, s in zip(padded, k, stride)), in_shape[2])

    @classmethod
    def constants(cls, in_shape, out_shape, args):
        (kh, kw), (sh, sw), (ph, pw) = cls.geometry(args)
        height, width = in_shape[0] + 2 * ph, in_shape[1] + 2 * pw
        rows, cols = out_shape[0], out_shape[1]
        span_h, span_w = sh * (rows - 1) + 1, sw * (cols - 1) + 1
        disjoint = sh >= kh and sw >= kw
        gaps = sh > kh or sw > kw
        covered_h, covered_w = (rows - 1) * sh + kh, (cols - 1) * sw + kw
        return {
            "kh": kh,
            "kw": kw,
            "sh": sh,
            "sw": sw,
            "taps": kh * kw,
            "padding": ph > 0 or pw > 0,
            # The image's rows and columns inside the padded workspace array.
            "interior": f"{_slice(ph, in_shape[0], 1) if ph else ':'}, {_slice(pw, in_shape[1], 1) if pw else ':'}",
            # Tap (0, 0) written out, and tap (i, j) inside a loop over `i, j = divmod(tap, kw)`.
            "first_tap": f"{_slice(0, span_h, sh)}, {_slice(0, span_w, sw)}",
            "tap": f"{_tap('i', span_h, sh)}, {_tap('j', span_w, sw)}",
            # The 2×2 taps of the pairwise path: rows and columns 0 and 1 of every window.
            "row0": _slice(0, span_h, sh),
            "row1": _slice(1, span_h, sh),
            "col0": _slice(0, span_w, sw),
            "col1": _slice(1, span_w, sw),
            # Windows that do not overlap let each tap write its positions of dx directly; dx then needs zeros
            # only where no window reaches: everywhere at first when there are gaps, else the tails.
            "disjoint": disjoint,
            "zero_dx": not disjoint or gaps,
            "zero_rows_from": covered_h if disjoint and not gaps and covered_h < height else None,
            "zero_cols_from": covered_w if disjoint and not gaps and covered_w < width else None,
        }

    @classmethod
    def padding_buffers(cls, in_shape, args) -> list[Buffer]:
        _, _, (ph, pw) = cls.geometry(args)
        if not (ph or pw):
            return []
        shape = (in_shape[0] + 2 * ph, in_shape[1] + 2 * pw, in_shape[2])
        return [Buffer("padded", shape, fill=cls.pad_value), Buffer("padded_dx", shape)]

    @classmethod
    def formulas(cls, args):
        _, _, padding = cls.geometry(args)
        if not any(padding):
            return cls.forward_formula, cls.backward_formulas
        fill = "−∞" if cls.pad_value else "0"
        forward = cls.forward_formula.replace("x[", "xp[") + f"; xp: x padded with {fill}"
        backward = tuple(f.replace("x[", "xp[") for f in cls.backward_formulas)  # dx[ too
        return forward, (*backward, "dx = dxp without the padding")


@register
class MaxPool2D(_Pool2D):
    name = "MaxPool2D"
    template = "layers/maxpool2d.py.j2"
    summary = (
        "Maximum over each kh×kw window of a channels-last image, per channel; padding holds −∞. The gradient goes "
        "to the window's first maximum in row-major order, as in PyTorch."
    )
    saves = frozenset({"input", "output"})
    pad_value = float("-inf")
    forward_formula = "y[b, t, u, c] = max_{i<kh, j<kw} x[b, t·sh + i, u·sw + j, c]"
    backward_formulas = (
        (
            "dx[b, t·sh + i, u·sw + j, c] += dy[b, t, u, c] for the first tap (i, j) in row-major order with "
            "x[b, t·sh + i, u·sw + j, c] = y[b, t, u, c]"
        ),
    )

    @classmethod
    def pairwise(cls, args) -> bool:
        """2×2 windows that do not overlap (the common MaxPool2D(2)): forward records which tap won, as a pair of
        pairwise comparisons per row and one between the rows, so backward reads neither x nor y and writes each
        tap of dx once."""
        k, stride, _ = cls.geometry(args)
        return k == (2, 2) and min(stride) >= 2

    @classmethod
    def saves_for(cls, args):
        if cls.pairwise(args):
            return frozenset()
        # With padding, backward reads the padded copy in the workspace rather than the input.
        return frozenset({"output"}) if any(cls.geometry(args)[2]) else cls.saves

    @classmethod
    def constants(cls, in_shape, out_shape, args):
        # pool_ordered_input: the input arrives with each tap's positions in one block (lowering decides; see the
        # Conv2D feeding it).
        return {
            **super().constants(in_shape, out_shape, args),
            "pairwise": cls.pairwise(args),
            "pool_ordered_input": False,
        }

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        if cls.pairwise(args):
            buffers = [
                Buffer("top_left_wins", out_shape, "bool"),
                Buffer("bottom_left_wins", out_shape, "bool"),
                Buffer("top_wins", out_shape, "bool"),
                Buffer("top_max", out_shape),
                # Backward's masks of the windows whose tap (p, q) gets dy, p and q major.
                Buffer("routes", (4, *out_shape), "bool"),
            ]
        else:
            buffers = [Buffer("pending", out_shape, "bool"), Buffer("hit", out_shape, "bool")]
            (kh, kw), (sh, sw), _ = cls.geometry(args)
            if sh < kh or sw < kw:
                # Overlapping windows add into dx, through this buffer.
                buffers.append(Buffer("routed", out_shape))
        return buffers + cls.padding_buffers(in_shape, args)


@register
class AvgPool2D(_Pool2D):
    name = "AvgPool2D"
    template = "layers/avgpool2d.py.j2"
    summary = (
        "Mean over each kh×kw window of a channels-last image, per channel; padding counts as zeros in the mean "
        "(PyTorch's count_include_pad=True)."
    )
    saves = frozenset()
    forward_formula = "y[b, t, u, c] = (1/(kh·kw)) Σ_{i<kh, j<kw} x[b, t·sh + i, u·sw + j, c]"
    backward_formulas = ("dx[b, t·sh + i, u·sw + j, c] += dy[b, t, u, c] / (kh·kw)  (for every window and tap)",)

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        return [Buffer("share", out_shape), *cls.padding_buffers(in_shape, args)]


class _GlobalPool(Layer):
    args = ()
    shape_rule = "[d1, …, dn, chan] → [chan]; n ≥ 1 (a signal [length, chan] or an image [height, width, chan])"

    @classmethod
    def output_shape(cls, in_shape, args):
        if len(in_shape) < 2:
            raise ShapeError(
                f"{cls.name} expects a signal [length, channels] or an image [height, width, channels], got "
                f"{list(in_shape)}; a vector has no positions to pool over"
            )
        return (in_shape[-1],)

    @classmethod
    def constants(cls, in_shape, out_shape, args):
        spatial = len(in_shape) - 1
        return {
            "positions": math.prod(in_shape[:-1]),
            "chan": in_shape[-1],
            # The axes pooled over (batch first), and dy with a length-1 axis in their place.
            "axes": "1" if spatial == 1 else "(" + ", ".join(str(a) for a in range(1, spatial + 1)) + ")",
            "spread": ", ".join([":"] + ["None"] * spatial + [":"]),
        }


@register
class GlobalAvgPool(_GlobalPool):
    name = "GlobalAvgPool"
    template = "layers/global_avgpool.py.j2"
    summary = "Mean over every position of a signal or image, per channel (PyTorch's AdaptiveAvgPool to size 1)."
    saves = frozenset()
    forward_formula = "y[b, c] = (1/N) Σ_p x[b, p, c]  (p runs over the N positions: length, or height·width)"
    backward_formulas = ("dx[b, p, c] = dy[b, c] / N",)


@register
class GlobalMaxPool(_GlobalPool):
    name = "GlobalMaxPool"
    template = "layers/global_maxpool.py.j2"
    summary = (
        "Maximum over every position of a signal or image, per channel; the gradient goes to the first maximum "
        "in C order (PyTorch's AdaptiveMaxPool to size 1)."
    )
    saves = frozenset({"input"})
    forward_formula = "y[b, c] = max_p x[b, p, c]  (p runs over the positions: length, or height·width)"
    backward_formulas = ("dx[b, p, c] = dy[b, c] at the first p (in C order) with x[b, p, c] = y[b, c], else 0",)

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        return [Buffer("index", out_shape, "int")]
