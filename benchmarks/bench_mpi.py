"""Data-parallel fit() over MPI: samples per second of one fit() epoch of the MNIST-sized MLP
(workloads/mlp_mnist.nn, float32, batch 512) in one process and under `mpiexec -n 2`, one BLAS thread per rank;
the speedup, and the share of each rank's time spent in Allreduce (the gradient's, and the small ones carrying
the loss sums and error flags). Prints a markdown report.

    python benchmarks/bench_mpi.py [--samples 30720] [--repeats 3]

The same file is the worker: `mpiexec -n 2 python benchmarks/bench_mpi.py --worker ...` (the launcher runs it).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import machine_info

machine_info.add_repo_root_to_path()

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "workloads" / "mlp_mnist.nn"
BATCH = 512


class TimedComm:
    """A communicator that times each Allreduce (duck-typed, as fit() takes it) and passes everything on."""

    def __init__(self, comm):
        self.comm = comm
        self.IN_PLACE = sys.modules["mpi4py.MPI"].IN_PLACE
        self.big = self.small = 0.0
        self.big_calls = self.small_calls = 0

    def Get_rank(self):
        return self.comm.Get_rank()

    def Get_size(self):
        return self.comm.Get_size()

    def Bcast(self, buffer, root=0):
        return self.comm.Bcast(buffer, root=root)

    def Allreduce(self, send, receive):
        started = time.perf_counter()
        self.comm.Allreduce(send, receive)
        seconds = time.perf_counter() - started
        if receive.size > 1000:
            self.big += seconds
            self.big_calls += 1
        else:
            self.small += seconds
            self.small_calls += 1


# fit() finds IN_PLACE in the module its communicator's class comes from: this one.
IN_PLACE = None


def worker(samples, repeats, parallel):
    import numpy as np

    import nncompile

    global IN_PLACE
    module = nncompile.load(str(WORKLOAD), dtype="float32")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((samples, 784), dtype=np.float32)
    y = rng.integers(0, 10, samples)
    comm = None
    rank = 0
    if parallel:
        from mpi4py import MPI

        IN_PLACE = MPI.IN_PLACE
        comm = TimedComm(MPI.COMM_WORLD)
        rank = comm.Get_rank()
    net = module.MlpMnist(seed=0)
    net.fit(x[: 4 * BATCH], y[: 4 * BATCH], epochs=1, batch_size=BATCH, seed=0, verbose=False, comm=comm)  # warm-up
    runs = []
    for repeat in range(repeats):
        if comm is not None:
            comm.comm.Barrier()
            comm.big = comm.small = 0.0
            comm.big_calls = comm.small_calls = 0
        started = time.perf_counter()
        net.fit(x, y, epochs=1, batch_size=BATCH, seed=repeat, verbose=False, comm=comm)
        seconds = time.perf_counter() - started
        run = {"seconds": seconds}
        if comm is not None:
            run.update(big=comm.big, small=comm.small, big_calls=comm.big_calls, small_calls=comm.small_calls)
            gathered = comm.comm.gather(run, root=0)
            if rank == 0:
                run = {
                    "seconds": max(r["seconds"] for r in gathered),
                    "big": sum(r["big"] for r in gathered) / len(gathered),
                    "small": sum(r["small"] for r in gathered) / len(gathered),
                    "big_calls": run["big_calls"],
                    "small_calls": run["small_calls"],
                }
        runs.append(run)
    latency = {}
    if comm is not None:
        # The collectives alone, after a barrier (no waiting for a slower rank): their pure cost.
        for name, array, calls in (("small_us", np.zeros(8), 2000), ("big_us", net._flat_grads.copy(), 50)):
            comm.comm.Barrier()
            started = time.perf_counter()
            for _ in range(calls):
                comm.comm.Allreduce(IN_PLACE, array)
            latency[name] = 1e6 * (time.perf_counter() - started) / calls
    if rank == 0:
        print(json.dumps({"runs": runs, "params": len(net._flat_params), **latency}))


def launch(command, threads):
    env = {
        **os.environ,
        "PYTHONPATH": str(HERE.parent),
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
    }
    done = subprocess.run(command, check=True, env=env, capture_output=True, text=True, timeout=900)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30720)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=["single", "mpi"])
    args = parser.parse_args()
    if args.worker:
        worker(args.samples, args.repeats, args.worker == "mpi")
        return
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("no mpiexec on PATH: pip install mpi4py mpich")
    me = [sys.executable, str(Path(__file__).resolve()), "--samples", str(args.samples), "--repeats", str(args.repeats)]
    load = machine_info.load_average()
    single1 = launch([*me, "--worker", "single"], 1)
    single2 = launch([*me, "--worker", "single"], 2)
    parallel = launch([mpiexec, "-n", "2", *me, "--worker", "mpi"], 1)

    def best(result):
        return min(result["runs"], key=lambda run: run["seconds"])

    rate1, rate2 = args.samples / best(single1)["seconds"], args.samples / best(single2)["seconds"]
    run = best(parallel)
    rate = args.samples / run["seconds"]
    params = parallel["params"]
    lines = machine_info.header_lines(
        "Data-parallel fit() over MPI",
        {
            "load average before the run (1/5/15 min)": load,
            "nncompile": machine_info.nncompile_description(),
            "method": (
                f"one fit() epoch of {args.samples} samples of mlp_mnist.nn (float32, SGD, batch {BATCH}), "
                f"best of {args.repeats} after a warm-up fit; MPICH from the mpich wheel, shared memory"
            ),
        },
    )
    lines += [
        "| run | samples/s | speedup vs 1 process, 1 thread |",
        "| --- | ---: | ---: |",
        f"| 1 process, 1 BLAS thread | {rate1:,.0f} | 1.00 |",
        f"| 1 process, 2 BLAS threads | {rate2:,.0f} | {rate2 / rate1:.2f} |",
        f"| mpiexec -n 2, 1 BLAS thread per rank | {rate:,.0f} | {rate / rate1:.2f} |",
        "",
        f"Per rank, mean of the two (mpiexec -n 2, the best epoch of {run['seconds']:.2f} s):",
        "",
        (
            f"- gradient Allreduce: {run['big_calls']} calls of {params:,} float32 ({params * 4 / 1e6:.2f} MB), "
            f"{run['big']:.3f} s = {100 * run['big'] / run['seconds']:.1f}% of the epoch "
            f"({1e3 * run['big'] / run['big_calls']:.2f} ms per call)"
        ),
        (
            f"- small Allreduces (loss sums, counts, error flags; the first collective after each rank's forward "
            f"and backward, so it also absorbs waiting for the slower rank): {run['small_calls']} calls, "
            f"{run['small']:.4f} s = {100 * run['small'] / run['seconds']:.1f}% "
            f"({1e6 * run['small'] / max(run['small_calls'], 1):.0f} µs per call)"
        ),
        (
            f"- the collectives alone, after a barrier: gradient Allreduce {parallel['big_us'] / 1e3:.2f} ms "
            f"({params * 4 / parallel['big_us'] / 1e3:.2f} GB/s of gradient), small Allreduce "
            f"{parallel['small_us']:.1f} µs; one step of 1 process, 1 thread: "
            f"{1e3 * BATCH / rate1:.1f} ms"
        ),
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
