"""Flatten: a per-sample reshape to a vector, as a view (no copy) in both directions."""

from __future__ import annotations

import math

from ..registry import Layer, register


@register
class Flatten(Layer):
    name = "Flatten"
    template = "layers/flatten.py.j2"
    summary = (
        "Reshape each sample to a vector, in C order: a channels-last signal [length, chan] becomes "
        "[x[0, 0], …, x[0, chan-1], x[1, 0], …]. A view of its input, so it costs no copy."
    )
    shape_rule = "[d1, …, dn] → [d1·…·dn]"
    view = True
    saves = frozenset()
    forward_formula = "y = x.reshape(batch, d1·…·dn)"
    backward_formulas = ("dx = dy.reshape(batch, d1, …, dn)",)

    @classmethod
    def output_shape(cls, in_shape, args):
        return (math.prod(in_shape),)
