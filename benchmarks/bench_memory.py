"""Peak resident memory (ru_maxrss) of one training epoch on mlp_mnist_b128 and cnn2d_b64: the generated model's
fit() against the same loop in PyTorch eager (SGD, lr 0.01, shuffled batches), each in a fresh subprocess.

Prints the peak after imports and data (before training) and after the epoch, so the training's own share shows.
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys

WORKLOAD_NAMES = ("mlp_mnist_b128", "cnn2d_b64")
CONTENDERS = ("nncompile", "pytorch")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def measure(name: str, contender: str, samples: int) -> dict:
    """One epoch in this process, which must be fresh: the peak is the process's whole life. Imports only what
    the contender needs (the nncompile run never imports torch)."""
    from workload import WORKLOADS, fit_order, load_class, make_data

    workload = WORKLOADS[name]
    if contender == "nncompile":
        cls = load_class(workload)
        x, y = make_data(cls.input_shape, cls.output_shape[0], samples)
        net = cls(seed=0)
        before = peak_mb()
        net.fit(x, y, epochs=1, batch_size=workload.batch, shuffle=True, seed=0, verbose=False)
        return {"before_mb": before, "peak_mb": peak_mb()}

    import contenders
    import torch
    from workload import load_graph

    torch.set_num_threads(2)
    graph = load_graph(workload)
    x, y = make_data(graph.input_shape, graph.output_shape[0], samples)
    net = contenders.TorchGraph(graph, contenders.drawn_values(graph, seed=0))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    tx, ty = torch.from_numpy(contenders.channels_first(x)), torch.from_numpy(y)
    before = peak_mb()
    # The rows fit(shuffle=True, seed=0) visits in its first epoch.
    order = torch.from_numpy(fit_order(samples, seed=0))
    for start in range(0, samples, workload.batch):
        rows = order[start : start + workload.batch]
        optimizer.zero_grad()
        loss = loss_fn(net(tx[rows]), ty[rows])
        loss.backward()
        optimizer.step()
    return {"before_mb": before, "peak_mb": peak_mb()}


def run(name: str, contender: str, samples: int) -> dict:
    """measure() in a fresh subprocess, or {"error": its last line of stderr}."""
    command = [sys.executable, __file__, "--child", contender, name, "--samples", str(samples)]
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "2"}
    )
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=12800, help="samples in the epoch (default 12800)")
    parser.add_argument("--child", nargs=2, metavar=("CONTENDER", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        contender, name = args.child
        print(json.dumps(measure(name, contender, args.samples)))
        return 0

    from workload import WORKLOADS, load_graph

    for name in WORKLOAD_NAMES:
        graph = load_graph(WORKLOADS[name])
        data_mb = args.samples * (math.prod(graph.input_shape) * 4 + 8) / 2**20
        print(f"{name}, one epoch of {args.samples} samples (data {data_mb:.1f} MiB), peak RSS in MiB")
        print("| contender | before training | after the epoch | training's share |")
        print("|---|---|---|---|")
        for contender in CONTENDERS:
            result = run(name, contender, args.samples)
            if "error" in result:
                print(f"| {contender} | unavailable: {result['error']} | | |")
                continue
            before, peak = result["before_mb"], result["peak_mb"]
            print(f"| {contender} | {before:.1f} | {peak:.1f} | {peak - before:+.1f} |", flush=True)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
