"""Elementwise activations: each maps every element on its own, so forward and backward work in place.

Their backward reads only the forward output y, or a slope forward stored in its workspace (GELU, SiLU, ELU),
which lets forward overwrite its input.
"""

from __future__ import annotations

import math

from ..registry import Arg, Buffer, Layer, non_negative, register


class Elementwise(Layer):
    elementwise = True
    shape_rule = "any shape → the same shape"
    saves = frozenset({"output"})

    @classmethod
    def output_shape(cls, in_shape, args):
        return in_shape


@register
class ReLU(Elementwise):
    name = "ReLU"
    template = "layers/relu.py.j2"
    summary = "Rectified linear unit."
    forward_formula = "y = max(x, 0)"
    backward_formulas = ("dx = dy ⊙ [y > 0]  (the gradient at exactly 0 is taken as 0)",)

    # From this many values per sample, backward multiplies dy by the bool mask directly (NumPy casts it in chunks of
    # 8192, a transient of at most 32 KiB): it moves less memory than a float copy of the mask. Whole training steps
    # (A/B): 256-wide layers 0.95–0.98 at batch 128 and 0.96 at batch 32 (residual MLP), 512 and 256 wide 0.96–0.98
    # (MNIST MLP); a third faster alone from about 100,000 values a batch. Narrower layers keep the float slope: the
    # same speed at small batches, where the transient would be a large share of a small model's step memory.
    CHUNKED_CAST_FROM = 256

    @classmethod
    def chunked_cast(cls, in_shape) -> bool:
        return math.prod(in_shape) >= cls.CHUNKED_CAST_FROM

    @classmethod
    def constants(cls, in_shape, out_shape, args):
        return {"chunked_cast": cls.chunked_cast(in_shape)}

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        slope = [] if cls.chunked_cast(in_shape) else [Buffer("slope", in_shape)]
        return [Buffer("mask", in_shape, "bool"), *slope, Buffer("zeros", in_shape)]


@register
class Sigmoid(Elementwise):
    name = "Sigmoid"
    aliases = ("StableSigmoid",)
    template = "layers/sigmoid.py.j2"
    summary = (
        "Logistic function, computed from e = e^(-|x|) on each side, as 1 / (1 + e) or e / (1 + e), so no input "
        "overflows and nothing cancels: a few ulps of relative error at both tails, in float32 as in float64."
    )
    forward_formula = "y = 1 / (1 + e) if x ≥ 0 else e / (1 + e),  e = e^(-|x|)"
    backward_formulas = ("dx = dy ⊙ y ⊙ (1 - y)",)

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        return [Buffer("nonnegative", in_shape, "bool"), Buffer("work", in_shape)]


@register
class TanH(Elementwise):
    name = "TanH"
    aliases = ("Tanh",)
    template = "layers/tanh.py.j2"
    summary = "Hyperbolic tangent."
    forward_formula = "y = tanh(x)"
    backward_formulas = ("dx = dy ⊙ (1 - y²)",)

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        return [Buffer("slope", in_shape)]


@register
class LeakyReLU(Elementwise):
    name = "LeakyReLU"
    args = (
        Arg(
            "alpha",
            "float",
            0.01,
            check=non_negative,
            doc="slope for negative inputs; not negative, so the sign of y tells the sign of x",
        ),
    )
    template = "layers/leaky_relu.py.j2"
    summary = "Rectified linear unit with a small slope `alpha` for negative inputs."
    forward_formula = "y = x if x > 0 else alpha · x"
    backward_formulas = ("dx = dy ⊙ (1 if y > 0 else alpha)  (at exactly 0 the slope is alpha, as in PyTorch)",)

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        return [Buffer("negative", in_shape, "bool")]


@register
class Softplus(Elementwise):
    name = "Softplus"
    template = "layers/softplus.py.j2"
    summary = (
        "Smooth ReLU, log(1 + eˣ), computed as max(x, 0) + log1p(e^(-|x|)) so no input overflows; the slope "
        "sigmoid(x) is recovered from y as -expm1(-y), exact also where y is tiny."
    )
    forward_formula = "y = log(1 + eˣ) = max(x, 0) + log1p(e^(-|x|))"
    backward_formulas = ("dx = dy ⊙ sigmoid(x) = dy ⊙ (1 - e^(-y))",)

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        return [Buffer("work", in_shape)]


