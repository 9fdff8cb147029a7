"""Times each Linear layer's three GEMMs of a training step in the layouts the generated code uses and in the layouts
the GEMM floor of bench_train_step.py times, to show how much of the floor ratio is the layout of the weight.

A weight stored (in, out), as nncompile stores it, makes the forward GEMM x · W plain, the weight gradient xᵀ · dy
read x transposed (cheap), and the input gradient dy · Wᵀ read W transposed: both operands of that product are then
contiguous along the summed axis, the form OpenBLAS is slowest at for small matrices. The floor multiplies by a
separate contiguous copy of Wᵀ instead, which a training step would have to remake after every update.
"""

import argparse
import statistics
import sys
import time

import machine_info
import numpy as np

machine_info.add_repo_root_to_path()

from workload import WORKLOADS, aligned_normal, load_graph


def best_time(a: np.ndarray, b: np.ndarray, out: np.ndarray, repeats: int) -> float:
    """Microseconds per np.matmul(a, b, out=out): the median of 7 samples of `repeats` calls each."""
    np.matmul(a, b, out=out)
    samples = []
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(repeats):
            np.matmul(a, b, out=out)
        samples.append((time.perf_counter() - started) / repeats)
    return statistics.median(samples) * 1e6


def linear_rows(name: str, repeats: int) -> list[tuple]:
    """(layer, [in → out], forward, weight gradient, input gradient on Wᵀ as a view, on a contiguous Wᵀ) in µs, for
    the Linear layers whose input gradient a training step computes (not those reading a model input)."""
    workload = WORKLOADS[name]
    graph = load_graph(workload)
    rng = np.random.default_rng(0)
    model_inputs = {item.name for item in graph.inputs}
    rows = []
    for node in graph.nodes:
        if node.kind.name != "Linear" or node.inputs[0] in model_inputs:
            continue  # a training step needs no gradient for a model input
        fan_in, fan_out = node.in_shape[0], node.out_shape[0]
        x1 = aligned_normal(rng, workload.batch, fan_in + 1)  # [x, 1]
        weight_bias = aligned_normal(rng, fan_in + 1, fan_out)  # [W; b]
        dy = aligned_normal(rng, workload.batch, fan_out)
        y, dx = aligned_normal(rng, workload.batch, fan_out), aligned_normal(rng, workload.batch, fan_in)
        grad = aligned_normal(rng, fan_in + 1, fan_out)
        weight_t = np.ascontiguousarray(weight_bias[:fan_in].T)
        rows.append(
            (
                node.name,
                f"{fan_in} → {fan_out}",
                best_time(x1, weight_bias, y, repeats),
                best_time(x1.T, dy, grad, repeats),
                best_time(dy, weight_bias[:fan_in].T, dx, repeats),
                best_time(dy, weight_t, dx, repeats),
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workloads", nargs="*", help=f"from {sorted(WORKLOADS)} (default: all)")
    parser.add_argument("--repeats", type=int, default=200, help="calls per sample (default 200)")
    args = parser.parse_args()
    unknown = [name for name in args.workloads if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {sorted(WORKLOADS)}")
    print("\n".join(machine_info.header_lines("GEMM layouts of the Linear layers (float32, µs per call)")))
    print("| workload | layer | shape | x·W | xᵀ·dy | dy·Wᵀ, W (in, out) | dy·Wᵀ, Wᵀ contiguous | ratio |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name in args.workloads or list(WORKLOADS):
        for layer, shape, forward, weight_grad, input_view, input_copy in linear_rows(name, args.repeats):
            print(
                f"| {name} | {layer} | {shape} | {forward:.1f} | {weight_grad:.1f} | {input_view:.1f} | "
                f"{input_copy:.1f} | {input_view / input_copy:.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
