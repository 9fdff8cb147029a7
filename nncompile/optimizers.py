"""Optimizer registry entries: update rules applied in place by the generated `step()`.

Each follows the PyTorch rule of the same name exactly, so parameters match torch.optim step for step.
"""

from __future__ import annotations

from .registry import Arg, Optimizer, in_unit_interval, non_negative, positive, register


@register
class SGD(Optimizer):
    name = "SGD"
    args = (
        Arg("lr", "float", 0.01, check=positive, doc="learning rate"),
        Arg("momentum", "float", 0.0, check=non_negative, doc="momentum factor (dampening 0, no Nesterov)"),
        Arg("weight_decay", "float", 0.0, check=non_negative, doc="L2 penalty added to the gradient"),
    )
    template = "optimizers/sgd.py.j2"
    summary = "Stochastic gradient descent with momentum, as torch.optim.SGD."
    forward_formula = "g = grad + weight_decay · p;  buf = momentum · buf + g;  p = p - lr · buf"

    @classmethod
    def slots(cls, args):
        # Always kept, so momentum can be switched on between steps.
        return ("momentum_buffer",)


@register
class Adam(Optimizer):
    name = "Adam"
    args = (
        Arg("lr", "float", 0.001, check=positive, doc="learning rate"),
        Arg("beta1", "float", 0.9, check=in_unit_interval, doc="decay of the running mean of gradients"),
        Arg("beta2", "float", 0.999, check=in_unit_interval, doc="decay of the running mean of squared gradients"),
        Arg("eps", "float", 1e-8, check=non_negative, doc="added to the denominator"),
        Arg("weight_decay", "float", 0.0, check=non_negative, doc="L2 penalty added to the gradient (not AdamW)"),
    )
    template = "optimizers/adam.py.j2"
    summary = "Adam with bias correction, as torch.optim.Adam (amsgrad off); weight decay is L2 added to the gradient."
    forward_formula = (
        "g = grad + weight_decay·p;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;  "
        "p -= lr/(1-β1ᵗ) · m / (√v/√(1-β2ᵗ) + eps),  t = step count"
    )

    @classmethod
    def slots(cls, args):
        return ("exp_avg", "exp_avg_sq")
