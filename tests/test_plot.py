"""nncompile.plot_history: training curves of a real fit() history, drawn to real files."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest
from conftest import build

import nncompile
from nncompile.plot import COLUMNS, DPI, PANEL_SIZE, best_epoch_of, panels

pytest.importorskip("matplotlib")

NET = """
model Net {
    input [4]
    Linear(16)
    ReLU
    Dropout(0.5)
    Linear(3)
    loss CrossEntropy
    optimizer Adam(lr=0.2)
}
"""


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def history():
    """A real early-stopped history: a tiny net overfits 3 noisy blobs with a too-large learning rate."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    x = rng.normal(size=(90, 4)) + 1.5 * np.eye(4)[y]
    model = build(NET)
    found = model.fit(x, y, epochs=40, batch_size=8, seed=0, validation_split=0.3, patience=3, verbose=False)
    assert 3 < len(found["loss"]) < 40, "the fixture should stop early"
    return found


def test_renders_a_real_history_to_png(history, tmp_path):
    target = tmp_path / "curves.png"
    figure = nncompile.plot_history(history, target)
    data = target.read_bytes()
    assert len(data) > 5000
    # Two panels (loss, accuracy) side by side, at the figure's size and resolution.
    assert png_size(data) == (round(2 * PANEL_SIZE[0] * DPI), round(PANEL_SIZE[1] * DPI))
    loss, accuracy = figure.axes
    assert loss.get_title() == "loss" and accuracy.get_title() == "accuracy"
    assert [line.get_label() for line in loss.get_lines()][:2] == ["loss", "val_loss"]
    # The best epoch is the one whose parameters early stopping restored: the lowest val_loss, patience from the end.
    best = int(np.argmin(history["val_loss"])) + 1
    assert best == len(history["loss"]) - 3
    marks = [line for line in loss.get_lines() if line.get_label().startswith("best epoch")]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [best, best]
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left


@pytest.mark.parametrize(("suffix", "signature"), [(".svg", b"<?xml"), (".pdf", b"%PDF-")])
def test_other_formats(history, tmp_path, suffix, signature):
    target = tmp_path / f"curves{suffix}"
    nncompile.plot_history(history, str(target), best_epoch=None, title="Net")
    assert target.read_bytes().startswith(signature)


def test_panels_pair_each_quantity_with_its_validation_and_put_lr_last():
    history = {
        "loss": [1, 0.5],
        "digit_loss": [0.8, 0.4],
        "digit_accuracy": [0.5, 0.7],
        "size_loss": [0.2, 0.1],
        "val_loss": [1.1, 0.6],
        "val_digit_loss": [0.9, 0.5],
        "val_digit_accuracy": [0.4, 0.6],
        "val_size_loss": [0.2, 0.2],
        "val_extra": [3, 4],
        "lr": [0.1, 0.01],
    }
    assert panels(history) == [
        ("loss", ["loss", "val_loss"]),
        ("digit_loss", ["digit_loss", "val_digit_loss"]),
        ("digit_accuracy", ["digit_accuracy", "val_digit_accuracy"]),
        ("size_loss", ["size_loss", "val_size_loss"]),
        ("extra", ["val_extra"]),
        ("learning rate", ["lr"]),
    ]


def test_learning_rate_panel_and_grid(tmp_path):
    history = {"loss": [1.0, 0.7, 0.5, 0.4], "accuracy": [0.2, 0.5, 0.6, 0.7], "lr": [1e-1, 1e-2, 1e-3, 1e-4]}
    history |= {"val_loss": [1.1, 0.8, 0.9, 1.0], "mae": [3, 2, 1, 1]}
    target = tmp_path / "curves.png"
    figure = nncompile.plot_history(history, target)
    visible = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["loss", "accuracy", "mae", "learning rate"]
    assert visible[-1].get_yscale() == "log"
    assert png_size(target.read_bytes()) == (round(COLUMNS * PANEL_SIZE[0] * DPI), round(2 * PANEL_SIZE[1] * DPI))


def test_best_epoch_choices():
    history = {"loss": [3, 2, 1, 0.5], "val_loss": [3, 1, 2, 2]}
    assert best_epoch_of(history, "auto") == 2
    assert best_epoch_of({"loss": [3, 2], "val_loss": [3, 2]}, "auto") is None  # still improving: nothing restored
    assert best_epoch_of({"loss": [3, 2]}, "auto") is None
    assert best_epoch_of({"val_loss": [np.nan, 2, 1, 1, 3]}, "auto") == 3  # the first of equal minima, NaN skipped
    assert best_epoch_of(history, 4) == 4 and best_epoch_of(history, None) is None
    figure = nncompile.plot_history(history, best_epoch=3)
    assert [list(line.get_xdata()) for ax in figure.axes for line in ax.get_lines() if "best" in line.get_label()] == [
        [3, 3]
    ]
    for bad in (0, -1, 1.5, True, "val_loss"):
        with pytest.raises(ValueError, match="best_epoch must be"):
            nncompile.plot_history(history, best_epoch=bad)


def test_bad_histories(tmp_path):
    with pytest.raises(ValueError, match="the history is empty"):
        nncompile.plot_history({})
    with pytest.raises(TypeError, match="dict of per-epoch lists"):
        nncompile.plot_history([1, 2])
    with pytest.raises(ValueError, match=r"history\['loss'\] must be a list"):
        nncompile.plot_history({"loss": 1.0})
    with pytest.raises(ValueError, match=r"history\['loss'\] must hold numbers"):
        nncompile.plot_history({"loss": ["a"]})
    with pytest.raises(ValueError, match="no suffix"):
        nncompile.plot_history({"loss": [1.0]}, tmp_path / "curves")
    assert list(tmp_path.iterdir()) == []


def test_missing_matplotlib_says_what_to_install(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "nncompile\[plot\]"'):
        nncompile.plot_history({"loss": [1.0]})


def test_importing_nncompile_does_not_import_matplotlib():
    import subprocess

    code = "import sys, nncompile; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
