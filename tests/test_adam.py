"""Adam against a hand-written reference of torch.optim.Adam's update (the torch oracle test checks torch itself),
its hyperparameters and state round-trips, and that a step allocates no temporary arrays."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import build

SOURCE = """
model Net {{
    input [6, 2]
    conv = Conv1D(3, 2, bias=true)
    Flatten
    fc = Linear(4)
    loss MSE
    optimizer {optimizer}
}}
"""


def reference_adam(params, grads, state, step, lr, beta1, beta2, eps, weight_decay):
    """The textbook rule with bias correction, written independently of the generated step()."""
    for name, p in params.items():
        g = grads[name] + weight_decay * p
        m, v = state.setdefault(name, (np.zeros_like(p), np.zeros_like(p)))
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        state[name] = (m, v)
        m_hat = m / (1 - beta1**step)
        v_hat = v / (1 - beta2**step)
        params[name] = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return params


def _close(a, b, rtol=1e-10):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-14)


@pytest.mark.parametrize(
    "optimizer",
    ["Adam", "Adam(lr=0.01, beta1=0.5, beta2=0.9, eps=0.001, weight_decay=0.1)", "Adam(beta1=0, weight_decay=0.5)"],
)
def test_adam_matches_the_reference_rule(optimizer, rng):
    net = build(SOURCE.format(optimizer=optimizer), seed=1)
    hyper = {k: getattr(net, k) for k in ("lr", "beta1", "beta2", "eps", "weight_decay")}
    params = {k: v.copy() for k, v in net.params.items()}
    state = {}
    for step in range(1, 6):
        x, t = rng.standard_normal((5, 6, 2)), rng.standard_normal((5, 4))
        net.zero_grad()
        net.loss(x, t)
        net.backward()
        grads = {k: v.copy() for k, v in net.grads.items()}
        net.step()
        params = reference_adam(params, grads, state, step, **hyper)
        for name in params:
            # eps is added to √v̂ in the reference and to √v / √(1 - β2ᵗ) in the generated code: the same number.
            _close(net.params[name], params[name])
            _close(net._slots[name]["exp_avg"], state[name][0])
            _close(net._slots[name]["exp_avg_sq"], state[name][1])
    assert net.step_count == 5


def test_hyperparameters_change_between_steps_including_weight_decay(rng):
    net = build(SOURCE.format(optimizer="Adam"), seed=2)
    params = {k: v.copy() for k, v in net.params.items()}
    state = {}
    for step, (lr, weight_decay) in enumerate([(0.001, 0.0), (0.05, 0.0), (0.05, 0.2)], start=1):
        net.lr, net.weight_decay = lr, weight_decay
        x, t = rng.standard_normal((3, 6, 2)), rng.standard_normal((3, 4))
        net.zero_grad()
        net.loss(x, t)
        net.backward()
        grads = {k: v.copy() for k, v in net.grads.items()}
        net.step()
        params = reference_adam(params, grads, state, step, lr, 0.9, 0.999, 1e-8, weight_decay)
    for name in params:
        _close(net.params[name], params[name])


def test_adam_state_round_trips_and_training_resumes_exactly(rng, tmp_path):
    source = SOURCE.format(optimizer="Adam(lr=0.01, weight_decay=0.01)")
    batches = [(rng.standard_normal((4, 6, 2)), rng.standard_normal((4, 4))) for _ in range(6)]
    straight = build(source, seed=3)
    for x, t in batches:
        straight.train_step(x, t)
    first = build(source, seed=3)
    for x, t in batches[:3]:
        first.train_step(x, t)
    state = first.state_dict()
    assert {"optimizer/conv.weight/exp_avg", "optimizer/conv.weight/exp_avg_sq", "optimizer/beta2"} <= set(state)
    first.save(tmp_path / "adam.npz")
    resumed = build(source, seed=99)
    resumed.load(tmp_path / "adam.npz")
    assert resumed.step_count == 3
    for x, t in batches[3:]:
        resumed.train_step(x, t)
    for name in straight.params:
        np.testing.assert_array_equal(resumed.params[name], straight.params[name])


def test_adam_step_allocates_no_temporary_arrays(rng):
    # Parameters of about 1 MB: a single temporary array would show up as hundreds of kilobytes.
    net = build("model Big { input [400] Linear(300) Linear(10) loss MSE optimizer Adam(weight_decay=0.01) }")
    net.loss(rng.standard_normal((2, 400)), rng.standard_normal((2, 10)))
    net.backward()
    net.step()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        net.step()
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert peak < 16_000, peak
