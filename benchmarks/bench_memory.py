"""Peak resident memory (ru_maxrss) of one training epoch on mlp_mnist_b128: the generated model's fit() against
the same loop in PyTorch eager (SGD, lr 0.01, shuffled batches of 128), each in a fresh subprocess.

Prints the peak after imports and data (before training) and after the epoch, so the training's own share shows.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, resource, sys
sys.path.insert(0, {here!r})
import machine_info
machine_info.add_repo_root_to_path()
import numpy as np

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux

samples, batch, contender = {samples}, 128, {contender!r}
rng = np.random.default_rng(1234)
x = rng.standard_normal((samples, 784), dtype=np.float32)
y = rng.integers(0, 10, samples, dtype=np.int64)
if contender == "nncompile":
    import nncompile
    module = nncompile.load({nn!r}, dtype="float32")
    net = module.MlpMnist(seed=0)
    before = peak_mb()
    net.fit(x, y, epochs=1, batch_size=batch, shuffle=True, seed=0, verbose=False)
else:
    import torch
    torch.set_num_threads(2)
    net = torch.nn.Sequential(
        torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    before = peak_mb()
    order = torch.from_numpy(np.random.default_rng([0, 0]).permutation(samples))
    for start in range(0, samples, batch):
        rows = order[start : start + batch]
        opt.zero_grad()
        loss = loss_fn(net(tx[rows]), ty[rows])
        loss.backward()
        opt.step()
print(json.dumps({{"before_mb": before, "peak_mb": peak_mb()}}))
"""


def run(contender: str, samples: int) -> dict:
    code = CHILD.format(
        here=str(HERE), samples=samples, contender=contender, nn=str(HERE / "workloads" / "mlp_mnist.nn")
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=12800, help="samples in the epoch (default 12800)")
    args = parser.parse_args(argv)
    data_mb = args.samples * (784 * 4 + 8) / 2**20
    print(f"mlp_mnist_b128, one epoch of {args.samples} samples (data {data_mb:.1f} MiB), peak RSS in MiB")
    print("| contender | before training | after the epoch | training's share |")
    print("|---|---|---|---|")
    for contender in ("nncompile", "pytorch"):
        result = run(contender, args.samples)
        if "error" in result:
            print(f"| {contender} | unavailable: {result['error']} | | |")
            continue
        before, peak = result["before_mb"], result["peak_mb"]
        print(f"| {contender} | {before:.1f} | {peak:.1f} | {peak - before:+.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
