"""Train nncompile models on scikit-learn's bundled 8x8 digits (no download) and print their test accuracy.

    python examples/train_digits.py [MODEL ...] [--epochs N] [--batch-size N] [--seed N] [--quiet]

A MODEL is either a .nn file, compiled here with nncompile.load, or a module written by
`nncompile model.nn -o model.py` (training it then needs only numpy; scikit-learn supplies the data).
Without MODEL it trains the four examples: examples/digits_mlp.nn, examples/digits_cnn1d.nn,
examples/digits_residual.nn and examples/digits_cnn2d.nn.

The 1797 images are split 75/25 into training and test samples (train_test_split(..., test_size=0.25,
random_state=0)); pixels are scaled to [0, 1] and reshaped to the model's input shape: [64] for the MLP and the
residual MLP, [64, 1] (a length-64 signal with one channel) for the 1-D CNN, [8, 8, 1] (an image with one
channel) for the 2-D CNN.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

EXAMPLES = Path(__file__).resolve().parent
DEFAULT_MODELS = [
    EXAMPLES / "digits_mlp.nn",
    EXAMPLES / "digits_cnn1d.nn",
    EXAMPLES / "digits_residual.nn",
    EXAMPLES / "digits_cnn2d.nn",
]


def model_class(path):
    """The (first) model class of a .nn file or of a compiled module file."""
    path = Path(path)
    if path.suffix == ".nn":
        import nncompile  # only needed to compile; a compiled module runs on numpy alone

        module = nncompile.load(str(path))
    else:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return getattr(module, module.__all__[0])


def digits_split(input_shape):
    """(x_train, x_test, y_train, y_test): the fixed 75/25 split, pixels in [0, 1], shaped for the model."""
    digits = load_digits()
    x = (digits.data / 16.0).reshape(len(digits.data), *input_shape)
    return train_test_split(x, digits.target, test_size=0.25, random_state=0)


def train(cls, epochs=25, batch_size=16, seed=0, verbose=True):
    """Train a fresh cls(seed) on the training split; returns (model, history, test metrics, seconds)."""
    x_train, x_test, y_train, y_test = digits_split(cls.input_shape)
    model = cls(seed=seed)
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, seed=seed, verbose=verbose)
    seconds = time.perf_counter() - start
    return model, history, model.evaluate(x_test, y_test), seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("models", nargs="*", default=DEFAULT_MODELS, help=".nn files or compiled .py modules")
    parser.add_argument("--epochs", type=int, default=25, help="default 25")
    parser.add_argument("--batch-size", type=int, default=16, help="default 16")
    parser.add_argument("--seed", type=int, default=0, help="parameters and shuffling (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    args = parser.parse_args(argv)
    results = {}
    for path in args.models:
        cls = model_class(path)
        print(f"== {Path(path).name}: {cls.__doc__.splitlines()[0]}")
        _, _, test, seconds = train(cls, args.epochs, args.batch_size, args.seed, verbose=not args.quiet)
        print(f"{cls.__name__}: test accuracy {test['accuracy']:.4f}, test loss {test['loss']:.4f} ({seconds:.1f} s)")
        results[cls.__name__] = test["accuracy"]
    return results


if __name__ == "__main__":
    main()
