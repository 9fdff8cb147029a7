"""Elementwise activations: each maps every element on its own, so forward and backward work in place.

Their backward reads only the forward output y, which lets forward overwrite its input.
"""

from __future__ import annotations

from ..registry import Arg, Buffer, Layer, non_negative, register


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
        return [Buffer("mask", in_shape, "bool"), Buffer("slope", in_shape), Buffer("zeros", in_shape)]


@register
class Sigmoid(Elementwise):
    name = "Sigmoid"
    aliases = ("StableSigmoid",)
    template = "layers/sigmoid.py.j2"
    summary = (
        "Logistic function, computed from e = e^(-|x|) on each side, as 1 / (1 + e) or e / (1 + e), so no input "
        "overflows and nothing cancels: a few ulps of relative error at both tails, in float32 as in float64."
    )
    forward_formula = "y = 1 / (1 + e) if x ≥ 0 else e / (1 + e),  e = e^(-|x|)"
    backward_formulas = ("dx = dy ⊙ y ⊙ (1 - y)",)

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        return [Buffer("nonnegative", in_shape, "bool"), Buffer("work", in_shape)]


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


@register
class LeakyReLU(Elementwise):
    name = "LeakyReLU"
    args = (
        Arg(
            "alpha",
            "float",
            0.01,
            check=non_negative,
            doc="slope for negative inputs; not negative, so the sign of y tells the sign of x",
        ),
    )
    template = "layers/leaky_relu.py.j2"
    summary = "Rectified linear unit with a small slope `alpha` for negative inputs."
    forward_formula = "y = x if x > 0 else alpha · x"
    backward_formulas = ("dx = dy ⊙ (1 if y > 0 else alpha)  (at exactly 0 the slope is alpha, as in PyTorch)",)

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        return [Buffer("negative", in_shape, "bool")]


@register
class Softplus(Elementwise):
    name = "Softplus"
    template = "layers/softplus.py.j2"
    summary = (
        "Smooth ReLU, log(1 + eˣ), computed as max(x, 0) + log1p(e^(-|x|)) so no input overflows; the slope "
        "sigmoid(x) is recovered from y as -expm1(-y), exact also where y is tiny."
    )
    forward_formula = "y = log(1 + eˣ) = max(x, 0) + log1p(e^(-|x|))"
    backward_formulas = ("dx = dy ⊙ sigmoid(x) = dy ⊙ (1 - e^(-y))",)

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        return [Buffer("work", in_shape)]
