"""Loss registry entries: the scalar training objective on the last layer's output, and its fused gradient.

Each loss template renders a `_loss_value` body (forward) and a `_loss_gradient` body (dL/d output).
"""

from __future__ import annotations

from typing import ClassVar

from .registry import Arg, Buffer, Loss, ShapeError, in_closed_unit_interval, positive, register


@register
class MSE(Loss):
    name = "MSE"
    template = "losses/mse.py.j2"
    summary = "Mean squared error over all elements."
    targets = "an array of the output's shape; for an output [1] also (batch,)"
    forward_formula = "L = mean((z - t)²) over every element"
    backward_formulas = ("dz = 2 (z - t) / N,  N = number of elements",)

    @classmethod
    def buffers(cls, shape, args):
        return [Buffer("diff", shape)]


@register
class CrossEntropy(Loss):
    name = "CrossEntropy"
    aliases = ("CELogSoftmax",)
    args = (
        Arg(
            "label_smoothing",
            "float",
            0.0,
            check=in_closed_unit_interval,
            doc="ε in [0, 1]: the target becomes (1 - ε)·t + ε/classes, as in PyTorch",
        ),
    )
    template = "losses/cross_entropy.py.j2"
    summary = "Log-softmax plus negative log-likelihood on logits, mean over the batch, with PyTorch's label smoothing."
    targets = (
        "integer class labels (batch,) or probabilities (batch, classes): rows of non-negative values summing to 1, "
        "e.g. one-hot"
    )
    forward_formula = (
        "L = mean_b( logsumexp(z_b) - Σ_c t'_bc z_bc ),  t' = (1 - ε)·t + ε/classes,  t = one-hot label or given "
        "probabilities"
    )
    backward_formulas = ("dz = (softmax(z) - t') / batch",)
    metric = "accuracy"
    probabilities = "softmax"
    predicted_classes = "z.argmax(axis=1)"
    true_classes = "target if target.ndim == 1 else target.argmax(axis=1)"

    @classmethod
    def check_input(cls, shape):
        if len(shape) != 1:
            raise ShapeError(f"CrossEntropy needs logits of shape [classes], got {list(shape)}")

    @classmethod
    def buffers(cls, shape, args):
        # Class-major (classes × batch): each sample's max and sum run across the whole batch at once.
        return [
            Buffer("logits", shape, batch_last=True),
            Buffer("exps", shape, batch_last=True),
            Buffer("shifted", shape, batch_last=True),
            Buffer("at_max", shape, "bool", batch_last=True),
            Buffer("dz", shape, batch_last=True),
            Buffer("ones", shape, fill=1),
            Buffer("sample_max", ()),
            Buffer("sums", ()),
            Buffer("scale", ()),
        ]


@register
class BCE(Loss):
    name = "BCE"
    template = "losses/bce.py.j2"
    # PyTorch's BCELoss constants: logs are clamped at LOG_FLOOR, the gradient's denominator p·(1 - p) at EPS.
    LOG_FLOOR: ClassVar[float] = -100.0
    EPS: ClassVar[float] = 1e-12
    summary = (
        "Binary cross-entropy on probabilities (e.g. after Sigmoid), mean over all elements, with PyTorch's BCELoss "
        "rules: log p and log(1 - p) (as log1p(-p), exact for tiny p) are clamped at -100, so p = 0 or 1 gives a "
        "finite loss, and the gradient's denominator p·(1 - p) at 1e-12; outputs outside [0, 1] are clipped into it."
    )
    targets = "probabilities in [0, 1] of the output's shape; for an output [1] also (batch,)"
    forward_formula = "L = -mean( t·max(log p, -100) + (1 - t)·max(log(1 - p), -100) ),  p = clip(z, 0, 1)"
    backward_formulas = ("dz = (p - t) / max(p·(1 - p), 1e-12) / N,  N = number of elements",)
    metric = "accuracy"
    probabilities = "identity"
    predicted_classes = "z > 0.5"
    true_classes = "target > 0.5"

    @classmethod
    def buffers(cls, shape, args):
        return [Buffer("p", shape), Buffer("log_p", shape), Buffer("log_q", shape), Buffer("scratch", shape)]

    @classmethod
    def constants(cls, shape, args, dtype):
        return {"log_floor": cls.LOG_FLOOR, "eps": cls.EPS}


# The target forms of the losses on outputs of any shape (an output of shape [1] also takes one value per sample).
SAME_SHAPE = "an array of the output's shape; for an output of shape [1], also one value per sample, (batch,)"


@register
class BCEWithLogits(Loss):
    name = "BCEWithLogits"
    template = "losses/bce_with_logits.py.j2"
    summary = (
        "Binary cross-entropy on logits (sigmoid and BCE in one), mean over all elements, as PyTorch's "
        "BCEWithLogitsLoss: stable for any logit, with no clamping: log(1 + e^(-|z|)) never overflows, and the "
        "gradient sigmoid(z) - t is taken as (1 - t) - sigmoid(-z) for z ≥ 0, so it keeps its precision where "
        "sigmoid(z) rounds to 1."
    )
    targets = "probabilities in [0, 1] of the output's shape; for an output of shape [1], also (batch,)"
    forward_formula = "L = mean( max(z, 0) - z·t + log(1 + e^(-|z|)) )"
    backward_formulas = ("dz = (sigmoid(z) - t) / N,  N = number of elements",)
    metric = "accuracy"
    probabilities = "sigmoid"
    predicted_classes = "z > 0"
    true_classes = "target > 0.5"

    @classmethod
    def buffers(cls, shape, args):
        return [Buffer("d", shape), Buffer("e", shape), Buffer("work", shape), Buffer("positive", shape, "bool")]


@register
class Huber(Loss):
    name = "Huber"
    args = (Arg("delta", "float", 1.0, check=positive, doc="where the loss turns from quadratic to linear"),)
    template = "losses/huber.py.j2"
    summary = (
        "Huber loss, mean over all elements, as PyTorch's HuberLoss: quadratic for errors up to delta, linear "
        "beyond, so outliers pull with a bounded gradient."
    )
    targets = SAME_SHAPE
    forward_formula = "L = mean( 0.5·d² if |d| < delta else delta·(|d| - 0.5·delta) ),  d = z - t"
    backward_formulas = ("dz = clip(d, -delta, delta) / N,  N = number of elements",)

    @classmethod
    def buffers(cls, shape, args):
        return [Buffer("diff", shape), Buffer("work", shape), Buffer("small", shape)]


@register
class L1(Loss):
    name = "L1"
    template = "losses/l1.py.j2"
    summary = "Mean absolute error over all elements, as PyTorch's L1Loss (its gradient is 0 where z = t)."
    targets = SAME_SHAPE
    forward_formula = "L = mean( |z - t| )"
    backward_formulas = ("dz = sign(z - t) / N,  N = number of elements  (0 where z = t)",)

    @classmethod
    def buffers(cls, shape, args):
        return [Buffer("diff", shape), Buffer("work", shape)]
