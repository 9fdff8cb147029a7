"""Linear: a fully connected layer, y = x · W + b, with W stored as (in, out)."""

from __future__ import annotations

from ..registry import Arg, Buffer, Layer, Param, ShapeError, positive, register


@register
class Linear(Layer):
    name = "Linear"
    args = (
        Arg("out", "int", check=positive, doc="output features"),
        Arg(
            "in",
            "int",
            None,
            check=positive,
            default_text="<inferred>",
            doc="input features; inferred from the input, checked against it when given",
        ),
        Arg("bias", "bool", True, doc="add a learned bias"),
        Arg("init", "name", "he_normal", doc="initializer of the weight"),
    )
    # One positional value is `out`; two are `in, out`, in torch.nn.Linear's order: Linear(64, 10) is 64 → 10.
    positional_forms = ((), ("out",), ("in", "out"))
    template = "layers/linear.py.j2"
    summary = (
        "Fully connected layer over the last axis of a flat per-sample vector. `Linear(10)` gives 10 outputs; "
        "`Linear(64, 10)` names both sizes, (in, out) as in torch.nn.Linear, and checks that the input has 64."
    )
    shape_rule = "[in] → [out]"
    param_layout = "`weight` (in, out), drawn by `init`; `bias` (out,), zeros"
    forward_formula = "y = x · W + b"
    backward_formulas = ("dW = xᵀ · dy", "db = Σ_batch dy", "dx = dy · Wᵀ")

    @classmethod
    def formulas(cls, args):
        if args["bias"]:
            return cls.forward_formula, cls.backward_formulas
        return "y = x · W", ("dW = xᵀ · dy", "dx = dy · Wᵀ")

    @classmethod
    def output_shape(cls, in_shape, args):
        if len(in_shape) != 1:
            raise ShapeError(f"Linear expects a flat vector [features], got {list(in_shape)}; add Flatten before it")
        if args["in"] is not None and args["in"] != in_shape[0]:
            raise ShapeError(f"Linear(in={args['in']}) receives {list(in_shape)}")
        return (args["out"],)

    @classmethod
    def params(cls, in_shape, out_shape, args):
        fan_in, fan_out = in_shape[0], out_shape[0]
        params = [Param("weight", (fan_in, fan_out), args["init"], fan_in, fan_out)]
        if args["bias"]:
            params.append(Param("bias", (fan_out,), "zeros", fan_in, fan_out))
        return params

    @classmethod
    def saves_for(cls, args):
        # With a bias, backward reads the [x, 1] copy in the workspace rather than the input itself.
        return frozenset() if args["bias"] else frozenset({"input"})

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        # [x, 1]: the input with a column of ones (the buffer starts as ones; forward fills the x part).
        return [Buffer("x1", (in_shape[0] + 1,), fill=1)] if args["bias"] else []

    @classmethod
    def stacked(cls, in_shape, out_shape, args):
        return {("weight", "bias"): (in_shape[0] + 1, out_shape[0])} if args["bias"] else {}

    @classmethod
    def constants(cls, in_shape, out_shape, args):
        return {"in": in_shape[0], "out": out_shape[0]}
