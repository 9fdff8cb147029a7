"""The benchmark workloads: the table of models and batch sizes, each model's IR graph as nncompile builds it, and
the data the scripts feed it. Shared by every benchmark script; imports neither torch nor JAX."""

import sys
from dataclasses import dataclass
from pathlib import Path

import machine_info
import numpy as np

machine_info.add_repo_root_to_path()

import nncompile
from nncompile import ir
from nncompile.compiler import compile_models

WORKLOAD_DIR = Path(__file__).resolve().parent / "workloads"
LEARNING_RATE = 0.01
DATA_SEED = 1234
# What the torch, JAX and GEMM-floor contenders can build from a graph.
SUPPORTED_LAYERS = (
    "Linear",
    "ReLU",
    "Conv1D",
    "Conv2D",
    "MaxPool1D",
    "MaxPool2D",
    "Flatten",
    "Add",
    "BatchNorm",
    "Dropout",
)
# The one optimizer every contender runs: torch.optim.SGD's defaults, lr aside.
PLAIN_SGD = {"lr": LEARNING_RATE, "momentum": 0.0, "weight_decay": 0.0, "nesterov": False}


@dataclass(frozen=True)
class Workload:
    nn_file: str
    model: str
    batch: int

    @property
    def path(self) -> Path:
        return WORKLOAD_DIR / self.nn_file


WORKLOADS = {
    "mlp_small_b32": Workload("mlp_small.nn", "MlpSmall", 32),
    "mlp_small_b256": Workload("mlp_small.nn", "MlpSmall", 256),
    "mlp_mnist_b128": Workload("mlp_mnist.nn", "MlpMnist", 128),
    "cnn1d_b64": Workload("cnn1d.nn", "Cnn1d", 64),
    "residual_mlp_b128": Workload("residual_mlp.nn", "ResidualMlp", 128),
    "cnn2d_b64": Workload("cnn2d.nn", "Cnn2d", 64),
    "mlp_bn_dropout_b128": Workload("mlp_bn_dropout.nn", "MlpBnDropout", 128),
}


class UnsupportedGraph(ValueError):
    """The workload's model asks for something the contenders built from its graph cannot run."""


def load_graph(workload: Workload) -> ir.Model:
    """The workload's model as the compiler's front end builds it: a shape-inferred DAG, nodes in topological order.
    Raises UnsupportedGraph if the contenders cannot run it."""
    path = workload.path
    models = compile_models(path.read_text(), str(path), on_warning=lambda text: print(text, file=sys.stderr))
    by_name = {model.name: model for model in models}
    if workload.model not in by_name:
        raise UnsupportedGraph(f"{path.name}: no model {workload.model}; the file has {', '.join(by_name)}")
    model = by_name[workload.model]
    _check_supported(model, path.name)
    return model


def _check_supported(model: ir.Model, file: str) -> None:
    where = f"{file}: model {model.name}"
    if len(model.inputs) != 1 or model.inputs[0].dtype != "float":
        raise UnsupportedGraph(f"{where}: the contenders take exactly one float input, the model has {model.inputs}")
    for node in model.nodes:
        if node.kind.name not in SUPPORTED_LAYERS:
            raise UnsupportedGraph(
                f"{where}: layer {node.name} is a {node.kind.name}; the pytorch, jax and gemm_floor contenders "
                f"support only {', '.join(SUPPORTED_LAYERS)}"
            )
    if len(model.outputs) != 1 or len(model.output_shape) != 1:
        raise UnsupportedGraph(f"{where}: the contenders need one output of class scores, got {model.output_shapes}")
    term = model.losses[0] if len(model.losses) == 1 else None
    if (
        term is None
        or term.component.kind.name != "CrossEntropy"
        or term.scale != 1
        or any(term.component.args.values())
    ):
        raise UnsupportedGraph(f"{where}: the contenders train with the one loss `CrossEntropy` (no label smoothing)")
    optimizer = model.optimizer
    sgd = {name: optimizer.args.get(name) for name in PLAIN_SGD}
    clipped = optimizer.args.get("clip_norm") is not None or optimizer.args.get("clip_value") is not None
    if optimizer.kind.name != "SGD" or sgd != PLAIN_SGD or clipped:
        raise UnsupportedGraph(
            f"{where}: the contenders train with plain SGD(lr={LEARNING_RATE}), got {optimizer.source}"
        )


def make_data(
    input_shape: tuple[int, ...], classes: int, samples: int, seed: int = DATA_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Standard normal float32 inputs (channels-last, the compiler's layout) and uniform class labels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, *input_shape), dtype=np.float32)
    y = rng.integers(0, classes, samples, dtype=np.int64)
    return x, y


def load_class(workload: Workload) -> type:
    """The workload's model class from the module nncompile generates for it (float32)."""
    return getattr(nncompile.load(str(workload.path), dtype="float32"), workload.model)


def fit_order(samples: int, seed: int, epoch: int = 0) -> np.ndarray:
    """The rows fit(shuffle=True, seed=seed) visits in that epoch, in its order."""
    return np.random.default_rng([seed, epoch]).permutation(samples)


def aligned(shape: tuple[int, ...]) -> np.ndarray:
    """An empty float32 array starting on a 64-byte boundary, as the generated code allocates its buffers:
    where an array starts changes small-array speed by up to ~40% on this machine, so the floor gets the same."""
    size = int(np.prod(shape)) * 4
    raw = np.empty(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + size].view(np.float32).reshape(shape)


def aligned_normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """aligned(shape) filled with standard normal draws."""
    array = aligned(shape)
    array[...] = rng.standard_normal(shape, dtype=np.float32)
    return array
