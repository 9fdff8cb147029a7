"""What check_numerics costs: train_step time of workloads/mlp_mnist.nn (float32, batch 128) with the flag off and on,
interleaved in one process, medians over rounds; optionally against a module compiled by another nncompile (the
code before check_numerics existed, to show that the flag off costs nothing).

    python benchmarks/bench_check_numerics.py                       # off vs on, 30 rounds
    python benchmarks/bench_check_numerics.py --baseline old.py     # and a module compiled without the feature
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import nncompile

WORKLOAD = Path(__file__).resolve().parent / "workloads" / "mlp_mnist.nn"
BATCH, FEATURES, CLASSES = 128, 784, 10


def sample_us(step, inner: int) -> float:
    """Microseconds per step, the mean of `inner` back-to-back steps, gc off while timing."""
    gc.collect()
    time.sleep(0.05)  # let BLAS worker threads settle between contenders
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in range(inner):
            step()
        return (time.perf_counter_ns() - start) / inner / 1e3
    finally:
        gc.enable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--inner", type=int, default=20, help="steps per sample")
    parser.add_argument("--baseline", help="a module compiled from workloads/mlp_mnist.nn by another nncompile")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, BATCH)
    contenders = {}
    module = nncompile.load(WORKLOAD, dtype="float32")
    if args.baseline:
        spec = importlib.util.spec_from_file_location("baseline", args.baseline)
        baseline = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(baseline)
        contenders["baseline (no check_numerics in the code)"] = baseline.MlpMnist(seed=0)
    contenders["check_numerics=False"] = module.MlpMnist(seed=0)
    checked = module.MlpMnist(seed=0)
    checked.check_numerics = True
    contenders["check_numerics=True"] = checked
    for net in contenders.values():
        net.lr = 1e-4  # small steps: the weights stay finite however many steps run
        for _ in range(5):
            net.train_step(x, y)
    samples = {name: [] for name in contenders}
    for round_ in range(args.rounds):
        order = list(contenders.items())
        order = order[round_ % len(order) :] + order[: round_ % len(order)]  # rotate who goes first
        for name, net in order:
            samples[name].append(sample_us(lambda net=net: net.train_step(x, y), args.inner))
    plain = statistics.median(samples["check_numerics=False"])
    print(
        f"train_step of {WORKLOAD.name}, float32, batch {BATCH}: {args.rounds} interleaved rounds of {args.inner} steps"
    )
    print()
    print("| contender | median µs/step | IQR µs | vs check_numerics=False |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in samples.items():
        q1, _, q3 = statistics.quantiles(values, n=4)
        median = statistics.median(values)
        print(f"| {name} | {median:.0f} | {q3 - q1:.0f} | {median / plain - 1:+.1%} |")


if __name__ == "__main__":
    main()
