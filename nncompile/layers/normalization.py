"""BatchNorm, LayerNorm and Dropout: layers whose statistics or randomness make training differ from inference.

BatchNorm keeps running statistics as non-trainable state (PyTorch's buffers); Dropout draws its masks from the
model's own generator. Both read the model's mode, which forward records for backward.
"""

from __future__ import annotations

import math

from ..registry import Arg, Buffer, Layer, Param, in_unit_interval, positive, register


def _channels(in_shape) -> tuple[int, int]:
    """(positions per sample, channels): a channels-last value is (batch · positions, channels) rows."""
    return math.prod(in_shape[:-1]), in_shape[-1]


class _Normalization(Layer):
    args = (
        Arg("eps", "float", 1e-5, check=positive, doc="added to the variance before the square root"),
        Arg("affine", "bool", True, doc="learn a per-channel scale `weight` and shift `bias`"),
    )
    shape_rule = "any shape → the same shape"

    @classmethod
    def output_shape(cls, in_shape, args):
        return in_shape

    @classmethod
    def params(cls, in_shape, out_shape, args):
        channels = in_shape[-1]
        if not args["affine"]:
            return []
        return [
            Param("weight", (channels,), "ones", channels, channels),
            Param("bias", (channels,), "zeros", channels, channels),
        ]


@register
class BatchNorm(_Normalization):
    name = "BatchNorm"
    args = (
        Arg("momentum", "float", 0.1, check=in_unit_interval, doc="weight of the batch in the running averages"),
        *_Normalization.args,
    )
    template = "layers/batchnorm.py.j2"
    summary = (
        "Normalizes each channel (the last axis) by the mean and variance over the batch and every other axis, "
        "as PyTorch's BatchNorm1d/2d on channels-last data. Training uses the batch's statistics (biased variance) "
        "and updates the running ones (unbiased variance); inference uses the running statistics."
    )
    param_layout = (
        "`weight` (C,), ones, and `bias` (C,), zeros, when affine; non-trainable `running_mean` (C,), zeros, and "
        "`running_var` (C,), ones"
    )
    uses_mode = True
    saves = frozenset()
    forward_formula = (
        "training: x̂ = (x - mean) / √(var + eps) over every axis but the last; running_mean ← (1 - momentum) · "
        "running_mean + momentum · mean, running_var likewise with the unbiased var; inference: x̂ = (x - "
        "running_mean) / √(running_var + eps); y = weight · x̂ + bias"
    )
    backward_formulas = (
        "dweight = Σ dy ⊙ x̂,  dbias = Σ dy  (sums over every axis but the last)",
        "training: dx = (weight / √(var + eps)) · (dy - mean(dy) - x̂ · mean(dy ⊙ x̂))",
        "inference: dx = dy · weight / √(running_var + eps)",
    )

    @classmethod
    def params(cls, in_shape, out_shape, args):
        channels = in_shape[-1]
        state = [
            Param("running_mean", (channels,), "zeros", channels, channels, trainable=False),
            Param("running_var", (channels,), "ones", channels, channels, trainable=False),
        ]
        return [*super().params(in_shape, out_shape, args), *state]

    @classmethod
    def formulas(cls, args):
        if args["affine"]:
            return cls.forward_formula, cls.backward_formulas
        forward = cls.forward_formula.replace("y = weight · x̂ + bias", "y = x̂")
        backward = (
            "training: dx = (1 / √(var + eps)) · (dy - mean(dy) - x̂ · mean(dy ⊙ x̂))",
            "inference: dx = dy / √(running_var + eps)",
        )
        return forward, backward

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        positions, channels = _channels(in_shape)
        # Per-channel vectors live in row 0 of a (batch, channels) buffer: workspaces are per batch size.
        vectors = [Buffer(name, (channels,)) for name in ("mean", "inv_std", "sum_dy", "sum_dy_xhat")]
        return [Buffer("xhat", in_shape), Buffer("ones", (positions,), fill=1), *vectors]

    @classmethod
    def constants(cls, in_shape, out_shape, args):
        positions, channels = _channels(in_shape)
        return {"positions": positions, "channels": channels}


@register
class LayerNorm(_Normalization):
    name = "LayerNorm"
    template = "layers/layernorm.py.j2"
    summary = "Normalizes each sample's last axis by its own mean and (biased) variance, as PyTorch's LayerNorm."
    param_layout = "`weight` (C,), ones, and `bias` (C,), zeros, when affine; C is the size of the last axis"
    saves = frozenset()
    forward_formula = "x̂ = (x - mean) / √(var + eps) over the last axis;  y = weight · x̂ + bias"
    backward_formulas = (
        "dweight = Σ dy ⊙ x̂,  dbias = Σ dy  (sums over every row)",
        "dx = (1 / √(var + eps)) · (g - mean(g) - x̂ · mean(g ⊙ x̂)),  g = dy ⊙ weight, means over the last axis",
    )

    @classmethod
    def formulas(cls, args):
        if args["affine"]:
            return cls.forward_formula, cls.backward_formulas
        return (
            "x̂ = (x - mean) / √(var + eps) over the last axis;  y = x̂",
            ("dx = (1 / √(var + eps)) · (dy - mean(dy) - x̂ · mean(dy ⊙ x̂)), means over the last axis",),
        )

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        positions, channels = _channels(in_shape)
        row_values = [Buffer(name, (positions, 1)) for name in ("mean", "inv_std", "mean_g", "mean_gx")]
        ones = [Buffer("ones", (channels,), fill=1), Buffer("row_ones", (positions,), fill=1)]
        return [Buffer("xhat", in_shape), Buffer("work", in_shape), *ones, *row_values]

    @classmethod
    def constants(cls, in_shape, out_shape, args):
        positions, channels = _channels(in_shape)
        return {"positions": positions, "channels": channels}


@register
class Dropout(Layer):
    name = "Dropout"
    args = (Arg("p", "float", 0.5, check=in_unit_interval, doc="probability of zeroing each element in training"),)
    template = "layers/dropout.py.j2"
    summary = (
        "Inverted dropout: in training each element is zeroed with probability p and the others scaled by "
        "1 / (1 - p), with masks from the model's own seeded generator; in inference the identity."
    )
    shape_rule = "any shape → the same shape"
    elementwise = True
    uses_mode = True
    random = True
    saves = frozenset()
    forward_formula = "training: y = x ⊙ m / (1 - p), m ~ Bernoulli(1 - p) per element; inference: y = x"
    backward_formulas = ("training: dx = dy ⊙ m / (1 - p)  (the same mask); inference: dx = dy",)

    @classmethod
    def output_shape(cls, in_shape, args):
        return in_shape

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        return [Buffer("keep", in_shape, "bool"), Buffer("scale", in_shape)]

    # The masks come from raw 64-bit draws of the generator, each split into two uniform 32-bit integers u, an element
    # kept where u ≥ threshold(p): about 60% of the cost of float32 uniforms. BitGenerator.random_raw returns a new
    # array, so forward draws DRAW_CHUNK integers at a time: a transient of 32 KiB, not one the size of the layer.
    DRAW_CHUNK = 8192

    @staticmethod
    def threshold(p: float) -> int:
        """round(p·2³²), so that P(u ≥ threshold) = 1 - p within 2⁻³³ (capped to fit in 32 bits)."""
        return min(round(p * 2**32), 2**32 - 1)

    @classmethod
    def constants(cls, in_shape, out_shape, args):
        return {"threshold": cls.threshold(args["p"]), "chunk": cls.DRAW_CHUNK}