# W. J. Cody's rational approximations of erf and erfc ("Rational Chebyshev approximations for the error function",
# Math. Comp. 23 (1969) 631-637), with the coefficients of his Fortran CALERF (netlib specfun), in Horner order:
# erf(v) = v·P(v²)/Q(v²) for v ≤ 0.5; erfc(v) = e^(-v²)·P(v)/Q(v) for 0.5 < v ≤ 4; for v > 4,
# erfc(v) = e^(-v²)/v·(1/√π - z·P(z)/Q(z)), z = 1/v². Each P lists its leading coefficient first; each Q is monic.
CODY_SMALL = (
    (1.85777706184603153e-1, 3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
     3.20937758913846947e03),
    (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03),
)  # fmt: skip
CODY_MIDDLE = (
    (2.15311535474403846e-8, 5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
     2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03, 2.05107837782607147e03,
     1.23033935479799725e03),
    (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02, 1.62138957456669019e03,
     3.29079923573345963e03, 4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03),
)  # fmt: skip
CODY_LARGE = (
    (1.63153871373020978e-2, 3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
     1.60837851487422766e-2, 6.58749161529837803e-4),
    (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1, 6.05183413124413191e-2,
     2.33520497626869185e-3),
)  # fmt: skip


def _substitute(numerator, denominator, scale):
    """P(t)/Q(t) with t = scale·s, rewritten as P'(s)/Q'(s) with Q' monic (both divided by scale^degree)."""
    # P's k-th coefficient multiplies t^(n-k), Q's k-th t^(n-1-k) (after the leading 1 of t^n).
    return (
        tuple(c * scale**-k for k, c in enumerate(numerator)),
        tuple(c * scale ** -(k + 1) for k, c in enumerate(denominator)),
    )


def _horner(numerator, denominator) -> dict:
    """A rational P(t)/Q(t) with Q monic and deg P = deg Q, in the steps the template writes out: P = lead·t, then
    (P + p)·t and (Q + q)·t for each pair in `first` and `steps` (Q starts as t + q), then P + p, Q + q in `last`."""
    return {
        "lead": numerator[0],
        "first": (numerator[1], denominator[0]),
        "steps": tuple(zip(numerator[2:-1], denominator[1:-1], strict=True)),
        "last": (numerator[-1], denominator[-1]),
    }


def gelu_erf_constants() -> dict:
    """Cody's approximations in terms of a = |x| (GELU needs erfc(v) at v = a/√2), so the generated code never forms
    v: the rationals in v become rationals in a, in a² and in 1/a² by substitution (exact for the powers of 2, one
    rounding per coefficient for the powers of √2)."""
    sqrt2 = math.sqrt(2)
    # erfc(v) = 1 - v·P(v²)/Q(v²), v² = a²/2; the factor v = a/√2 goes into P.
    p, q = _substitute(*CODY_SMALL, 0.5)
    small = (tuple(c / sqrt2 for c in p), q)
    middle = _substitute(*CODY_MIDDLE, 1 / sqrt2)
    # z = 1/v² = 2/a²; e^(-v²)/v·(1/√π - z·P(z)/Q(z)) = e^(-a²/2)/a·(√(2/π) - (1/a²)·2√2·P/Q)
    p, q = _substitute(*CODY_LARGE, 2.0)
    large = (tuple(c * 2 * sqrt2 for c in p), q)
    return {
        "small": _horner(*small),
        "middle": _horner(*middle),
        "large": _horner(*large),
        "small_below": 0.5 * sqrt2,
        "large_above": 4 * sqrt2,
        "sqrt_2_over_pi": math.sqrt(2 / math.pi),
        "inv_sqrt_2pi": 1 / math.sqrt(2 * math.pi),
    }


# PyTorch's GELU(approximate="tanh") constants: √(2/π) and the cubic coefficient.
GELU_TANH_BETA = math.sqrt(2 / math.pi)
GELU_TANH_KAPPA = 0.044715


