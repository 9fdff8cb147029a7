"""Training curves: `plot_history(history, "curves.png")` draws what `fit()` returned, one panel per quantity.

matplotlib is an optional extra (`pip install "nncompile[plot]"`), imported only when a plot is made; the generated
modules never need it. Drawing uses matplotlib's Agg canvas directly (no pyplot), so it needs no display and leaves
the caller's pyplot backend and figures alone.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping

INSTALL_HINT = 'plot_history needs matplotlib: pip install "nncompile[plot]" (or pip install matplotlib)'
# The panel grid: at most this many panels side by side, each this many inches.
COLUMNS = 3
PANEL_SIZE = (4.2, 3.0)
DPI = 100


def panels(history: Mapping) -> list[tuple[str, list[str]]]:
    """(title, history keys) per panel, in the history's order: each quantity with its val_ counterpart, then the
    learning rate ("lr") last. A val_ key without its training counterpart gets a panel of its own."""
    keys = [str(k) for k in history]
    out = []
    for key in keys:
        if key == "lr" or (key.startswith("val_") and key[4:] in keys):
            continue
        out.append((key.removeprefix("val_") if key.startswith("val_") else key, [key]))
        if "val_" + key in keys:
            out[-1][1].append("val_" + key)
    if "lr" in keys:
        out.append(("learning rate", ["lr"]))
    return out


def _values(history: Mapping, key: str) -> list[float]:
    values = history[key]
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"plot_history: history[{key!r}] must be a list of per-epoch values, got {values!r}")
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"plot_history: history[{key!r}] must hold numbers, got {list(values)!r}") from None


def best_epoch_of(history: Mapping, best_epoch) -> int | None:
    """The epoch to mark (counted from 1), or None: see plot_history."""
    if best_epoch is None:
        return None
    if best_epoch == "auto":
        if "val_loss" not in history:
            return None
        losses = _values(history, "val_loss")
        finite = [(v, i) for i, v in enumerate(losses) if math.isfinite(v)]
        if not finite:
            return None
        best = min(finite)[1]  # the first of equal minima, as fit() keeps the first
        return best + 1 if best + 1 < len(losses) else None
    if isinstance(best_epoch, bool) or not isinstance(best_epoch, int) or best_epoch < 1:
        raise ValueError(f"plot_history: best_epoch must be 'auto', None or an epoch number >= 1, got {best_epoch!r}")
    return best_epoch


def plot_history(history, path=None, best_epoch="auto", title=None):
    """Draw the training curves of a `fit()` history; save them to `path` (format from its suffix: .png, .svg,
    .pdf, ...) when given. Returns the matplotlib Figure.

    One panel per quantity: "loss" with "val_loss", each metric with its val_ counterpart (e.g. "accuracy" and
    "val_accuracy", "digit_loss" and "val_digit_loss"), and the learning rate when the history has "lr" (on a
    logarithmic axis when it spans more than a factor of 10). Epochs are counted from 1, as fit() prints them.

    best_epoch marks one epoch with a vertical line in every panel:
      "auto" (the default): the epoch with the lowest val_loss, when that is not the last epoch. This is the epoch
        whose parameters fit(..., patience=n, restore_best=True) put back after stopping early (and, without
        patience, simply the best validation epoch so far).
      an int: that epoch (counted from 1), e.g. from fit()'s "restored the parameters of epoch N" note.
      None: no mark.

    The file is written whole or not at all (a temporary file beside it, then renamed).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    if not isinstance(history, Mapping):
        raise TypeError(f"plot_history: history must be a dict of per-epoch lists, as fit() returns; got {history!r}")
    layout = panels(history)
    if not layout:
        raise ValueError("plot_history: the history is empty")
    mark = best_epoch_of(history, best_epoch)
    columns = min(COLUMNS, len(layout))
    rows = -(-len(layout) // columns)
    figure = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (name, keys) in zip(axes, layout):
        for key in keys:
            values = _values(history, key)
            style = {"linestyle": "--"} if key.startswith("val_") and len(keys) > 1 else {}
            ax.plot(range(1, len(values) + 1), values, marker="." if len(values) <= 30 else None, label=key, **style)
            if key == "lr":
                positive = [v for v in values if v > 0]
                if positive and len(positive) == len(values) and max(positive) > 10 * min(positive):
                    ax.set_yscale("log")
        if mark is not None:
            ax.axvline(mark, color="0.4", linestyle=":", linewidth=1.2, label=f"best epoch ({mark})")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize="small")
    for ax in axes[len(layout) :]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    if path is not None:
        _save(figure, os.fspath(path))
    return figure


def _save(figure, path: str) -> None:
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    if not suffix:
        raise ValueError(f"plot_history: {path!r} has no suffix to tell the picture format (.png, .svg, .pdf)")
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".nncompile-plot-", suffix="." + suffix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            figure.savefig(handle, format=suffix)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


__all__ = ["plot_history"]
