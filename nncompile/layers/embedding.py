"""Embedding: a lookup table from integer indices to learned vectors."""

from __future__ import annotations

from ..registry import Arg, Layer, Param, positive, register


@register
class Embedding(Layer):
    name = "Embedding"
    args = (
        Arg("num", "int", check=positive, doc="number of indices: each index is in 0 … num - 1"),
        Arg("dim", "int", check=positive, doc="size of each vector"),
        Arg("init", "name", "normal", doc="initializer of the table (PyTorch draws N(0, 1))"),
    )
    template = "layers/embedding.py.j2"
    summary = (
        "Looks up a learned vector per integer index; the input must be declared integer (`input tokens [16] int`). "
        "An index outside 0 … num - 1 is a clear error; repeated indices add their gradients."
    )
    shape_rule = "[T] (integers) → [T, dim]"
    param_layout = "`weight` (num, dim), drawn by `init`"
    input_dtype = "int"
    saves = frozenset({"input"})
    forward_formula = "y[b, t] = W[x[b, t]]"
    backward_formulas = ("dW[i] = Σ over every (b, t) with x[b, t] = i of dy[b, t]  (no gradient for the indices)",)

    @classmethod
    def output_shape(cls, in_shape, args):
        return (*in_shape, args["dim"])

    @classmethod
    def params(cls, in_shape, out_shape, args):
        return [Param("weight", (args["num"], args["dim"]), args["init"], args["num"], args["dim"])]

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        return []