@register
class GELU(Elementwise):
    name = "GELU"
    args = (
        Arg(
            "approximate",
            "name",
            "none",
            choices=("none", "tanh"),
            doc="none: the exact form x·Φ(x) with the erf; tanh: PyTorch's tanh approximation",
        ),
    )
    template = "layers/gelu.py.j2"
    summary = (
        "Gaussian error linear unit, x·Φ(x) with Φ the standard normal CDF, as PyTorch's GELU. The exact form "
        "computes Φ(x) = erfc(-x/√2)/2 from W. J. Cody's rational approximations of erf and erfc (a few float64 "
        "ulps of relative error, also far out on the negative tail where 1 + erf(x/√2) would cancel), with "
        "e^(-x²/2) split so x² is not rounded. `approximate=tanh` is PyTorch's tanh form, computed as "
        "x·sigmoid(2u) (= x·(1 + tanh u)/2), stable at both tails. Forward also stores the slope, so it runs in "
        "place and backward is one multiplication."
    )
    # Backward reads only the slope forward stored.
    saves = frozenset()

    @classmethod
    def formulas(cls, args):
        if args["approximate"] == "tanh":
            return (
                "y = x · (1 + tanh u) / 2 = x · sigmoid(2u),  u = √(2/π) · (x + 0.044715 x³)",
                ("dx = dy ⊙ (s + 2x·s·(1 - s)·√(2/π)·(1 + 3·0.044715 x²)),  s = sigmoid(2u)",),
            )
        return (
            "y = x · Φ(x),  Φ(x) = erfc(-x/√2) / 2",
            ("dx = dy ⊙ (Φ(x) + x · e^(-x²/2) / √(2π))",),
        )

    forward_formula = (
        "y = x · Φ(x),  Φ(x) = erfc(-x/√2) / 2;  approximate=tanh: y = x · (1 + tanh u) / 2,  "
        "u = √(2/π) · (x + 0.044715 x³)"
    )
    backward_formulas = (
        "dx = dy ⊙ (Φ(x) + x · e^(-x²/2) / √(2π))",
        "approximate=tanh: dx = dy ⊙ (s + 2x·s·(1 - s)·√(2/π)·(1 + 3·0.044715 x²)),  s = sigmoid(2u)",
    )

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        if args["approximate"] == "tanh":
            names = ("a", "b", "slope")
        else:
            names = ("a", "r", "b", "c", "d", "slope")
        return [Buffer(name, in_shape) for name in names] + [Buffer("mask", in_shape, "bool")]

    @classmethod
    def constants(cls, in_shape, out_shape, args):
        if args["approximate"] == "tanh":
            return {"beta": GELU_TANH_BETA, "kappa": GELU_TANH_KAPPA}
        return gelu_erf_constants()


@register
class SiLU(Elementwise):
    name = "SiLU"
    template = "layers/silu.py.j2"
    summary = (
        "Sigmoid linear unit (swish), x·sigmoid(x). sigmoid(x) and sigmoid(-x) are both computed from e^(-|x|) "
        "without cancelling, so y and the slope keep their relative precision at both tails; forward stores the "
        "slope, so it runs in place."
    )
    forward_formula = "y = x · s,  s = sigmoid(x)"
    backward_formulas = ("dx = dy ⊙ s · (1 + x · (1 - s))",)
    saves = frozenset()

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        return [Buffer("s", in_shape), Buffer("slope", in_shape), Buffer("mask", in_shape, "bool")]


@register
class ELU(Elementwise):
    name = "ELU"
    args = (Arg("alpha", "float", 1.0, doc="y tends to -alpha as x → -∞ (PyTorch's ELU alpha)"),)
    template = "layers/elu.py.j2"
    summary = (
        "Exponential linear unit: x for x > 0, alpha·(eˣ - 1) otherwise (as expm1, exact near 0). exp and expm1 "
        "only see min(x, 0), so nothing overflows; forward stores the slope alpha·eˣ (computed from x, not from "
        "y + alpha, which would cancel far out), so it runs in place."
    )
    forward_formula = "y = x if x > 0 else alpha · (eˣ - 1)"
    backward_formulas = ("dx = dy ⊙ (1 if x > 0 else alpha · eˣ)  (at exactly 0 the slope is alpha, as in PyTorch)",)
    saves = frozenset()

    @classmethod
    def buffers(cls, in_shape, out_shape, args):
        positive = [Buffer("positive", in_shape, "bool")] if args["alpha"] != 1 else []
        return [Buffer("work", in_shape), Buffer("slope", in_shape), *positive]
