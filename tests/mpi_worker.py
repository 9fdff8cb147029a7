"""The script tests/test_mpi.py runs under mpiexec (and imports, for the single-process references): small models
trained by fit(comm=MPI.COMM_WORLD), each rank writing its state and history, or the error it stopped with.

    mpiexec -n 2 python -m mpi4py tests/mpi_worker.py OUT_DIR fit|errors
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import nncompile

ROOT = Path(__file__).resolve().parent.parent

MLP = """
model Mlp {
    input [6]
    Linear(16)
    TanH
    Linear(3)
    loss CrossEntropy
    optimizer SGD(lr=0.1, momentum=0.9)
}
"""

MLP_ADAM = MLP.replace("SGD(lr=0.1, momentum=0.9)", "Adam(lr=0.01)\n    schedule StepLR(step_size=2)")

CNN = """
model Cnn {
    input [12, 2]
    Conv1D(4, 3, bias=true)
    ReLU
    MaxPool1D(2)
    Flatten
    Linear(3)
    loss CrossEntropy
    optimizer SGD(lr=0.05, momentum=0.9)
}
"""

NORMALIZED = (ROOT / "tests" / "golden" / "normalization.nn").read_text()
GRAPH = (ROOT / "tests" / "golden" / "two_inputs.nn").read_text()

SAMPLES = 97  # with batch 16 the last batch has 1 sample: some ranks get none


def data(kind, samples=SAMPLES, seed=0):
    """x, y for a model kind: a learnable task, the same on every rank."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, samples)
    if kind == "cnn":
        x = rng.standard_normal((samples, 12, 2)) + y[:, None, None]
        return x, y
    if kind == "graph":
        digit = rng.integers(0, 10, samples)
        pixels = rng.standard_normal((samples, 64)) + np.eye(10, 64)[digit]
        meta = rng.standard_normal((samples, 4))
        return {"pixels": pixels, "meta": meta}, {"digit": digit, "size": meta[:, :1] * 0.5}
    if kind == "normalized":
        x = rng.standard_normal((samples, 6, 4)) + y[:, None, None]
        return x, y
    return rng.standard_normal((samples, 6)) + np.eye(3, 6)[y], y


def take(array, rows):
    return {k: v[rows] for k, v in array.items()} if isinstance(array, dict) else array[rows]


# name → (source, model, dtype, data kind, fit arguments, seed of the model on rank r: same or rank-dependent)
CASES = {
    "mlp": (MLP, "Mlp", "float64", "mlp", {"epochs": 3, "batch_size": 16, "seed": 1}),
    "mlp_float32": (MLP, "Mlp", "float32", "mlp", {"epochs": 3, "batch_size": 16, "seed": 1}),
    "mlp_adam_unseeded": (MLP_ADAM, "Mlp", "float64", "mlp", {"epochs": 3, "batch_size": 10, "seed": 2}),
    "mlp_weighted_noshuffle": (
        MLP,
        "Mlp",
        "float64",
        "mlp",
        {"epochs": 2, "batch_size": 16, "shuffle": False, "sample_weight": "weights"},
    ),
    "mlp_early_stop": (
        MLP,
        "Mlp",
        "float64",
        "mlp",
        {"epochs": 8, "batch_size": 8, "seed": 3, "validation_split": 0.3, "patience": 1},
    ),
    "cnn": (CNN, "Cnn", "float64", "cnn", {"epochs": 2, "batch_size": 16, "seed": 1}),
    "cnn_validation": (
        CNN,
        "Cnn",
        "float64",
        "cnn",
        {"epochs": 3, "batch_size": 16, "seed": 1, "validation_data": "held_out", "patience": 2},
    ),
    "cnn_float32": (CNN, "Cnn", "float32", "cnn", {"epochs": 2, "batch_size": 16, "seed": 1}),
    "graph": (GRAPH, "TwoInputs", "float64", "graph", {"epochs": 2, "batch_size": 16, "seed": 1}),
    "graph_validation": (
        GRAPH,
        "TwoInputs",
        "float64",
        "graph",
        {"epochs": 4, "batch_size": 16, "seed": 1, "validation_data": "held_out", "patience": 1},
    ),
}
# Not comparable with one process (local batch statistics, per-rank Dropout): every rank must agree.
RANK_LOCAL = {
    "normalized": (NORMALIZED, "Normalized", "float64", "normalized", {"epochs": 2, "batch_size": 16, "seed": 1}),
}

