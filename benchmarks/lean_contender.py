"""The numpy_lean contender of bench_train_step.py: a training step written by hand in as few NumPy calls as we
know how, for the workloads made of Linear, ReLU and Add layers; what NumPy itself allows such a step.

It does what the generated step does (forward, CrossEntropy, backward, the SGD update; the same GEMMs in the same
layouts: W (in, out) with b stacked under it, [x, 1] · [W; b] forward, [x, 1]ᵀ · dy for [dW; db], dy · Wᵀ) and
nothing else: no checks of its inputs, no modes, a softmax without the generated loss's care for a
confident prediction's true-class gradient, every array made once, the layers' NumPy calls listed once when the
step is built and then run one after another. Its time over the GEMM floor's is the cost of the fewest NumPy calls
a correct step makes around its GEMMs, Python's call overhead included.
"""

from __future__ import annotations

from collections import Counter
from functools import partial

import numpy as np
from contenders import Steps, Unavailable
from workload import aligned

from nncompile import ir

LAYERS = ("Linear", "ReLU", "Add")


def lean_steps(graph: ir.Model, values: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, lr: float) -> Steps:
    """The hand-written step of `graph` from `values`; Unavailable unless the graph is Linear (with biases), ReLU
    and two-input Add layers ending in a Linear."""
    _check(graph)
    batch = x.shape[0]
    model_input = graph.inputs[0].name
    readers = Counter(name for node in graph.nodes for name in node.inputs)
    linears = [node for node in graph.nodes if node.kind.name == "Linear"]
    # [W; b] of every Linear in one flat array and their gradients in another: the update is one subtraction.
    sizes = [(node.in_shape[0] + 1) * node.out_shape[0] for node in linears]
    flat_params, flat_grads = aligned((sum(sizes),)), aligned((sum(sizes),))
    params, grads, start = {}, {}, 0
    for node, size in zip(linears, sizes):
        shape = (node.in_shape[0] + 1, node.out_shape[0])
        stacked = params[node.name] = flat_params[start : start + size].reshape(shape)
        stacked[:-1], stacked[-1] = values[f"{node.name}.weight"], values[f"{node.name}.bias"]
        grads[node.name] = flat_grads[start : start + size].reshape(shape)
        start += size

    def ones_column(width):
        array = aligned((batch, width + 1))
        array[:, -1] = 1
        return array

    def zeros(width):
        array = aligned((batch, width))
        array[...] = 0
        return array

    # forward: its NumPy calls in order, arguments bound; every array made here, once.
    outputs = {model_input: x}
    forward, x1 = [], {}
    for node in graph.nodes:
        kind, reads = node.kind.name, [outputs[name] for name in node.inputs]
        width = node.out_shape[0]
        if kind == "Linear":
            x1[node.name] = ones_column(node.in_shape[0])
            outputs[node.name] = aligned((batch, width))
            forward.append(partial(np.copyto, x1[node.name][:, :-1], reads[0]))
            forward.append(partial(np.matmul, x1[node.name], params[node.name], out=outputs[node.name]))
        elif kind == "ReLU":
            # In place when nothing else reads the input; maximum against zeros: against a scalar 0 it takes about
            # twice as long.
            alone = readers[node.inputs[0]] == 1 and node.inputs[0] != model_input
            outputs[node.name] = reads[0] if alone else aligned((batch, width))
            forward.append(partial(np.maximum, reads[0], zeros(width), out=outputs[node.name]))
        else:
            outputs[node.name] = aligned((batch, width))
            forward.append(partial(np.add, reads[0], reads[1], out=outputs[node.name]))
    logits = outputs[graph.output_values[graph.outputs[0]]]

    # backward: the same, in reverse; a value read by several layers gets its gradient's parts added as they come.
    # gradient[name] is the array that holds dL/d(name) once every reader of name has been through.
    gradient, backward = {}, []

    def send(name, array, owned):
        """Pass `array` (owned: this value's own, free to overwrite) as a part of dL/d(name)."""
        if name == model_input:
            return
        if name not in gradient:
            if not owned:
                copy = aligned(array.shape)
                backward.append(partial(np.copyto, copy, array))
                array = copy
            gradient[name] = array
        else:
            backward.append(partial(np.add, gradient[name], array, out=gradient[name]))

    # The loss works on classes × batch, as the generated code's does (each sample's max and sum then run across
    # the batch: a third to half the time of reducing rows of 10 at batch 128 to 256); backward reads dz through
    # the transposed view.
    classes = logits.shape[1]
    class_grad = aligned((classes, batch))
    gradient[graph.output_values[graph.outputs[0]]] = class_grad.T
    for node in reversed(graph.nodes):
        kind, dy = node.kind.name, gradient[node.name]
        if kind == "Linear":
            backward.append(partial(np.matmul, x1[node.name].T, dy, out=grads[node.name]))
            if node.inputs[0] != model_input:
                dx = aligned((batch, node.in_shape[0]))
                backward.append(partial(np.matmul, dy, params[node.name][:-1].T, out=dx))
                send(node.inputs[0], dx, owned=True)
        elif kind == "ReLU":
            mask = np.empty(dy.shape, bool)
            backward.append(partial(np.greater, outputs[node.name], 0, out=mask))
            backward.append(partial(np.multiply, dy, mask, out=dy))
            send(node.inputs[0], dy, owned=True)
        else:
            send(node.inputs[0], dy, owned=True)
            send(node.inputs[1], dy, owned=False)

    positions = np.arange(batch)
    labels = y.astype(np.intp)
    class_logits, shifted = aligned((classes, batch)), aligned((classes, batch))
    sample_max, sums, log_sums = aligned((batch,)), aligned((batch,)), aligned((batch,))
    ones = np.ones(classes, np.float32)

    def step() -> float:
        for call in forward:
            call()
        # loss = mean(log Σ_c exp(z - max) - (z - max)[label]); dz = (softmax - onehot) / batch, times lr (folded)
        np.copyto(class_logits, logits.T)
        np.maximum.reduce(class_logits, axis=0, out=sample_max)
        np.subtract(class_logits, sample_max, out=shifted)
        true_class = shifted[labels, positions]
        exps = np.exp(shifted, out=shifted)
        np.matmul(ones, exps, out=sums)  # Σ_c as a matrix-vector product: faster than a reduction here
        loss = (np.add.reduce(np.log(sums, out=log_sums)) - np.add.reduce(true_class)) / batch
        np.multiply(sums, batch / lr, out=sums)
        np.divide(exps, sums, out=class_grad)
        class_grad[labels, positions] -= lr / batch
        for call in backward:
            call()
        np.subtract(flat_params, flat_grads, out=flat_params)
        return float(loss)

    return Steps(step, step)


def _check(graph: ir.Model) -> None:
    """Unavailable unless every layer is a Linear with a bias, a ReLU or an Add of two values, and the output is a
    Linear's."""
    output = graph.output_values[graph.outputs[0]]
    fits = all(
        node.kind.name in LAYERS
        and (node.kind.name != "Linear" or node.args["bias"])
        and (node.kind.name != "Add" or len(node.inputs) == 2)
        for node in graph.nodes
    )
    if not fits or next(node for node in graph.nodes if node.name == output).kind.name != "Linear":
        raise Unavailable("only for Linear (with biases), ReLU and two-input Add layers, ending in a Linear")
