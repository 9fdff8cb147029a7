"""Regenerate the README's pictures of the digits residual model: its layer graph and its training curves.

    python docs/make_pictures.py

Needs Graphviz's `dot` program (`apt-get install graphviz`), and `pip install ".[plot,examples]"` (matplotlib for the
curves, scikit-learn for the digits). Writes:

    docs/digits_residual.svg          nncompile examples/digits_residual.nn --diagram docs/digits_residual.svg
    docs/digits_residual_curves.png   nncompile.plot_history of fit() on the digits, early stopping on val_loss
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

from train_digits import digits_split

import nncompile
from nncompile import cli

MODEL = ROOT / "examples" / "digits_residual.nn"
DIAGRAM = ROOT / "docs" / "digits_residual.svg"
CURVES = ROOT / "docs" / "digits_residual_curves.png"


def main() -> None:
    code = cli.run([str(MODEL), "--diagram", str(DIAGRAM)])  # exactly as the command draws it
    if code:
        sys.exit(code)
    print(f"wrote {DIAGRAM.relative_to(ROOT)}")

    cls = nncompile.load(MODEL).DigitsResidual
    x_train, x_test, y_train, y_test = digits_split(cls.input_shape)
    model = cls(seed=0)
    history = model.fit(
        x_train, y_train, epochs=40, batch_size=16, seed=0, validation_split=0.1, patience=5, verbose=False
    )
    test = model.evaluate(x_test, y_test)
    title = f"DigitsResidual on the 8x8 digits: test accuracy {test['accuracy']:.3f}"
    nncompile.plot_history(history, CURVES, title=title)
    print(f"wrote {CURVES.relative_to(ROOT)} ({len(history['loss'])} epochs; {title})")


if __name__ == "__main__":
    main()