_MODULES = {}


def run(name, comm=None, rank=0):
    """Compile and fit case `name`; returns the model and its history. The unseeded case gives each rank a model
    of its own seed (rank 0's is the reference's): fit's broadcast must make them agree."""
    source, model_name, dtype, kind, arguments = {**CASES, **RANK_LOCAL}[name]
    key = (source, dtype)
    if key not in _MODULES:
        _MODULES[key] = nncompile.load(source, dtype=dtype)
    net = getattr(_MODULES[key], model_name)(seed=rank if "unseeded" in name else 0)
    x, y = data(kind)
    arguments = dict(arguments)
    if arguments.get("sample_weight") == "weights":
        arguments["sample_weight"] = np.random.default_rng(9).uniform(0, 2, SAMPLES)
    if arguments.get("validation_data") == "held_out":
        arguments["validation_data"] = data(kind, samples=23, seed=7)
    history = net.fit(x, y, verbose=False, comm=comm, **arguments)
    return net, history


def fit_all(out, comm):
    rank = comm.Get_rank()
    for name in [*CASES, *RANK_LOCAL]:
        net, history = run(name, comm, rank)
        np.savez(out / f"{name}.{rank}.npz", **net.state_dict())
        (out / f"{name}.{rank}.json").write_text(json.dumps({k: [float(v) for v in vs] for k, vs in history.items()}))


def errors(out, comm):
    """Each case fails on one rank only; every rank records what it raised."""
    rank, size = comm.Get_rank(), comm.Get_size()
    failing = size - 1
    module = nncompile.load(MLP, dtype="float64")
    x, y = data("mlp")
    results = {}

    def record(case, fn):
        try:
            fn()
            results[case] = None
        except Exception as err:  # noqa: BLE001 - the point is to see what each rank raised
            results[case] = [type(err).__name__, str(err), getattr(err, "rank", None)]

    def bad_input():
        mine = x[:, :5] if rank == failing else x
        module.Mlp(seed=0).fit(mine, y, epochs=2, batch_size=16, verbose=False, comm=comm)

    def other_batch_size():
        module.Mlp(seed=0).fit(x, y, epochs=2, batch_size=16 + (rank == failing), verbose=False, comm=comm)

    def non_finite():
        regression = nncompile.load("model Reg {\n input [6]\n Linear(2)\n loss MSE\n}", dtype="float64")
        mine = x * (1e200 if rank == failing else 1.0)  # finite, but the squared error overflows on this rank only
        regression.Reg(seed=0).fit(mine, x[:, :2], epochs=2, batch_size=16, seed=0, verbose=False, comm=comm)

    def callback_error():
        def callback(epoch, logs):
            if rank == failing and epoch == 1:
                raise RuntimeError("callback failed")

        module.Mlp(seed=0).fit(x, y, epochs=3, batch_size=16, verbose=False, callbacks=[callback], comm=comm)

    def stop_on_one_rank():
        def callback(epoch, logs):
            if rank == failing and epoch == 1:
                net.stop_training = True

        net = module.Mlp(seed=0)
        history = net.fit(x, y, epochs=5, batch_size=16, verbose=False, callbacks=[callback], comm=comm)
        results["stop_on_one_rank_epochs"] = len(history["loss"])

    only = sys.argv[3:] or None
    for case, fn in [
        ("bad_input", bad_input),
        ("other_batch_size", other_batch_size),
        ("non_finite", non_finite),
        ("callback_error", callback_error),
        ("stop_on_one_rank", stop_on_one_rank),
    ]:
        if only is None or case in only:
            record(case, fn)
    (out / f"errors.{rank}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    from mpi4py import MPI

    target, mode = Path(sys.argv[1]), sys.argv[2]
    {"fit": fit_all, "errors": errors}[mode](target, MPI.COMM_WORLD)
