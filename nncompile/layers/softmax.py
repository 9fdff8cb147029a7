"""Softmax and LogSoftmax over the last axis: each output element depends on its whole row.

Both subtract the row maximum before exponentiating, so no input overflows, and their backward is the full
Jacobian-vector product (not just the diagonal). Backward reads only the output y.
"""

from __future__ import annotations

from ..registry import Buffer, Layer, register


class _OverLastAxis(Layer):
    shape_rule = "any shape → the same shape; normalises over the last axis"
    saves = frozenset({"output"})

    @classmethod
    def output_shape(cls, in_shape, args):
        return in_shape

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        # One number per row: the row maximum, then a row sum.
        return [Buffer("row", (*in_shape[:-1], 1))]


@register
class Softmax(_OverLastAxis):
    name = "Softmax"
    template = "layers/softmax.py.j2"
    summary = "Softmax over the last axis: each row becomes probabilities summing to 1."
    forward_formula = "y = e^(x - max(x)) / Σ_j e^(x_j - max(x))  (per row)"
    backward_formulas = ("dx = y ⊙ (dy - Σ_j dy_j y_j)  (per row)",)


@register
class LogSoftmax(_OverLastAxis):
    name = "LogSoftmax"
    template = "layers/log_softmax.py.j2"
    summary = "Logarithm of the softmax over the last axis, computed without forming the softmax's logarithm."
    forward_formula = "y = x - max(x) - log Σ_j e^(x_j - max(x))  (per row)"
    backward_formulas = ("dx = dy - e^y ⊙ Σ_j dy_j  (per row; e^y is the softmax)",)

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        return [*super().buffers(in_shape, out_shape, args), Buffer("exp", in_shape)]
