"""Optimizer registry entries: update rules applied in place by the generated `step()`.

Each follows the PyTorch rule of the same name exactly, so parameters match torch.optim step for step.
"""

from __future__ import annotations

from .registry import Arg, Optimizer, non_negative, positive, register


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
        return ("momentum_buffer",) if args["momentum"] else ()
