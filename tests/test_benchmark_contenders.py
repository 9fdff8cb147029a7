"""The benchmark's hand-written numpy_lean step trains the same model as the generated one, and refuses the models it
does not cover (its bench_train_step.py gate checks the losses again at every run)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import ROOT

# benchmarks/ is not a package: its modules import each other by their bare names.
sys.path.insert(0, str(ROOT / "benchmarks"))

import contenders
import lean_contender
from workload import LEARNING_RATE, WORKLOADS, load_graph, make_data


@pytest.mark.parametrize("name", ["mlp_small_b32", "mlp_mnist_b128", "residual_mlp_b128"])
def test_numpy_lean_takes_the_generated_steps(name):
    workload = WORKLOADS[name]
    graph = load_graph(workload)
    x, y = make_data(graph.input_shape, graph.output_shape[0], workload.batch)
    net = contenders.load_generated(workload, graph)
    lean = lean_contender.lean_steps(graph, contenders.net_values(net), x, y, LEARNING_RATE)
    # Each loss after the first also checks the update before it.
    for _ in range(4):
        np.testing.assert_allclose(lean.timed(), net.train_step(x, y), rtol=1e-6)


@pytest.mark.parametrize("name", ["cnn1d_b64", "cnn2d_b64", "mlp_bn_dropout_b128"])
def test_numpy_lean_refuses_other_layers(name):
    with pytest.raises(contenders.Unavailable, match="only for Linear"):
        lean_contender.lean_steps(load_graph(WORKLOADS[name]), {}, np.zeros((1, 1)), np.zeros(1), LEARNING_RATE)
