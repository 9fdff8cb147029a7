"""The numpy_lean contender of bench_train_step.py: a training step written by hand in as few NumPy calls as we
know how, for the workloads that are chains of Linear and ReLU layers; what NumPy itself allows such a step.

It does what the generated step does (forward, CrossEntropy, backward, the SGD update; the same GEMMs in the same
layouts: W (in, out) with b stacked under it, [x, 1] · [W; b] forward, [x, 1]ᵀ · dy for [dW; db], dy · Wᵀ) and
nothing else: no checks of its inputs, no modes, no hooks, a batch-major softmax without the generated loss's care
for a confident prediction's true-class gradient, every array made once. Its time over the GEMM floor's is the
cost of the fewest NumPy calls a correct step makes around its GEMMs, Python's call overhead included.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from contenders import Steps, Unavailable
from workload import aligned

from nncompile import ir


def lean_steps(graph: ir.Model, values: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, lr: float) -> Steps:
    """The hand-written step of `graph` from `values`; Unavailable unless the graph is Linear (with bias) layers,
    each but the last followed by one ReLU, in a chain."""
    linears = _chain(graph)
    batch = x.shape[0]
    sizes = [node.in_shape[0] for node in linears] + [linears[-1].out_shape[0]]
    shapes = [(fan_in + 1, fan_out) for fan_in, fan_out in pairwise(sizes)]
    # [W; b] of every layer in one flat array, and their gradients in another: the update is one subtraction.
    flat_params = aligned((sum(rows * cols for rows, cols in shapes),))
    flat_grads = aligned(flat_params.shape)
    params, grads, start = [], [], 0
    for node, (rows, cols) in zip(linears, shapes):
        stacked = flat_params[start : start + rows * cols].reshape(rows, cols)
        stacked[:-1], stacked[-1] = values[f"{node.name}.weight"], values[f"{node.name}.bias"]
        params.append(stacked)
        grads.append(flat_grads[start : start + rows * cols].reshape(rows, cols))
        start += rows * cols
    x1 = [aligned((batch, rows)) for rows, _ in shapes]  # [x, 1] of each layer; the column of ones stays
    for ones in x1:
        ones[:, -1] = 1
    outputs = [aligned((batch, cols)) for _, cols in shapes]
    input_grads = [aligned((batch, size)) for size in sizes[:-1]]
    masks = [np.empty((batch, size), bool) for size in sizes[:-1]]
    classes = sizes[-1]
    rows = np.arange(batch)
    labels = y.astype(np.intp)
    shifted, sample_max = aligned((batch, classes)), aligned((batch, 1))
    sums, log_sums = aligned((batch, 1)), aligned((batch, 1))
    inputs = x
    last = len(linears) - 1

    def step() -> float:
        np.copyto(x1[0][:, :-1], inputs)
        for index in range(last):
            hidden = np.matmul(x1[index], params[index], out=outputs[index])
            np.maximum(hidden, 0, out=hidden)
            np.copyto(x1[index + 1][:, :-1], hidden)
        logits = np.matmul(x1[last], params[last], out=outputs[last])
        # loss = mean(log Σ_c exp(z - max) - (z - max)[label]); dz = (softmax - onehot) / batch, times lr (folded)
        np.maximum.reduce(logits, axis=1, keepdims=True, out=sample_max)
        np.subtract(logits, sample_max, out=shifted)
        true_class = shifted[rows, labels]
        exps = np.exp(shifted, out=shifted)
        np.add.reduce(exps, axis=1, keepdims=True, out=sums)
        loss = (np.add.reduce(np.log(sums, out=log_sums), axis=None) - np.add.reduce(true_class)) / batch
        np.multiply(sums, batch / lr, out=sums)
        dy = np.divide(exps, sums, out=exps)
        dy[rows, labels] -= lr / batch
        for index in range(last, -1, -1):
            np.matmul(x1[index].T, dy, out=grads[index])
            if index:
                dx = np.matmul(dy, params[index][:-1].T, out=input_grads[index])
                np.greater(outputs[index - 1], 0, out=masks[index])
                dy = np.multiply(dx, masks[index], out=dx)
        np.subtract(flat_params, flat_grads, out=flat_params)
        return float(loss)

    return Steps(step, step)


def _chain(graph: ir.Model) -> list[ir.Node]:
    """The graph's Linear nodes in order, if it is Linear → ReLU → … → Linear, each reading the node before."""
    kinds = [node.kind.name for node in graph.nodes]
    expected = ["Linear", "ReLU"] * (len(kinds) // 2) + ["Linear"]
    chained = all(list(node.inputs) == [before.name] for before, node in pairwise(graph.nodes))
    if kinds != expected or not chained or not all(node.args["bias"] for node in graph.nodes[::2]):
        raise Unavailable("only for a chain Linear → ReLU → … → Linear (with biases)")
    return list(graph.nodes[::2])
