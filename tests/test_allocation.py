"""Steady-state training steps reuse their workspace: a second train_step allocates almost nothing."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import ROOT

import nncompile

# Pooled models at the size of a small CNN (NumPy's ufuncs on strided 3-D and 4-D operands allocate iterator
# buffers of up to 8192 elements per operand, a fixed cost every window layer shares, whatever the batch size).
POOLED = """
model Pooled2D {
    input [64]
    Linear(2304)
    ReLU
    Reshape([12, 12, 16])
    MaxPool2D(2)
    AvgPool2D(3, stride=1, padding=1)
    MaxPool2D([2, 3], stride=[1, 2], padding=1)
    Flatten
    Linear(10)
    loss CrossEntropy
}

model PooledGlobal {
    input [16, 16, 16]
    Permute([1, 2, 0])
    MaxPool2D(3, stride=2, padding=1)
    AvgPool2D(2)
    GlobalMaxPool
    Linear(10)
    loss CrossEntropy
}

model Pooled1D {
    input [64, 16]
    MaxPool1D(3, stride=1, padding=1)
    AvgPool1D(2, padding=1)
    MaxPool1D(2, padding=1)
    Reshape([-1, 1, 16])
    GlobalAvgPool
    Linear(10)
    loss CrossEntropy
}
"""

# name: (.nn file or source, input shape, model class: None for the first)
MODELS = {
    "mlp": ("examples/digits_mlp.nn", (64,), None),
    "cnn1d": ("examples/digits_cnn1d.nn", (64, 1), None),
    "residual": ("tests/golden/residual.nn", (64,), None),
    "pool2d": (POOLED, (64,), "Pooled2D"),
    "pool2d_global": (POOLED, (16, 16, 16), "PooledGlobal"),
    "pool1d_padded": (POOLED, (64, 16), "Pooled1D"),
    "cnn2d": ("tests/golden/conv2d.nn", (12, 12, 1), None),
    "cnn1d_padded": ("tests/golden/conv2d.nn", (128, 3), "PaddedSignal"),
}


def _peak_bytes(call) -> int:
    """Peak traced memory above what was allocated before the call."""
    baseline = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    call()
    return tracemalloc.get_traced_memory()[1] - baseline


def _assert_steady_state_allocates_little(net, x, y) -> None:
    """The second train_step's peak allocation is under 5% of the first's (which makes the workspace)."""
    tracemalloc.start()
    try:
        first = _peak_bytes(lambda: net.train_step(x, y))
        second = _peak_bytes(lambda: net.train_step(x, y))
    finally:
        tracemalloc.stop()
    assert second < 0.05 * first, (first, second)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("batch", [32, 256])
def test_second_train_step_allocates_under_5_percent_of_the_first(name, batch):
    path, shape, model = MODELS[name]
    module = nncompile.load(path if "{" in path else str(ROOT / path))
    net = getattr(module, model or module.__all__[0])(seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    if net.get_config()["losses"][0]["type"] == "MSE":
        y = rng.standard_normal((batch, *net.output_shape)).astype(np.float32)
    else:
        y = rng.integers(0, net.output_shape[0], batch)
    _assert_steady_state_allocates_little(net, x, y)


def test_normalization_and_dropout_train_steps_allocate_under_5_percent_of_the_first():
    """NumPy buffers broadcasting ufuncs (about 32 KiB, freed at once): per-channel scaling costs that much at its
    peak, a small share of any realistic workspace."""
    source = (
        "model Net {\n input [16, 32]\n BatchNorm\n ReLU\n Dropout(0.2)\n LayerNorm\n Flatten\n Linear(10)\n"
        " loss CrossEntropy\n}"
    )
    net = nncompile.load(source).Net(seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 16, 32)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    _assert_steady_state_allocates_little(net, x, y)


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
    _assert_steady_state_allocates_little(net, x, y)


def test_workspace_holds_cross_entropys_arrays_class_major_and_one_dz_per_loss():
    """CrossEntropy's arrays are (classes, batch) in the workspace (its loss reads them without reshaping) and its
    own dz replaces the batch-first one every other loss gets."""
    source = (
        "model Net {\n input [6]\n h = Linear(8)\n logits = h -> Linear(3)\n size = h -> Linear(2)\n"
        " output (logits, size)\n loss logits -> CrossEntropy\n loss size -> MSE\n}"
    )
    net = nncompile.load(source).Net(seed=0)
    keys = [row[0] for row in net._buffers + net._batch_last_buffers]
    assert len(keys) == len(set(keys))
    workspace = net._workspace(5)
    for name in ("logits", "exps", "shifted", "at_max", "dz"):
        assert workspace[f"loss.logits.{name}"].shape == (3, 5), name
    for name in ("sample_max", "sums", "scale"):
        assert workspace[f"loss.logits.{name}"].shape == (5,), name
    assert workspace["loss.size.dz"].shape == (5, 2)
