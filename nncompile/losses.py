"""Loss registry entries: the scalar training objective on the last layer's output, and its fused gradient.

Each loss template renders a `_loss_value` body (forward) and a `_loss_gradient` body (dL/d output).
"""

from __future__ import annotations

from typing import ClassVar

from .registry import Buffer, Loss, ShapeError, register


@register
class MSE(Loss):
    name = "MSE"
    template = "losses/mse.py.j2"
    summary = "Mean squared error over all elements."
    targets = "an array of the output's shape"
    forward_formula = "L = mean((z - t)²) over every element"
    backward_formulas = ("dz = 2 (z - t) / N,  N = number of elements",)

    @classmethod
    def buffers(cls, shape, args):
        return [Buffer("diff", shape)]


@register
class CrossEntropy(Loss):
    name = "CrossEntropy"
    aliases = ("CELogSoftmax",)
    template = "losses/cross_entropy.py.j2"
    summary = "Log-softmax plus negative log-likelihood on logits, mean over the batch."
    targets = "integer class labels (batch,) or one-hot / probabilities (batch, classes)"
    forward_formula = "L = mean_b( logsumexp(z_b) - Σ_c t_bc z_bc ),  t = one-hot of the label"
    backward_formulas = ("dz = (softmax(z) - t) / batch",)
    metric = "accuracy"
    predicted_classes = "z.argmax(axis=1)"
    true_classes = "target if target.ndim == 1 else target.argmax(axis=1)"

    @classmethod
    def check_input(cls, shape):
        if len(shape) != 1:
            raise ShapeError(f"CrossEntropy needs logits of shape [classes], got {list(shape)}")

    @classmethod
    def buffers(cls, shape, args):
        return [
            Buffer("exps", shape),
            Buffer("shifted", shape),
            Buffer("ones", shape, fill=1),
            Buffer("row_max", (1,)),
            Buffer("row_sums", (1,)),
            Buffer("scale", (1,)),
        ]


@register
class BCE(Loss):
    name = "BCE"
    template = "losses/bce.py.j2"
    # The clip keeps log away from 0: 1 - 1e-12 is still distinct from 1 in float64, 1 - 1e-7 in float32.
    EPS: ClassVar[dict[str, float]] = {"float32": 1e-7, "float64": 1e-12}
    summary = (
        "Binary cross-entropy on probabilities (e.g. after Sigmoid), mean over all elements. The output p is "
        "clipped to [eps, 1 - eps], eps = 1e-7 in float32 and 1e-12 in float64, so the logarithms stay finite; "
        "the gradient is the formula at the clipped p, so a saturated output still gets a finite push back."
    )
    targets = "probabilities in [0, 1] of the output's shape"
    forward_formula = "L = -mean( t·log(p) + (1 - t)·log(1 - p) ),  p = clip(z, eps, 1 - eps)"
    backward_formulas = ("dz = (p - t) / (p·(1 - p)) / N,  N = number of elements",)
    metric = "accuracy"
    predicted_classes = "z > 0.5"
    true_classes = "target > 0.5"

    @classmethod
    def buffers(cls, shape, args):
        return [Buffer("p", shape), Buffer("q", shape), Buffer("log_p", shape), Buffer("log_q", shape)]

    @classmethod
    def constants(cls, shape, args, dtype):
        return {"eps": cls.EPS[dtype]}
