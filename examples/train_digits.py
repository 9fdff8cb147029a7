"""Train a compiled digits model on scikit-learn's bundled 8x8 digits and print its test accuracy.

Usage: python examples/train_digits.py digits_mlp.py   (a module written by `nncompile ... -o digits_mlp.py`)
"""

from __future__ import annotations

import importlib.util
import sys
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def load_module(path: str):
    spec = importlib.util.spec_from_file_location("compiled_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(path: str, epochs: int = 20, batch_size: int = 32) -> float:
    module = load_module(path)
    model_class = getattr(module, module.__all__[0])
    digits = load_digits()
    x = (digits.data / 16.0).reshape(len(digits.data), *model_class.input_shape)
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.25, random_state=0)
    net = model_class(seed=0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_train))
        losses = [
            net.train_step(x_train[order[i : i + batch_size]], y_train[order[i : i + batch_size]])
            for i in range(0, len(order), batch_size)
        ]
        if epoch % 5 == 0 or epoch == 1:
            print(f"epoch {epoch:3d}  loss {np.mean(losses):.4f}")
    accuracy = float(np.mean(net.forward(x_test).argmax(axis=1) == y_test))
    print(f"{model_class.__name__}: test accuracy {accuracy:.4f} after {time.perf_counter() - start:.1f} s")
    return accuracy


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    main(sys.argv[1])
