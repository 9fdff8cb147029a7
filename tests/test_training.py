"""Training the example MLP on real data (scikit-learn's bundled digits) makes the loss fall."""

from __future__ import annotations

import numpy as np
from conftest import ROOT
from sklearn.datasets import load_digits

import nncompile


def test_example_mlp_loss_falls_on_digits():
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target
    net = nncompile.load(str(ROOT / "examples" / "digits_mlp.nn")).DigitsMLP(seed=0)
    rng = np.random.default_rng(0)
    first_epoch = last_epoch = None
    for epoch in range(5):
        order = rng.permutation(len(x))
        losses = [net.train_step(x[order[i : i + 64]], y[order[i : i + 64]]) for i in range(0, len(x), 64)]
        if epoch == 0:
            first_epoch = np.mean(losses)
        last_epoch = np.mean(losses)
    assert last_epoch < 0.3 * first_epoch
    accuracy = np.mean(net.forward(x).argmax(axis=1) == y)
    assert accuracy > 0.95
