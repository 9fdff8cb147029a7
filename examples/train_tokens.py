"""Train examples/tokens.nn on sequences made here: 8 tokens from a vocabulary of 16, labelled 1 when the tokens of
the first half add up to more than those of the second half. Prints the test accuracy.

    python examples/train_tokens.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import nncompile

HERE = Path(__file__).resolve().parent


def make_data(samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 16, (samples, 8))
    labels = (tokens[:, :4].sum(axis=1) > tokens[:, 4:].sum(axis=1)).astype(int)
    return tokens, labels


def main(epochs: int = 30) -> float:
    module = nncompile.load(HERE / "tokens.nn")
    model = module.TokenClassifier(seed=0)
    x_train, y_train = make_data(4000, seed=1)
    x_test, y_test = make_data(1000, seed=2)
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, seed=0, verbose=False)
    accuracy = model.evaluate(x_test, y_test)["accuracy"]
    print(f"test accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
