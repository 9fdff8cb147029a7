"""Learning-rate schedule registry entries: the `schedule` statement, stepped after every epoch of fit().

Each follows torch.optim.lr_scheduler's class of the same name in its chainable form (the new lr computed from the lr
in force, as `scheduler.step()` does), so the lr of every epoch equals PyTorch's to the last bit. epoch counts the
schedule's steps: 0 when the model is made (PyTorch's initial step), then 1 after the first epoch, and so on.
"""

from __future__ import annotations

import itertools

from .registry import (
    Arg,
    Schedule,
    in_closed_unit_interval,
    in_half_open_unit_interval,
    non_negative,
    positive,
    register,
)


@register
class StepLR(Schedule):
    name = "StepLR"
    args = (
        Arg("step_size", "int", check=positive, doc="epochs between decays"),
        Arg("gamma", "float", 0.1, check=positive, doc="factor of each decay"),
    )
    template = "schedules/step_lr.py.j2"
    summary = "Decay the lr by gamma every step_size epochs, as torch.optim.lr_scheduler.StepLR."
    forward_formula = "lr_e = lr_(e-1) · gamma when e is a multiple of step_size, else lr_(e-1)"


@register
class MultiStepLR(Schedule):
    name = "MultiStepLR"
    args = (
        Arg("milestones", "ints", check=positive, doc="the epochs after which the lr decays, increasing"),
        Arg("gamma", "float", 0.1, check=positive, doc="factor of each decay"),
    )
    template = "schedules/multi_step_lr.py.j2"
    summary = "Decay the lr by gamma at each milestone epoch, as torch.optim.lr_scheduler.MultiStepLR."
    forward_formula = "lr_e = lr_(e-1) · gamma when e is a milestone, else lr_(e-1)"

    @classmethod
    def check_args(cls, args):
        milestones = args["milestones"]
        if any(a >= b for a, b in itertools.pairwise(milestones)):
            return [("milestones", "must be in increasing order, each once")]
        return []


@register
class ExponentialLR(Schedule):
    name = "ExponentialLR"
    args = (Arg("gamma", "float", check=positive, doc="factor of every epoch's decay"),)
    template = "schedules/exponential_lr.py.j2"
    summary = "Decay the lr by gamma every epoch, as torch.optim.lr_scheduler.ExponentialLR."
    forward_formula = "lr_e = lr_(e-1) · gamma"


@register
class CosineAnnealingLR(Schedule):
    name = "CosineAnnealingLR"
    args = (
        Arg("T_max", "int", check=positive, doc="epochs from the base lr down to eta_min (half a period)"),
        Arg("eta_min", "float", 0.0, check=non_negative, doc="the lowest lr"),
    )
    template = "schedules/cosine_annealing_lr.py.j2"
    summary = (
        "Anneal the lr from its base value to eta_min along half a cosine over T_max epochs, then back up (the "
        "curve continues, period 2·T_max), as torch.optim.lr_scheduler.CosineAnnealingLR in its chainable form."
    )
    forward_formula = (
        "lr_e = eta_min + (lr_(e-1) - eta_min) · (1 + cos(π·e/T_max)) / (1 + cos(π·(e-1)/T_max)), and where that "
        "divides by 0 (e - 1 - T_max a multiple of 2·T_max) lr_e = lr_(e-1) + (base_lr - eta_min)·(1 - cos(π/T_max))/2; "
        "so lr_e = eta_min + (base_lr - eta_min)·(1 + cos(π·e/T_max))/2"
    )


@register
class LinearLR(Schedule):
    name = "LinearLR"
    args = (
        Arg(
            "start_factor",
            "float",
            1 / 3,
            check=in_half_open_unit_interval,
            default_text="1/3",
            doc="factor of the base lr in epoch 0, in (0, 1]",
        ),
        Arg("end_factor", "float", 1.0, check=in_closed_unit_interval, doc="factor reached at total_iters, in [0, 1]"),
        Arg("total_iters", "int", 5, check=positive, doc="epochs from start_factor to end_factor"),
    )
    template = "schedules/linear_lr.py.j2"
    summary = (
        "Change the lr linearly from start_factor·base_lr to end_factor·base_lr over total_iters epochs, then keep "
        "it (a warm-up with the defaults), as torch.optim.lr_scheduler.LinearLR."
    )
    forward_formula = (
        "lr_0 = base_lr · start_factor;  lr_e = lr_(e-1) · (1 + (end - start) / (total_iters·start + (e-1)·(end - "
        "start))) for e ≤ total_iters, else lr_(e-1);  so lr_e = base_lr·(start + (end - start)·min(e, total_iters)"
        "/total_iters)"
    )
