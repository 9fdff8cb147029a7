"""Steady-state training steps reuse their workspace: a second train_step allocates almost nothing."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import ROOT

import nncompile

MODELS = {
    "mlp": ("examples/digits_mlp.nn", (64,)),
    "cnn1d": ("examples/digits_cnn1d.nn", (64, 1)),
    "residual": ("tests/golden/residual.nn", (64,)),
    "cnn2d": ("tests/golden/conv2d.nn", (12, 12, 1)),
    "cnn1d_padded": ("tests/golden/conv2d.nn", (128, 3), "PaddedSignal"),
}


def _peak_bytes(call) -> int:
    """Peak traced memory above what was allocated before the call."""
    baseline = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    call()
    return tracemalloc.get_traced_memory()[1] - baseline


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("batch", [32, 256])
def test_second_train_step_allocates_under_5_percent_of_the_first(name, batch):
    path, shape, *model = MODELS[name]
    module = nncompile.load(str(ROOT / path))
    net = getattr(module, model[0] if model else module.__all__[0])(seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    if net.get_config()["losses"][0]["type"] == "MSE":
        y = rng.standard_normal((batch, *net.output_shape)).astype(np.float32)
    else:
        y = rng.integers(0, net.output_shape[0], batch)
    tracemalloc.start()
    try:
        first = _peak_bytes(lambda: net.train_step(x, y))
        second = _peak_bytes(lambda: net.train_step(x, y))
    finally:
        tracemalloc.stop()
    assert second < 0.05 * first, (first, second)


@pytest.mark.parametrize("model", ["TwoInputs", "Gated"])
def test_graph_train_steps_allocate_under_5_percent_of_the_first(model):
    """Fan-out, merges, several inputs and a two-term loss keep the steady-state step allocation-free too."""
    module = nncompile.load(str(ROOT / "tests/golden/two_inputs.nn"))
    net = getattr(module, model)(seed=0)
    rng = np.random.default_rng(0)
    batch = 64
    x = {name: rng.standard_normal((batch, *shape)).astype(np.float32) for name, shape in net.input_shapes.items()}
    if model == "TwoInputs":
        y = {"digit": rng.integers(0, 10, batch), "size": rng.standard_normal((batch, 1)).astype(np.float32)}
    else:
        x = x["x"]
        y = rng.standard_normal((batch, 3)).astype(np.float32)
    tracemalloc.start()
    try:
        first = _peak_bytes(lambda: net.train_step(x, y))
        second = _peak_bytes(lambda: net.train_step(x, y))
    finally:
        tracemalloc.stop()
    assert second < 0.05 * first, (first, second)
