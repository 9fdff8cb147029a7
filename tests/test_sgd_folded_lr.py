"""Plain SGD folds lr into backward in train_step() and fit(): the update is one subtraction, and model.grads still
holds the gradients (lr divided back out when read), for every way of reading or adding to them."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build, manual_fit

PLAIN = """
model Net {
    input [4]
    fc1 = Linear(16)
    ReLU
    fc2 = Linear(3)
    loss CrossEntropy
    optimizer SGD(lr=0.1)
}
"""

TWO_OUTPUTS = """
model Two {
    input x [4]
    hidden = x -> Linear(8) -> Tanh
    a = hidden -> Linear(3)
    b = hidden -> Linear(2)
    output (a, b)
    loss a -> CrossEntropy
    loss b -> 0.5 * MSE
    optimizer SGD(lr=0.05)
}
"""


@pytest.fixture
def batch():
    rng = np.random.default_rng(3)
    return rng.standard_normal((10, 4)), rng.integers(0, 3, 10)


def by_hand(net, x, y):
    """The documented meaning of train_step(): zero_grad, loss, backward, step, without the fast path."""
    net.zero_grad()
    loss = net.loss(x, y)
    net.backward()
    gradients = {name: g.copy() for name, g in net.grads.items()}
    net.step()
    return loss, gradients


def test_train_step_folds_lr_and_grads_still_holds_the_gradients(batch):
    x, y = batch
    net, reference = build(PLAIN), build(PLAIN)
    assert type(net)._folds_lr
    held = net.grads  # a reference taken before the step sees the settled values too
    for _ in range(3):
        loss = net.train_step(x, y)
        assert net._grads_scale == net.lr  # the gradient arrays hold lr · g until read
        expected_loss, expected = by_hand(reference, x, y)
        assert loss == expected_loss
        for name in expected:
            np.testing.assert_allclose(
                held[name], expected[name], rtol=1e-13, atol=1e-15
            )  # atol: round-off of sums of O(1) terms
        assert net._grads_scale is None
        for name in net.params:
            np.testing.assert_allclose(net.params[name], reference.params[name], rtol=1e-14, atol=1e-15)


def test_backward_after_train_step_adds_to_the_true_gradients(batch):
    x, y = batch
    net, reference = build(PLAIN), build(PLAIN)
    net.train_step(x, y)
    _, first = by_hand(reference, x, y)
    net.loss(x[:5], y[:5])
    net.backward()  # no zero_grad: adds, as in PyTorch
    reference.loss(x[:5], y[:5])
    reference.backward()
    for name in first:
        np.testing.assert_allclose(
            net.grads[name], reference.grads[name], rtol=1e-13, atol=1e-15
        )  # atol: round-off of sums of O(1) terms
    # and step() applies the sum with the lr in force
    net.lr = reference.lr = 0.3
    net.step()
    reference.step()
    for name in net.params:
        np.testing.assert_allclose(net.params[name], reference.params[name], rtol=1e-14, atol=1e-15)


def test_step_after_train_step_applies_the_gradients_again(batch):
    x, y = batch
    net, reference = build(PLAIN), build(PLAIN)
    net.train_step(x, y)
    net.step()
    by_hand(reference, x, y)
    reference.step()
    for name in net.params:
        np.testing.assert_allclose(net.params[name], reference.params[name], rtol=1e-14, atol=1e-15)


def test_zero_grad_after_train_step_leaves_zeros(batch):
    x, y = batch
    net = build(PLAIN)
    net.train_step(x, y)
    net.zero_grad()
    assert all(not g.any() for g in net.grads.values())
    assert net._grads_scale is None


def test_momentum_or_weight_decay_turn_folding_off_at_run_time(batch):
    x, y = batch
    for setting in ("momentum", "weight_decay"):
        net, reference = build(PLAIN), build(PLAIN)
        setattr(net, setting, 0.5)
        setattr(reference, setting, 0.5)
        for _ in range(3):
            assert net.train_step(x, y) == by_hand(reference, x, y)[0]
            assert net._grads_scale is None
        for name in net.params:  # the same operations in the same order: bit for bit
            np.testing.assert_array_equal(net.params[name], reference.params[name])


def test_a_clipped_sgd_never_folds():
    net = build(PLAIN.replace("SGD(lr=0.1)", "SGD(lr=0.1, clip_norm=1.0)"))
    assert not type(net)._folds_lr
    net.train_step(np.ones((2, 4)), np.array([0, 1]))
    assert net._grads_scale is None


def test_fit_with_several_outputs_folds_too_and_matches_the_step_by_hand():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((24, 4))
    y = {"a": rng.integers(0, 3, 24), "b": rng.standard_normal((24, 2))}
    net, reference = build(TWO_OUTPUTS), build(TWO_OUTPUTS)
    net.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=False)
    for _ in range(2):
        for start in range(0, 24, 8):
            rows = slice(start, start + 8)
            by_hand(reference, x[rows], {"a": y["a"][rows], "b": y["b"][rows]})
    assert net.step_count == reference.step_count == 6
    for name in net.params:
        np.testing.assert_allclose(net.params[name], reference.params[name], rtol=1e-12, atol=1e-15)


def test_fit_on_the_fast_path_equals_a_train_step_loop_bit_for_bit():
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((50, 4)), rng.integers(0, 3, 50)
    net, reference = build(PLAIN), build(PLAIN)
    history = net.fit(x, y, epochs=2, batch_size=16, seed=1, verbose=False)
    losses, accuracies = manual_fit(reference, x, y, epochs=2, batch_size=16, seed=1)
    for name in net.params:
        np.testing.assert_array_equal(net.params[name], reference.params[name])
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-12)
    assert history["accuracy"] == accuracies
