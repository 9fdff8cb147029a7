"""Golden files: the generated code for tests/golden/*.nn is pinned, lint-clean, formatted and deterministic."""

from __future__ import annotations

import ast
import difflib
import sys

import pytest
from conftest import assert_generated_code_is_clean, ruff
from regenerate_golden import GOLDEN, expected_code

CASES = sorted(GOLDEN.glob("*.nn"))
REGENERATE = "python tests/regenerate_golden.py"


def test_there_are_golden_cases():
    assert len(CASES) >= 2


@pytest.mark.parametrize("nn_file", CASES, ids=lambda p: p.stem)
def test_generated_code_matches_golden(nn_file):
    golden = nn_file.with_suffix(".py")
    assert golden.exists(), f"missing {golden.name}; run: {REGENERATE}"
    actual, expected = expected_code(nn_file), golden.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), "golden", "generated"))
        pytest.fail(f"generated code differs from {golden.name}; if intended, run: {REGENERATE}\n{diff}")


@pytest.mark.parametrize("nn_file", CASES, ids=lambda p: p.stem)
def test_generation_is_deterministic(nn_file):
    assert expected_code(nn_file) == expected_code(nn_file)


@pytest.mark.parametrize("nn_file", CASES, ids=lambda p: p.stem)
def test_generated_code_imports_only_numpy_and_the_standard_library(nn_file):
    tree = ast.parse(expected_code(nn_file))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert "numpy" in imported
    assert imported - {"numpy"} <= set(sys.stdlib_module_names), imported


@pytest.mark.parametrize("nn_file", CASES, ids=lambda p: p.stem)
def test_backward_blocks_carry_their_formulas(nn_file):
    code = expected_code(nn_file)
    assert code.count("# backward of ") >= 2
    if "Linear" in nn_file.read_text():
        assert "# dW = xᵀ · dy" in code and "# dx = dy · Wᵀ" in code


def test_golden_files_pass_ruff_check_with_default_rules():
    result = ruff("check", "--isolated", *map(str, GOLDEN.glob("*.py")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_golden_files_are_formatted():
    result = ruff("format", "--isolated", "--line-length", "120", "--diff", *map(str, GOLDEN.glob("*.py")))
    assert result.returncode == 0, result.stdout + result.stderr


EDGE_MODELS = {
    "no_bias": "model A { input [4] Linear(3, bias=false) }",
    "no_params": "model B { input [4, 2] Flatten }",
    "activation_only_with_loss": "model C { input [4] ReLU loss MSE }",
    "conv_without_bias_adam": "model D { input [8, 1] Conv1D(2, 3) loss MSE optimizer Adam }",
    "softmax_bce": "model E { input [4] Linear(2) Softmax loss BCE }",
    "pool_then_cross_entropy": "model F { input [6, 2] AvgPool1D(2) Flatten loss CrossEntropy }",
    # backward unpacks more saved values than fit on one line
    "many_saved_values": "model G { input [4] " + "Linear(4) ReLU " * 12 + "loss MSE }",
}


def test_unusual_models_generate_lint_clean_formatted_code(tmp_path):
    """Models without parameters, biases or losses leave no unused names or odd layouts behind."""
    import nncompile

    for name, source in EDGE_MODELS.items():
        (tmp_path / f"{name}.py").write_text(nncompile.compile_source(source))
    assert_generated_code_is_clean(sorted(map(str, tmp_path.glob("*.py"))))
