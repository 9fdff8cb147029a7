"""Property tests: random valid layer stacks and shapes compile, run forward and backward, and their gradients match
finite differences. Derandomized, so CI sees the same examples every run."""

from __future__ import annotations

import numpy as np
from conftest import build, numeric_grad, rel_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TOLERANCE = 1e-6
ACTIVATIONS = ["ReLU", "LeakyReLU(0.1)", "Softplus", "TanH", "Sigmoid", "StableSigmoid", "Softmax", "LogSoftmax"]
ACTIVATIONS += ["GELU", "GELU(tanh)", "SiLU", "ELU", "ELU(alpha=0.5)"]


@st.composite
def layer_stacks(draw):
    """(input shape, layer statements, output shape as we expect it)."""
    if draw(st.booleans()):
        shape = [draw(st.integers(4, 12)), draw(st.integers(1, 3))]
    else:
        shape = [draw(st.integers(1, 6))]
    start = list(shape)
    layers = []
    for _ in range(draw(st.integers(2, 5))):
        if len(shape) == 2:
            length, chans = shape
            kind = draw(st.sampled_from(["Conv1D", "MaxPool1D", "AvgPool1D", "Flatten", "activation"]))
            if kind in ("Conv1D", "MaxPool1D", "AvgPool1D"):
                k = draw(st.integers(1, min(length, 4)))
                stride = draw(st.integers(1, 3))
                windows = (length - k) // stride + 1
                if kind == "Conv1D":
                    out = draw(st.integers(1, 3))
                    bias = draw(st.booleans())
                    layers.append(f"Conv1D({out}, {k}, stride={stride}, bias={'true' if bias else 'false'})")
                    shape = [windows, out]
                else:
                    layers.append(f"{kind}({k}, stride={stride})")
                    shape = [windows, chans]
                continue
            if kind == "Flatten":
                layers.append("Flatten")
                shape = [length * chans]
                continue
        elif draw(st.booleans()):
            out = draw(st.integers(1, 5))
            layers.append(f"Linear({out}, bias={'true' if draw(st.booleans()) else 'false'})")
            shape = [out]
            continue
        layers.append(draw(st.sampled_from(ACTIVATIONS)))
    return start, layers, shape


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(stack=layer_stacks(), batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_random_stacks_compile_run_and_match_finite_differences(stack, batch, seed):
    in_shape, layers, out_shape = stack
    source = f"model Net {{\n input {in_shape}\n " + "\n ".join(layers) + "\n loss MSE\n}\n"
    net = build(source, seed=seed)
    assert net.output_shape == tuple(out_shape), source
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *in_shape))
    t = rng.standard_normal((batch, *out_shape))
    assert net.forward(x).shape == (batch, *out_shape)
    net.loss(x, t)
    net.zero_grad()
    dx = net.backward()
    assert dx.shape == x.shape and np.isfinite(dx).all()
    objective = lambda: net.loss(x, t)
    assert rel_error(dx, numeric_grad(objective, x)) < TOLERANCE, source
    for name, param in net.params.items():
        assert rel_error(net.grads[name], numeric_grad(objective, param)) < TOLERANCE, (source, name)
