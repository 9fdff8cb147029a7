"""Shared by Conv1D and the pools: the "valid" window rule over a channels-last signal [length, channels].

Window t covers positions t·stride … t·stride + k - 1; there are (length - k) // stride + 1 windows, and positions
after the last whole window are not used. Tap j of every window is the strided slice
x[:, j : j + span : stride] with span = stride·(windows - 1) + 1, which the templates loop over (k taps, never
positions or batch).
"""

from __future__ import annotations

from ..registry import ShapeError


def check_signal(layer: str, in_shape, k: int) -> int:
    """The signal length; raise ShapeError unless the input is [length, channels] with length ≥ k."""
    if len(in_shape) != 2:
        hint = f"; a one-channel signal of length {in_shape[0]} is [{in_shape[0]}, 1]" if len(in_shape) == 1 else ""
        raise ShapeError(f"{layer} expects a signal [length, channels], got {list(in_shape)}{hint}")
    length = in_shape[0]
    if k > length:
        raise ShapeError(f"{layer} window k={k} is longer than the signal (length {length})")
    return length


def window_count(length: int, k: int, stride: int) -> int:
    return (length - k) // stride + 1


def tap_slices(length: int, k: int, stride: int, windows: int) -> dict:
    """Template constants: the span of a tap and its slice text (formatted as ruff formats slices), and how the
    backward writes dx: windows that do not overlap (stride ≥ k) let each tap write its positions directly,
    and dx needs zeroing first only if taps add into it or some position lies in no window."""
    span = stride * (windows - 1) + 1
    step = f":{stride}" if stride > 1 else ""
    disjoint = stride >= k
    uncovered = stride > k or (windows - 1) * stride + k < length
    return {
        "k": k,
        "stride": stride,
        "span": span,
        "disjoint": disjoint,
        "zero_dx": not disjoint or uncovered,
        # Tap 0, written out before a loop over the remaining taps.
        "first_tap": f":{span}{step}",
        # Tap j inside `for j in range(...)`.
        "tap": f"j : j + {span}" + (f" : {stride}" if stride > 1 else ""),
    }
