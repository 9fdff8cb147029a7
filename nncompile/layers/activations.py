"""Elementwise activations: each maps every element on its own, so forward and backward work in place.

Their backward reads only the forward output y, which lets forward overwrite its input.
"""

from __future__ import annotations

from ..registry import Buffer, Layer, register


class Elementwise(Layer):
    elementwise = True
    shape_rule = "any shape → the same shape"
    saves = frozenset({"output"})

    @classmethod
    def output_shape(cls, in_shape, args):
        return in_shape


@register
class ReLU(Elementwise):
    name = "ReLU"
    template = "layers/relu.py.j2"
    summary = "Rectified linear unit."
    forward_formula = "y = max(x, 0)"
    backward_formulas = ("dx = dy ⊙ [y > 0]  (the gradient at exactly 0 is taken as 0)",)

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        return [Buffer("mask", in_shape, "bool")]


@register
class Sigmoid(Elementwise):
    name = "Sigmoid"
    template = "layers/sigmoid.py.j2"
    summary = "Logistic function, computed as (1 + tanh(x/2)) / 2 so no input overflows."
    forward_formula = "y = 1 / (1 + e^(-x)) = (1 + tanh(x / 2)) / 2"
    backward_formulas = ("dx = dy ⊙ y ⊙ (1 - y)",)

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        return [Buffer("slope", in_shape)]


@register
class TanH(Elementwise):
    name = "TanH"
    aliases = ("Tanh",)
    template = "layers/tanh.py.j2"
    summary = "Hyperbolic tangent."
    forward_formula = "y = tanh(x)"
    backward_formulas = ("dx = dy ⊙ (1 - y²)",)

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        return [Buffer("slope", in_shape)]
