"""Weight initializers: one registry entry each, with its formula and the NumPy expression that draws it.

Expressions draw float64 from the model's generator `rng`, then cast, so the same seed gives the same weights.
Scaled initializers write their scale as a formula (`np.sqrt(6.0 / 64)`) so the generated line shows where it
comes from. fan_in and fan_out are the layer's: Linear (in, out), Conv1D (k · chan_in, k · chan_out).
"""

from __future__ import annotations

from .registry import Init, register


def _shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _normal(shape, scale: str | None = None) -> str:
    draw = f"rng.standard_normal({_shape(shape)})"
    return f"({draw} * {scale}).astype(DTYPE)" if scale else f"{draw}.astype(DTYPE)"


def _uniform(shape, bound: str | None = None) -> str:
    draw = f"rng.uniform(-1.0, 1.0, {_shape(shape)})"
    return f"({draw} * {bound}).astype(DTYPE)" if bound else f"{draw}.astype(DTYPE)"


@register
class Normal(Init):
    name = "normal"
    formula = "N(0, 1)"
    summary = "Standard Gaussian."

    @classmethod
    def expression(cls, shape, fan_in, fan_out):
        return _normal(shape)


@register
class Uniform(Init):
    name = "uniform"
    formula = "U(-1, 1)"
    summary = "Uniform on [-1, 1)."

    @classmethod
    def expression(cls, shape, fan_in, fan_out):
        return _uniform(shape)


@register
class Zeros(Init):
    name = "zeros"
    formula = "0"
    summary = "All zeros (the bias default)."

    @classmethod
    def expression(cls, shape, fan_in, fan_out):
        return f"np.zeros({_shape(shape)}, DTYPE)"


@register
class Ones(Init):
    name = "ones"
    formula = "1"
    summary = "All ones."

    @classmethod
    def expression(cls, shape, fan_in, fan_out):
        return f"np.ones({_shape(shape)}, DTYPE)"


@register
class HeNormal(Init):
    name = "he_normal"
    formula = "N(0, 2 / fan_in)"
    summary = "Gaussian with std √(2/fan_in); suits ReLU layers (Kaiming normal, fan-in mode)."

    @classmethod
    def expression(cls, shape, fan_in, fan_out):
        return _normal(shape, f"np.sqrt(2.0 / {fan_in})")


@register
class HeUniform(Init):
    name = "he_uniform"
    formula = "U(-√(6 / fan_in), √(6 / fan_in))"
    summary = "Uniform with bound √(6/fan_in), the same variance as he_normal (Kaiming uniform, fan-in mode)."

    @classmethod
    def expression(cls, shape, fan_in, fan_out):
        return _uniform(shape, f"np.sqrt(6.0 / {fan_in})")


@register
class XavierNormal(Init):
    name = "xavier_normal"
    formula = "N(0, 2 / (fan_in + fan_out))"
    summary = "Gaussian with std √(2/(fan_in+fan_out)) (Glorot normal); suits tanh and sigmoid layers."

    @classmethod
    def expression(cls, shape, fan_in, fan_out):
        return _normal(shape, f"np.sqrt(2.0 / ({fan_in} + {fan_out}))")


@register
class XavierUniform(Init):
    name = "xavier_uniform"
    formula = "U(-√(6 / (fan_in + fan_out)), √(6 / (fan_in + fan_out)))"
    summary = "Uniform with bound √(6/(fan_in+fan_out)) (Glorot uniform)."

    @classmethod
    def expression(cls, shape, fan_in, fan_out):
        return _uniform(shape, f"np.sqrt(6.0 / ({fan_in} + {fan_out}))")
