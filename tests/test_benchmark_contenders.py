"""The benchmark's hand-written numpy_lean step trains the same model as the generated one, and refuses the models it
does not cover (its bench_train_step.py gate checks the losses again at every run)."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
from conftest import ROOT

BENCHMARKS = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    """The benchmark modules contenders, lean_contender and workload. benchmarks/ is not a package and its modules
    import each other by bare names, so it is on sys.path only while they load, and every module they brought in
    from it leaves sys.modules afterwards: no other test can pick up a bare-named benchmark module."""
    before = set(sys.modules)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        modules = {name: importlib.import_module(name) for name in ("contenders", "lean_contender", "workload")}
    finally:
        sys.path.remove(str(BENCHMARKS))
    yield modules
    for name in set(sys.modules) - before:
        if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(BENCHMARKS)):
            del sys.modules[name]


@pytest.mark.parametrize("name", ["mlp_small_b32", "mlp_mnist_b128", "residual_mlp_b128"])
def test_numpy_lean_takes_the_generated_steps(bench, name):
    contenders, workload = bench["contenders"], bench["workload"]
    graph = workload.load_graph(workload.WORKLOADS[name])
    x, y = workload.make_data(graph.input_shape, graph.output_shape[0], workload.WORKLOADS[name].batch)
    net = contenders.load_generated(workload.WORKLOADS[name], graph)
    lean = bench["lean_contender"].lean_steps(graph, contenders.net_values(net), x, y, workload.LEARNING_RATE)
    # Each loss after the first also checks the update before it.
    for _ in range(4):
        np.testing.assert_allclose(lean.timed(), net.train_step(x, y), rtol=1e-6)


@pytest.mark.parametrize("name", ["cnn1d_b64", "cnn2d_b64", "mlp_bn_dropout_b128"])
def test_numpy_lean_refuses_other_layers(bench, name):
    workload = bench["workload"]
    graph = workload.load_graph(workload.WORKLOADS[name])
    with pytest.raises(bench["contenders"].Unavailable, match="only for Linear"):
        bench["lean_contender"].lean_steps(graph, {}, np.zeros((1, 1)), np.zeros(1), workload.LEARNING_RATE)
