"""Weight initializers: one registry entry each, with its formula and the NumPy expression that draws it.

Expressions draw float64 from the model's generator `rng`, then cast, so the same seed gives the same weights.
"""

from __future__ import annotations

from .registry import Init, register


def _shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


@register
class HeNormal(Init):
    name = "he_normal"
    formula = "N(0, 2 / fan_in)"
    summary = "Gaussian with std √(2/fan_in); suits ReLU layers."

    @classmethod
    def expression(cls, shape, fan_in, fan_out):
        return f"(rng.standard_normal({_shape(shape)}) * np.sqrt(2.0 / {fan_in})).astype(DTYPE)"


@register
class Zeros(Init):
    name = "zeros"
    formula = "0"
    summary = "All zeros (the bias default)."

    @classmethod
    def expression(cls, shape, fan_in, fan_out):
        return f"np.zeros({_shape(shape)}, DTYPE)"
