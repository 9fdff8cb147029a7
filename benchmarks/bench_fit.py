"""Times one epoch of the generated model's fit(shuffle=True, verbose=False) against the equivalent loop of
train_step() over the same shuffled batches, for the workloads of workload.py, interleaved in one process;
prints medians and their ratio.

The loop indexes the same rows (np.random.default_rng([seed, 0]).permutation, as fit does for epoch 0 with that
seed), so the difference is fit()'s own bookkeeping: the loss checks, the history, the non-finite guard.
"""

import argparse
import statistics
import sys
import time

import machine_info

machine_info.add_repo_root_to_path()

from workload import WORKLOADS, fit_order, load_class, make_data


def build(name: str, samples: int):
    """Two identical nets (one for fit, one for the loop) and `samples` samples of data."""
    workload = WORKLOADS[name]
    cls = load_class(workload)
    x, y = make_data(cls.input_shape, cls.output_shape[0], samples)
    return cls(seed=0), cls(seed=0), x, y, workload.batch


def time_fit(net, x, y, batch, seed):
    started = time.perf_counter()
    net.fit(x, y, epochs=1, batch_size=batch, shuffle=True, seed=seed, verbose=False)
    return time.perf_counter() - started


def time_loop(net, x, y, batch, seed):
    started = time.perf_counter()
    order = fit_order(len(x), seed)
    for start in range(0, len(x), batch):
        rows = order[start : start + batch]
        net.train_step(x[rows], y[rows])
    return time.perf_counter() - started


def measure(name: str, rounds: int, batches: int) -> tuple[float, float, float]:
    """Median seconds per epoch of fit and of the train_step loop, and the median of the per-round ratios."""
    fit_net, loop_net, x, y, batch = build(name, batches * WORKLOADS[name].batch)
    time_fit(fit_net, x, y, batch, 0)  # warm up both
    time_loop(loop_net, x, y, batch, 0)
    fits, loops, ratios = [], [], []
    for r in range(rounds):
        # Alternate which goes first, so drift in the machine's speed does not favour one.
        if r % 2:
            loop = time_loop(loop_net, x, y, batch, r)
            fit = time_fit(fit_net, x, y, batch, r)
        else:
            fit = time_fit(fit_net, x, y, batch, r)
            loop = time_loop(loop_net, x, y, batch, r)
        fits.append(fit)
        loops.append(loop)
        ratios.append(fit / loop)
    return statistics.median(fits), statistics.median(loops), statistics.median(ratios)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workloads", nargs="*", help=f"from {list(WORKLOADS)} (default: all)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--batches", type=int, default=100, help="batches per epoch (default 100)")
    args = parser.parse_args(argv)
    print("| workload | fit epoch (ms) | train_step loop (ms) | fit / loop (median of rounds) |")
    print("|---|---|---|---|")
    unknown = [name for name in args.workloads if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    for name in args.workloads or WORKLOADS:
        fit, loop, ratio = measure(name, args.rounds, args.batches)
        print(f"| {name} | {fit * 1e3:.2f} | {loop * 1e3:.2f} | {ratio:.3f}× |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
