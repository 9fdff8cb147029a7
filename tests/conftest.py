"""Shared test helpers: compile .nn text into a module, and central finite differences."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nncompile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


def ruff(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ruff (the executable on PATH, else the installed module) with args; its output captured as text."""
    exe = shutil.which("ruff")
    command = [exe] if exe else [sys.executable, "-m", "ruff"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, check=False)


def assert_generated_code_is_clean(files) -> None:
    """Generated modules pass `ruff check` with the default rules and are formatted as ruff formats them."""
    check = ruff("check", "--isolated", *files)
    assert check.returncode == 0, check.stdout + check.stderr
    formatted = ruff("format", "--isolated", "--line-length", "120", "--diff", *files)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def readme_blocks(heading: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block of the README section that starts at the heading line `heading`
    (e.g. "## Graphs"), up to the next "## " heading."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w*)\n(.*?)\n```", section, re.DOTALL)


def build(source: str, dtype: str = "float64", model: str | None = None, seed: int = 0):
    """Compile source text and instantiate its (only, or named) model class."""
    module = nncompile.load(source, dtype=dtype)
    if model is None:
        assert len(module.__all__) == 1, module.__all__
        model = module.__all__[0]
    return getattr(module, model)(seed=seed)


def manual_fit(net, x, y, epochs, batch_size, seed):
    """fit() as documented: train_step over batches of np.random.default_rng([seed, epoch]).permutation(n). Returns
    each epoch's mean loss and accuracy (the argmax of predict() on each batch before its step, as fit counts)."""
    losses, accuracies = [], []
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(len(x))
        total = hits = 0
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size]
            hits += np.count_nonzero(net.predict(x[rows]).argmax(axis=1) == y[rows])
            total += net.train_step(x[rows], y[rows]) * len(rows)
        losses.append(total / len(x))
        accuracies.append(hits / len(x))
    return losses, accuracies


def numeric_grad(f, array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() w.r.t. every element of `array`, perturbed in place."""
    grad = np.zeros_like(array)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to the larger of max |a|, max |b| (a scale-aware relative error)."""
    scale = max(np.abs(a).max(), np.abs(b).max(), 1e-12)
    return float(np.abs(a - b).max() / scale)


GRADIENT_TOLERANCE = 1e-6


def check_gradients(net, x, t, tolerance: float = GRADIENT_TOLERANCE) -> None:
    """backward() after loss(x, t) matches central differences for every parameter and for the input x."""
    net.loss(x, t)
    net.zero_grad()
    dx = net.backward()
    analytic = {k: g.copy() for k, g in net.grads.items()}
    objective = lambda: net.loss(x, t)
    for name, param in net.params.items():
        assert rel_error(analytic[name], numeric_grad(objective, param)) < tolerance, name
    assert rel_error(dx, numeric_grad(objective, x)) < tolerance, "input"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
