"""Reshape and Permute: per-sample rearrangements of the values, with no arithmetic.

Reshape is a view in both directions, like Flatten. Permute copies into its own buffer (and back in backward), so
that every array the next layers read is contiguous, as the generated code assumes.
"""

from __future__ import annotations

import math

from ..registry import Arg, Layer, ShapeError, format_value, non_negative, register


def _dimension(value) -> str | None:
    return None if value > 0 or value == -1 else "must hold positive sizes or one -1"


@register
class Reshape(Layer):
    name = "Reshape"
    template = "layers/reshape.py.j2"
    summary = (
        "Give each sample a new shape with the same number of values, in C order, e.g. 8×8 digits [64] → "
        "[8, 8, 1]; one entry may be -1, inferred from the others (as in PyTorch). A view of its input, so it "
        "costs no copy."
    )
    args = (
        Arg("shape", "ints", check=_dimension, doc="the new per-sample shape, e.g. [8, 8, 1]; one entry may be -1"),
    )
    shape_rule = "[d1, …, dn] → shape, with d1·…·dn values either way; needs the sizes to match"
    view = True
    saves = frozenset()
    forward_formula = "y = x.reshape(batch, *shape)"
    backward_formulas = ("dx = dy.reshape(batch, *input shape)",)

    @classmethod
    def check_args(cls, args):
        if args["shape"].count(-1) > 1:
            return [("shape", f"may contain -1 only once, got {format_value(args['shape'])}")]
        return []

    @classmethod
    def output_shape(cls, in_shape, args):
        shape, size = args["shape"], math.prod(in_shape)
        known = math.prod(d for d in shape if d != -1)
        if -1 in shape:
            if size % known:
                raise ShapeError(
                    f"Reshape cannot fit {size} values per sample (input {list(in_shape)}) into "
                    f"{format_value(shape)}: {size} is not a multiple of {known}"
                )
            return tuple(size // known if d == -1 else d for d in shape)
        if known != size:
            raise ShapeError(
                f"Reshape to {format_value(shape)} needs {known} values per sample, but its input "
                f"{list(in_shape)} has {size}"
            )
        return tuple(shape)

    @classmethod
    def formulas(cls, args):
        return f"y = x.reshape(batch, {', '.join(map(str, args['shape']))})", cls.backward_formulas


def _indices(axes) -> str:
    return ", ".join(f"i{a}" for a in axes)


@register
class Permute(Layer):
    name = "Permute"
    template = "layers/permute.py.j2"
    summary = (
        "Reorder the axes of each sample (the batch axis stays first): `Permute([1, 2, 0])` turns [C, H, W] "
        "into [H, W, C]. Copies into its own array, so the layers after it read contiguous memory."
    )
    args = (Arg("axes", "ints", check=non_negative, doc="the per-sample axes in their new order, from 0"),)
    shape_rule = "[d0, …, dn-1] → [d_axes[0], …, d_axes[n-1]]; needs a permutation of 0 … n-1"
    saves = frozenset()
    forward_formula = "y[b, i_axes[0], …, i_axes[n-1]] = x[b, i0, …, in-1]"
    backward_formulas = ("dx[b, i0, …, in-1] = dy[b, i_axes[0], …, i_axes[n-1]]",)

    @classmethod
    def check_args(cls, args):
        axes = args["axes"]
        if sorted(axes) != list(range(len(axes))):
            return [
                (
                    "axes",
                    f"must be a permutation of 0 … {len(axes) - 1} (each axis once), got {format_value(axes)}",
                )
            ]
        return []

    @classmethod
    def output_shape(cls, in_shape, args):
        axes = args["axes"]
        if len(axes) != len(in_shape):
            raise ShapeError(
                f"Permute({format_value(axes)}) orders {len(axes)} axes, but its input {list(in_shape)} has "
                f"{len(in_shape)}"
            )
        return tuple(in_shape[a] for a in axes)

    @classmethod
    def constants(cls, in_shape, out_shape, args):
        axes = args["axes"]
        inverse = sorted(range(len(axes)), key=lambda i: axes[i])
        return {
            # numpy axes, batch first
            "forward": ", ".join(str(a) for a in (0, *(a + 1 for a in axes))),
            "backward": ", ".join(str(a) for a in (0, *(a + 1 for a in inverse))),
        }

    @classmethod
    def formulas(cls, args):
        axes = args["axes"]
        order = range(len(axes))
        forward = f"y[b, {_indices(axes)}] = x[b, {_indices(order)}]"
        return forward, (f"dx[b, {_indices(order)}] = dy[b, {_indices(axes)}]",)
