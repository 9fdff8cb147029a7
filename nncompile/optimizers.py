"""Optimizer registry entries: update rules applied in place by the generated `step()`.

Each follows the PyTorch rule of the same name exactly, so parameters match torch.optim step for step. Every
optimizer also takes `clip_norm` or `clip_value`: the gradients are clipped, as torch.nn.utils.clip_grad_norm_ or
clip_grad_value_ would, before the update (and before weight decay joins them).
"""

from __future__ import annotations

from .registry import Arg, Optimizer, in_unit_interval, non_negative, positive, register

# Gradient clipping, an option of every optimizer; not given, no clipping code is generated.
CLIP_ARGS = (
    Arg(
        "clip_norm",
        "float",
        None,
        check=positive,
        default_text="<off>",
        doc="scale all gradients down so their global L2 norm is at most this (torch.nn.utils.clip_grad_norm_)",
    ),
    Arg(
        "clip_value",
        "float",
        None,
        check=positive,
        default_text="<off>",
        doc="clip every gradient element into [-clip_value, clip_value] (torch.nn.utils.clip_grad_value_)",
    ),
)
CLIP_FORMULAS = (
    "clip_norm: n = √(Σ grad²) over all parameters;  grad *= clip_norm / (n + 1e-6) when that is below 1",
    "clip_value: grad = clip(grad, -clip_value, clip_value)",
)


class _Clipped(Optimizer):
    """What every optimizer shares: the clipping options and their check."""

    @classmethod
    def check_args(cls, args):
        if args.get("clip_norm") is not None and args.get("clip_value") is not None:
            return [("clip_value", "cannot be given with clip_norm: choose one way to clip")]
        return []


@register
class SGD(_Clipped):
    name = "SGD"
    args = (
        Arg("lr", "float", 0.01, check=positive, doc="learning rate"),
        Arg("momentum", "float", 0.0, check=non_negative, doc="momentum factor (dampening 0)"),
        Arg("weight_decay", "float", 0.0, check=non_negative, doc="L2 penalty added to the gradient"),
        Arg("nesterov", "bool", False, doc="Nesterov momentum (needs momentum > 0)"),
        *CLIP_ARGS,
    )
    template = "optimizers/sgd.py.j2"
    summary = "Stochastic gradient descent with momentum, optionally Nesterov's, as torch.optim.SGD."
    forward_formula = "g = grad + weight_decay · p;  buf = momentum · buf + g;  p = p - lr · buf"
    option_formulas = (("nesterov", "nesterov: p = p - lr · (g + momentum · buf)"),)

    @classmethod
    def check_args(cls, args):
        problems = super().check_args(args)
        if args.get("nesterov") and not args.get("momentum"):
            problems.append(("nesterov", "needs a momentum above 0, e.g. momentum=0.9 (as torch.optim.SGD)"))
        return problems

    @classmethod
    def slots(cls, args):
        # Always kept, so momentum can be switched on between steps.
        return ("momentum_buffer",)


ADAM_ARGS = (
    Arg("beta1", "float", 0.9, check=in_unit_interval, doc="decay of the running mean of gradients"),
    Arg("beta2", "float", 0.999, check=in_unit_interval, doc="decay of the running mean of squared gradients"),
    Arg("eps", "float", 1e-8, check=non_negative, doc="added to the denominator"),
)
ADAM_FORMULA = "m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;  p -= lr/(1-β1ᵗ) · m / (√v/√(1-β2ᵗ) + eps),  t = step count"
AMSGRAD_FORMULA = "amsgrad: v_max = max(v_max, v), used in place of v in the denominator"


@register
class Adam(_Clipped):
    name = "Adam"
    args = (
        Arg("lr", "float", 0.001, check=positive, doc="learning rate"),
        *ADAM_ARGS,
        Arg("weight_decay", "float", 0.0, check=non_negative, doc="L2 penalty added to the gradient (not AdamW)"),
        Arg("amsgrad", "bool", False, doc="divide by the largest v so far (AMSGrad)"),
        *CLIP_ARGS,
    )
    template = "optimizers/adam.py.j2"
    summary = "Adam with bias correction, as torch.optim.Adam; weight decay is L2 added to the gradient."
    forward_formula = "g = grad + weight_decay·p;  " + ADAM_FORMULA
    option_formulas = (("amsgrad", AMSGRAD_FORMULA),)

    @classmethod
    def slots(cls, args):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if args.get("amsgrad") else ())


@register
class AdamW(Adam):
    name = "AdamW"
    args = (
        Arg("lr", "float", 0.001, check=positive, doc="learning rate"),
        *ADAM_ARGS,
        Arg("weight_decay", "float", 0.01, check=non_negative, doc="decoupled decay: p shrinks by lr·weight_decay"),
        Arg("amsgrad", "bool", False, doc="divide by the largest v so far (AMSGrad)"),
        *CLIP_ARGS,
    )
    summary = "Adam with decoupled weight decay, as torch.optim.AdamW: the decay shrinks p, not the gradient."
    forward_formula = "p = p·(1 - lr·weight_decay);  g = grad;  " + ADAM_FORMULA


@register
class RMSprop(_Clipped):
    name = "RMSprop"
    args = (
        Arg("lr", "float", 0.01, check=positive, doc="learning rate"),
        Arg("alpha", "float", 0.99, check=in_unit_interval, doc="decay of the running mean of squared gradients"),
        Arg("eps", "float", 1e-8, check=non_negative, doc="added to the denominator"),
        Arg("weight_decay", "float", 0.0, check=non_negative, doc="L2 penalty added to the gradient"),
        Arg("momentum", "float", 0.0, check=non_negative, doc="momentum factor"),
        Arg("centered", "bool", False, doc="divide by the estimated variance of the gradient, not its mean square"),
        *CLIP_ARGS,
    )
    template = "optimizers/rmsprop.py.j2"
    summary = "RMSprop, as torch.optim.RMSprop: steps scaled by a running root mean square of the gradients."
    forward_formula = (
        "g = grad + weight_decay·p;  v = α·v + (1-α)·g²;  d = √v + eps;  "
        "buf = momentum·buf + g/d,  p -= lr·buf  (momentum 0: p -= lr·g/d)"
    )
    option_formulas = (("centered", "centered: a = α·a + (1-α)·g;  d = √(v - a²) + eps"),)

    @classmethod
    def slots(cls, args):
        return ("square_avg", "momentum_buffer") + (("grad_avg",) if args.get("centered") else ())

    @classmethod
    def work(cls, args):
        return ("denominator",)
